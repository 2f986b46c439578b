//go:build linux

// Command swbench is a load generator for Switchboard, and for the
// socket.io setup it replaces (bench/socketio), so that both can be
// measured with the same scenarios (bench/compare.sh).
//
// It opens -clients WebSocket connections, waits until every one of them
// has been told the full count, publishes -emits messages over gRPC (or
// HTTP POST /emit for -target socketio) and checks that every client got
// every message exactly once and in order. It reports connect time,
// delivery latency percentiles, deliveries per second and, with -pid, the
// server's memory per connection and CPU per delivery. It exits non-zero
// on any lost, duplicated or reordered message.
//
//	go run ./cmd/swbench -clients 1000 -emits 200 -pid $(pgrep -n switchboard)
//	go run ./cmd/swbench -clients 10000 -emits 0 -hold 10s -pid $PID   # idle memory
//	go run ./cmd/swbench -target socketio -url http://127.0.0.1:3000 -clients 1000 -emits 200
//	go run ./cmd/swbench -ws ws://a:8080/ws,ws://b:8080/ws -grpc a:9090,b:9090 -pid 4711,4712   # a cluster's nodes
//
// With -attack MODE it loads a node as an attacker would instead, from one
// address and without a token (slow readers, idle connections, gRPC
// streams without a body, amplified metadata, big requests, wrong tokens,
// refused upgrades, frame floods, scrapes, rapid reset, big headers),
// while a bystander receives -rate emits a second, and reports the node's
// answers, its memory, goroutines and CPU before, during and after, the
// bystander's delays and how much the node logged:
//
//	go run ./cmd/swbench -attack slow-readers -payload 61440 -pid $PID -metrics http://127.0.0.1:6060/metrics
//
// It reads /proc and raises RLIMIT_NOFILE, so it is Linux only.
package main

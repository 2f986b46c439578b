// Package cluster tests a Switchboard cluster as it runs: the real
// nats-server binary (a three-server NATS cluster from
// deploy/cluster/nats.conf, the stream on all three, or one server where
// a scenario takes NATS away as a whole), three switchboard processes,
// and real nginx rendered from deploy/cluster/nginx.conf.template, the
// file compose uses, all on loopback, with clients that reconnect and
// resume the way the browser library does. It holds only tests and
// benchmarks.
//
//	go test -race ./test/cluster/                     # the scenarios, about a minute
//	go test -run '^$' -bench Eviction -benchtime=10x ./test/cluster/   # kill -9 ten times: the worst eviction
//
// The tests need nginx and nats-server (scripts/install-tools.sh installs
// it); without them they are skipped, except where tests must not skip
// (see internal/testenv), where a missing one is a failure.
package cluster

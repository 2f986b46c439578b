// Package hostile loads a real node process the way an attacker on the
// network would, one attack after another from one address (127.0.0.2),
// while a browser (headless Chromium running client.js, from 127.0.0.1)
// receives ten emits a second. For each attack it samples the node's
// memory, goroutines, descriptors and CPU before, during and after, and
// checks the node's answers, its bounds and the browser's delays, with
// margins wide enough for a shared two-core machine. It holds only tests.
//
//	go test ./test/hostile/                                        # ~2 min
//	SWITCHBOARD_BIN=/tmp/switchboard-old go test ./test/hostile/   # another build
//	go run ./cmd/swbench -attack slow-readers -payload 61440 ...   # one attack, at full scale
//
// The browser needs Chromium; without it the tests are skipped, except
// under CI (CI set), where a missing browser is a failure.
package hostile

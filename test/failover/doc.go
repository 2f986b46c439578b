// Package failover tests a Switchboard deployment as it runs: real nginx
// (rendered from deploy/nginx/nginx.conf.template, the file compose uses)
// in front of a primary node, a backup standby and the example web
// servers, all real processes on loopback, with clients that reconnect the
// way the browser library does. It holds only tests and benchmarks.
//
//	go test -race ./test/failover/                      # scenarios, ~1 min
//	SWITCHBOARD_FAILOVER_N=1000,5000 go test -run '^$' -bench Failover -benchtime=1x ./test/failover/
//
// The tests need nginx; without it they are skipped, except under CI
// (CI set), where a missing nginx is a failure.
package failover

package failover

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
)

// BenchmarkFailover measures a crash of the primary with N clients
// connected through nginx: seconds from kill -9 until the standby counts
// all N, seconds from the primary's restart until the standby has handed
// every client back, and the clients' reconnect times. N comes from
// SWITCHBOARD_FAILOVER_N (a comma list, default 200, so that CI's
// -benchtime=1x run stays quick):
//
//	SWITCHBOARD_FAILOVER_N=1000,5000 go test -run '^$' -bench Failover -benchtime=1x ./test/failover/
func BenchmarkFailover(b *testing.B) {
	spec := os.Getenv("SWITCHBOARD_FAILOVER_N")
	if spec == "" {
		spec = "200"
	}
	for _, s := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("SWITCHBOARD_FAILOVER_N=%q: want a comma list of positive numbers", spec)
		}
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchFailover(b, n) })
	}
}

func benchFailover(b *testing.B, n int) {
	c := startCluster(b, clusterOptions{noWebServers: true})
	f := browsersim.Start(b, n, c.wsURL(), c.origin())
	timeout := f.Timeout
	waitCount(b, "primary at the start", c.counter(c.primaryGRPC), int64(n), timeout)
	standby := c.counter(c.standbyGRPC)

	var kills, backs, p50s, p99s, backP99s time.Duration
	storms, rounds := 0, 0
	for b.Loop() {
		f.ResetStats()
		killed := c.killPrimary()
		waitCount(b, "standby after the kill", standby, int64(n), timeout)
		kill := time.Since(killed)
		all := f.WaitCounts(b, "after the kill", int64(n)) + kill
		d, joined := f.ReconnectStats()
		p50, p99 := browsersim.Percentile(d, 50), browsersim.Percentile(d, 99)
		storm := browsersim.MaxInWindow(joined, 100*time.Millisecond)
		b.Logf("N=%d: kill -9 -> standby counts all: %v, every client shows %d: %v; reconnects %d (%d dials), p50 %v, p99 %v, max %v; at most %d in any 100 ms; %d count frames received",
			n, kill.Round(time.Millisecond), n, all.Round(time.Millisecond), len(d), f.Dials(),
			p50.Round(time.Millisecond), p99.Round(time.Millisecond), browsersim.Percentile(d, 100).Round(time.Millisecond), storm, f.CountFrames())

		f.ResetStats()
		restarted := time.Now()
		c.startPrimary()
		c.waitHTTP(c.primaryHTTP+"/readyz", "restarted primary ready")
		primary := c.counter(c.primaryGRPC)
		waitCount(b, "primary after the hand-back", primary, int64(n), timeout+handBackWindow)
		waitMetric(b, "standby after the hand-back", c.standbyHTTP, 0, timeout)
		back := time.Since(restarted)
		f.WaitCounts(b, "after the hand-back", int64(n))
		hd, hjoined := f.ReconnectStats()
		b.Logf("N=%d: restart -> primary counts all, standby none: %v; hand-back reconnects %d, p50 %v, p99 %v; at most %d in any 100 ms; %d count frames received",
			n, back.Round(time.Millisecond), len(hd), browsersim.Percentile(hd, 50).Round(time.Millisecond),
			browsersim.Percentile(hd, 99).Round(time.Millisecond), browsersim.MaxInWindow(hjoined, 100*time.Millisecond), f.CountFrames())
		backs += back
		backP99s += browsersim.Percentile(hd, 99)
		kills += kill
		p50s += p50
		p99s += p99
		storms += storm
		rounds++
	}
	r := time.Duration(rounds)
	b.ReportMetric((kills / r).Seconds(), "s-kill-to-converged")
	b.ReportMetric(float64((p50s / r).Milliseconds()), "ms-reconnect-p50")
	b.ReportMetric(float64((p99s / r).Milliseconds()), "ms-reconnect-p99")
	b.ReportMetric(float64(storms/rounds), "max-reconnects/100ms")
	b.ReportMetric((backs / r).Seconds(), "s-restart-to-back")
	b.ReportMetric(float64((backP99s / r).Milliseconds()), "ms-handback-reconnect-p99")
}

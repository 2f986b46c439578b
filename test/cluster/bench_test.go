package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
)

// BenchmarkEviction kills a node holding browsers with kill -9, once per
// iteration, and measures how long until the other nodes' counts, and
// their browsers' count frames, no longer include them; the node is
// restarted between iterations. It reports the worst and the mean:
//
//	go test -run '^$' -bench Eviction -benchtime=10x ./test/cluster/
//
// The killed node's browsers connect to it directly, and keep dialing it
// while it is down, so that they are counted nowhere else: what is
// measured is the eviction alone, not the reconnects.
func BenchmarkEviction(b *testing.B) {
	const onVictim, onOthers = 100, 10
	d := startDeployment(b, options{})
	victim, others := d.nodes[2], d.nodes[:2]
	f := browsersim.New(b, onVictim+2*onOthers)
	var watching []*browsersim.Client
	for range onVictim {
		f.Add(browsersim.NewClient("ws://"+victim.http+"/ws", "http://"+victim.http))
	}
	for _, o := range others {
		for range onOthers {
			c := browsersim.NewClient("ws://"+o.http+"/ws", "http://"+o.http)
			f.Add(c)
			watching = append(watching, c)
		}
	}
	const all, rest = onVictim + 2*onOthers, 2 * onOthers
	var counts, frames []time.Duration
	for b.Loop() {
		f.WaitConnected(b, "before the kill")
		d.waitCounts(b, "before the kill", all, f.Timeout)
		f.WaitCounts(b, "before the kill", all)
		killed := victim.kill()
		for {
			if c0, c1 := others[0].count(), others[1].count(); c0 == rest && c1 == rest {
				break
			}
			if time.Since(killed) > f.Timeout {
				b.Fatalf("the others count %v %v after the kill; want %d", others[0].count(), others[1].count(), rest)
			}
			time.Sleep(2 * time.Millisecond)
		}
		counts = append(counts, time.Since(killed))
		f.WaitCountsOf(b, "after the kill", watching, rest)
		frames = append(frames, time.Since(killed))
		victim.start()
		victim.waitReady("after its restart")
	}
	mean := func(ds []time.Duration) time.Duration {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum / time.Duration(len(ds))
	}
	b.ReportMetric(slices.Max(counts).Seconds(), "s-evicted-worst")
	b.ReportMetric(mean(counts).Seconds(), "s-evicted-mean")
	b.ReportMetric(slices.Max(frames).Seconds(), "s-browsers-worst")
	rounded := func(ds []time.Duration) []time.Duration {
		out := make([]time.Duration, len(ds))
		for i, d := range ds {
			out[i] = d.Round(time.Millisecond)
		}
		return out
	}
	b.Logf("%d kills of a node holding %d browsers: evicted from the others' counts after %v at worst (mean %v); their browsers shown it after %v at worst (mean %v); each kill: %v",
		len(counts), onVictim, slices.Max(counts).Round(time.Millisecond), mean(counts).Round(time.Millisecond),
		slices.Max(frames).Round(time.Millisecond), mean(frames).Round(time.Millisecond), rounded(counts))
}

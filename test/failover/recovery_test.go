package failover

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// recoveryFleet is how many clients TestNothingLostAcrossFailOver runs;
// SWITCHBOARD_RECOVERY_N overrides it.
func recoveryFleet() int {
	if n, err := strconv.Atoi(os.Getenv("SWITCHBOARD_RECOVERY_N")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// TestNothingLostAcrossFailOver runs the pair through a kill -9 of the
// primary and its return while a web server emits at a steady rate through
// nginx, retrying as pkg/client does, and 1,000 clients resume as
// client.js does: every emit acknowledged to the web server reaches every
// client exactly once, in the log's order; every resume recovers; and
// during the hand-back the count asked through nginx stays that of
// everyone.
func TestNothingLostAcrossFailOver(t *testing.T) {
	n := recoveryFleet()
	// Count frames at most every 500 ms: the fleet reads every frame
	// under the race detector, on the cores the nodes use. A hand-back
	// over 6 s moves about one browser every 6 ms, slowly enough for a
	// count's sample to be compared with what both nodes hold.
	const spread = 6 * time.Second
	c := startCluster(t, clusterOptions{nodeEnv: []string{"SWITCHBOARD_COUNT_INTERVAL=500ms", "SWITCHBOARD_HAND_BACK_SPREAD=" + spread.String()}})
	f := browsersim.Start(t, n, c.wsURL(), c.origin())
	waitCount(t, "primary before the kill", c.counter(c.primaryGRPC), int64(n), f.Timeout)
	f.WaitCounts(t, "before the kill", int64(n))

	stopPosting := c.startPosting("steady", 200*time.Millisecond)
	time.Sleep(time.Second)
	killed := c.killPrimary()
	waitCount(t, "standby after the kill", c.counter(c.standbyGRPC), int64(n), f.Timeout)
	t.Logf("kill -9 -> standby counts all %d: %v", n, time.Since(killed).Round(time.Millisecond))
	time.Sleep(time.Second)

	// The primary returns; sample the count web servers see, through
	// nginx, until the hand-back is over.
	viaNginx, err := client.Dial(c.nginxGRPC, client.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer viaNginx.Close()
	f.ResetStats()
	c.startPrimary()
	c.waitHTTP(c.primaryHTTP+"/readyz", "restarted primary ready")
	// Each sample is bracketed by the browsers both nodes hold, read just
	// before and just after it: those connected right then. A browser in
	// flight between the nodes is connected to neither.
	type sample struct{ got, lo, hi int64 }
	var samples []sample
	// Generous: a fleet starved of CPU (the race detector, other tests)
	// reads its frames late, and takes its 1012s late.
	handBack := 2*f.Timeout + spread
	deadline := time.Now().Add(handBack)
	for {
		before := metricCount(c.primaryHTTP) + metricCount(c.standbyHTTP)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, err := viaNginx.Count(ctx, "")
		cancel()
		p, s := metricCount(c.primaryHTTP), metricCount(c.standbyHTTP)
		if err == nil {
			samples = append(samples, sample{got, min(before, p+s), max(before, p+s)})
		}
		if p == int64(n) && s == 0 {
			break
		}
		if time.Now().After(deadline) {
			dial, silent := f.WhyDisconnected()
			t.Fatalf("hand-back not over after %v: primary %d, standby %d; clients not connected, by their last dial error: %v; connected ones by seconds of silence: %v",
				handBack, p, s, dial, silent)
		}
		time.Sleep(20 * time.Millisecond)
	}
	logReconnects(t, "hand-back", f)
	time.Sleep(time.Second)
	posts := stopPosting()

	// Every acknowledged emit, once, at every client.
	var acked []*post
	failed := 0
	for _, p := range posts {
		if p.err == nil && p.res.status == http.StatusOK {
			acked = append(acked, p)
		} else {
			failed++
		}
	}
	if len(acked) == 0 {
		t.Fatal("no POST was acknowledged")
	}
	last := acked[len(acked)-1]
	f.WaitFrames(t, "the last acknowledged emit", last.res.ID)
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show up
	missing, twice := 0, 0
	for _, p := range acked {
		for _, got := range f.Frames(p.res.ID) {
			switch {
			case got == 0:
				missing++
			case got > 1:
				twice++
			}
		}
	}
	tot := f.Totals()
	outOfOrder, resumes, lost := tot.OutOfOrder, tot.Resumes, tot.Lost
	// How far each sample is from the browsers connected, and from
	// everyone (those in flight included).
	offTruth, lo, hi := int64(0), int64(n), int64(n)
	for _, s := range samples {
		offTruth = max(offTruth, s.lo-s.got, s.got-s.hi)
		lo, hi = min(lo, s.got), max(hi, s.got)
	}
	t.Logf("%d POSTs, %d acknowledged, %d failed; %d clients resumed %d times, %d not recovered; count through nginx during the hand-back: %d samples from %d to %d (of %d), at most %d from the browsers both nodes held",
		len(posts), len(acked), failed, n, resumes, lost, len(samples), lo, hi, n, offTruth)
	if missing > 0 || twice > 0 {
		t.Errorf("acknowledged emits: %d (emit, client) pairs missing, %d delivered more than once; want none", missing, twice)
	}
	if outOfOrder > 0 {
		t.Errorf("%d messages arrived out of the log's order; want none", outOfOrder)
	}
	if lost > 0 {
		t.Errorf("%d of %d resumes did not recover; want every one to", lost, resumes)
	}
	if resumes < 2*n {
		t.Errorf("%d resumes; want at least %d (every client moved twice)", resumes, 2*n)
	}
	// The primary adds the standby's browsers to its own, a few
	// milliseconds late, while browsers move (and a sample takes a few
	// milliseconds): a count that left the standby's out would be off by
	// hundreds.
	if limit := int64(max(5, n/20)); offTruth > limit {
		t.Errorf("count through nginx during the hand-back: up to %d from the browsers both nodes held; want at most %d", offTruth, limit)
	}
	if failed > len(posts)/4 {
		t.Errorf("%d of %d POSTs failed; want most acknowledged (the web server retries through the fail-over)", failed, len(posts))
	}
}

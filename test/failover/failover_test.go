package failover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
)

// fleetSize is N in the scenarios: enough to see a storm, small enough
// for -race on two cores.
const fleetSize = 50

// handBackWindow is how long a standby takes to hand its browsers back
// (it spreads the 1012 closes over about 3 s).
const handBackWindow = 3 * time.Second

// emitted is the web server's answer to POST /api/messages.
type emitted struct {
	status     int
	ID         string `json:"id"`
	Recipients int64  `json:"recipients"`
	Error      string `json:"error"`
}

// postMessage posts text through nginx to a web server, which emits it
// through nginx to whichever node is up.
func (c *cluster) postMessage(text string) (emitted, error) {
	b, _ := json.Marshal(map[string]string{"text": text})
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Post("http://"+c.nginxHTTP+"/api/messages", "application/json", bytes.NewReader(b))
	if err != nil {
		return emitted{}, err
	}
	defer resp.Body.Close()
	var e emitted
	err = json.NewDecoder(resp.Body).Decode(&e)
	e.status = resp.StatusCode
	return e, err
}

// mustPost posts text and fails unless it was emitted to want browsers.
func (c *cluster) mustPost(t *testing.T, text string, want int64) emitted {
	t.Helper()
	e, err := c.postMessage(text)
	if err != nil || e.status != http.StatusOK {
		t.Fatalf("POST /api/messages %q: got %d %+v, %v; want 200", text, e.status, e, err)
	}
	if e.Recipients != want {
		t.Fatalf("POST /api/messages %q: got recipients %d; want %d", text, e.Recipients, want)
	}
	return e
}

// assertExactlyOnce checks that every client got exactly one frame of id.
func assertExactlyOnce(t *testing.T, f *browsersim.Fleet, what, id string) {
	t.Helper()
	took := f.WaitFrames(t, what, id)
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show up
	for i, n := range f.Frames(id) {
		if n != 1 {
			t.Errorf("%s: client %d got message %s %d times; want once", what, i, id, n)
		}
	}
	t.Logf("%s: message reached all %d clients once, the last %v after the POST returned", what, len(f.Clients), took.Round(time.Millisecond))
}

// logReconnects logs and returns the reconnect figures since the last
// reset.
func logReconnects(t testing.TB, what string, f *browsersim.Fleet) (p50, p99 time.Duration, storm int) {
	d, joined := f.ReconnectStats()
	storm = browsersim.MaxInWindow(joined, 100*time.Millisecond)
	p50, p99 = browsersim.Percentile(d, 50), browsersim.Percentile(d, 99)
	t.Logf("%s: %d reconnects (%d dials), p50 %v, p99 %v, max %v; at most %d completed in any 100 ms; close codes %v (-1: no close frame); %d count frames received",
		what, len(d), f.Dials(), p50.Round(time.Millisecond), p99.Round(time.Millisecond),
		browsersim.Percentile(d, 100).Round(time.Millisecond), storm, f.CloseCodes(), f.CountFrames())
	return p50, p99, storm
}

// post is one POST /api/messages made while nodes change.
type post struct {
	text       string
	started    time.Time
	took       time.Duration
	standbyHad int64 // browsers on the standby when the POST started
	res        emitted
	err        error
}

// startPosting posts a new text every interval until the returned
// function is called; that function waits for the POSTs in flight and
// returns them all.
func (c *cluster) startPosting(prefix string, interval time.Duration) (stop func() []*post) {
	var (
		posts   []*post
		done    = make(chan struct{})
		stopped = make(chan struct{})
	)
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for i := 0; ; i++ {
			p := &post{text: fmt.Sprintf("%s %d", prefix, i), started: time.Now(), standbyHad: metricCount(c.standbyHTTP)}
			posts = append(posts, p)
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				p.res, p.err = c.postMessage(p.text)
				p.took = time.Since(p.started)
			}()
			select {
			case <-stopped:
				return
			case <-tick.C:
			}
		}
	}()
	return func() []*post {
		close(stopped)
		<-done
		return posts
	}
}

// TestKillPrimary: a crashed primary (SIGKILL) loses its browsers, which
// reconnect through nginx to the standby; the standby then counts
// everyone, and emits through a web server, during the switch and after
// it, reach every client once.
func TestKillPrimary(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	primary, standby := c.counter(c.primaryGRPC), c.counter(c.standbyGRPC)
	f := browsersim.Start(t, fleetSize, c.wsURL(), c.origin())
	waitCount(t, "primary before the kill", primary, fleetSize, waitTimeout)
	if n := metricCount(c.standbyHTTP); n != 0 {
		t.Fatalf("standby holds %d browsers while the primary is up; want 0: nginx must not balance", n)
	}
	f.WaitCounts(t, "before the kill", fleetSize)
	before := c.mustPost(t, "before the kill", fleetSize)
	assertExactlyOnce(t, f, "emit before the kill", before.ID)

	f.ResetStats()
	// Emit all through the switch: a POST every 20 ms from just before
	// the kill until the standby counts everyone, each with its own text.
	stopPosting := c.startPosting("during the switch", 20*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	killed := c.killPrimary() // returns once the process is gone
	gone := time.Now()
	waitCount(t, "standby after the kill", standby, fleetSize, waitTimeout)
	converged := time.Since(killed)
	posts := stopPosting()
	t.Logf("kill -9 -> standby counts all %d: %v", fleetSize, converged.Round(time.Millisecond))
	allShow := f.WaitCounts(t, "after the kill", fleetSize)
	t.Logf("kill -9 -> every client shows count %d: %v", fleetSize, (converged + allShow).Round(time.Millisecond))
	logReconnects(t, "after kill -9", f)
	d, _ := f.ReconnectStats()
	if len(d) < fleetSize {
		t.Errorf("got %d reconnects; want at least %d (every client lost its node)", len(d), fleetSize)
	}

	// The emits during the switch. One the standby accepted (any POST
	// that started after the primary was gone) reaches at least every
	// browser it was queued to; one the primary accepted may die with it
	// (SIGKILL loses queued frames). None reaches a browser twice under
	// two ids: a retry carries the same idempotency key, which is the id.
	time.Sleep(300 * time.Millisecond)
	var ok, refused, afterDeath, emittedTo, rawDups int
	for _, p := range posts {
		switch {
		case p.err != nil:
			t.Errorf("POST %q: %v", p.text, p.err)
		case p.res.status == http.StatusOK:
			ok++
			got, twice := 0, 0
			for _, n := range f.Frames(p.res.ID) {
				if n > 0 {
					got++
				}
				if n > 1 {
					twice++
				}
			}
			rawDups += twice
			if p.started.After(gone) {
				// Only the standby saw it: not even a repeated id.
				if twice > 0 {
					t.Errorf("%q: %d clients got message %s more than once", p.text, twice, p.res.ID)
				}
				afterDeath++
				emittedTo += got
				if int64(got) < p.res.Recipients {
					t.Errorf("%q (standby held %d when posted): reached %d clients; want at least its %d recipients", p.text, p.standbyHad, got, p.res.Recipients)
				}
			}
		case p.res.status == http.StatusServiceUnavailable:
			// Allowed: the caller learns that nothing was emitted.
			refused++
		default:
			t.Errorf("POST %q: got %d %+v; want 200 or 503", p.text, p.res.status, p.res)
		}
		for i, n := range f.TextCopies(p.text) {
			if n > 1 {
				t.Errorf("client %d got %q under %d ids; want one", i, p.text, n)
			}
		}
	}
	t.Logf("emits during the switch: %d POSTs, %d emitted (%d after the kill, %d deliveries), %d refused with 503; %d repeated ids (a retry on the standby of an emit the primary also delivered; the browser library drops them)",
		len(posts), ok, afterDeath, emittedTo, refused, rawDups)
	after := c.mustPost(t, "after the switch", fleetSize)
	assertExactlyOnce(t, f, "emit after the switch", after.ID)

	// What the image's HEALTHCHECK runs.
	if out, err := c.healthcheck(c.primaryHTTP); err == nil {
		t.Errorf("switchboard healthcheck against the killed primary succeeded (%s); want a failure", out)
	}
	if out, err := c.healthcheck(c.standbyHTTP); err != nil {
		t.Errorf("switchboard healthcheck against the serving standby: %v\n%s", err, out)
	}
}

// TestRestartPrimary: after a crash and a restart on the same ports, new
// browsers go to the primary at once (max_fails=0), and the standby hands
// the others back: one node at a time counts everyone.
func TestRestartPrimary(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	standby := c.counter(c.standbyGRPC)
	f := browsersim.Start(t, fleetSize, c.wsURL(), c.origin())
	waitCount(t, "primary before the kill", c.counter(c.primaryGRPC), fleetSize, waitTimeout)
	c.killPrimary()
	waitCount(t, "standby after the kill", standby, fleetSize, waitTimeout)
	f.WaitCounts(t, "after the kill", fleetSize)
	f.ResetStats()

	// Sample both counts every 100 ms from the restart on.
	restarted := time.Now()
	c.startPrimary()
	c.waitHTTP(c.primaryHTTP+"/readyz", "restarted primary ready")
	primary := c.counter(c.primaryGRPC) // a fresh connection: no redial backoff
	type sample struct{ p, s int64 }
	var (
		mu      sync.Mutex
		samples []sample
		stop    = make(chan struct{})
		sampled = make(chan struct{})
	)
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			s := sample{metricCount(c.primaryHTTP), metricCount(c.standbyHTTP)}
			mu.Lock()
			samples = append(samples, s)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	stopSampling := func() []sample {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-sampled
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(samples)
	}
	t.Cleanup(func() { stopSampling() })

	waitCount(t, "primary after the hand-back", primary, fleetSize, waitTimeout+handBackWindow)
	waitMetric(t, "standby after the hand-back", c.standbyHTTP, 0, 5*time.Second)
	back := time.Since(restarted)
	f.WaitCounts(t, "after the hand-back", fleetSize)
	t.Logf("restart -> primary counts all %d, standby 0: %v", fleetSize, back.Round(time.Millisecond))
	time.Sleep(time.Second) // no one bounces back to the standby
	got := stopSampling()
	both, bothMax, run := 0, 0, 0
	for _, s := range got {
		if s.p > 0 && s.s > 0 {
			both++
			run++
			bothMax = max(bothMax, run)
		} else {
			run = 0
		}
	}
	last := got[len(got)-1]
	t.Logf("overlap: both nodes counted browsers in %d of %d samples (100 ms apart): %v in all, longest %v",
		both, len(got), time.Duration(both)*100*time.Millisecond, time.Duration(bothMax)*100*time.Millisecond)
	_, _, storm := logReconnects(t, "hand-back", f)
	if last.p != fleetSize || last.s != 0 {
		t.Errorf("a second after the hand-back: primary %d, standby %d; want %d and 0", last.p, last.s, fleetSize)
	}
	if limit := handBackWindow + 4*time.Second; time.Duration(both)*100*time.Millisecond > limit {
		t.Errorf("both nodes counted browsers for %v; want at most %v (hand-back window + slack)", time.Duration(both)*100*time.Millisecond, limit)
	}
	if storm > fleetSize/2 {
		t.Errorf("%d of %d clients came back within one 100 ms window; want the hand-back spread out", storm, fleetSize)
	}
	e := c.mustPost(t, "after the hand-back", fleetSize)
	assertExactlyOnce(t, f, "emit after the hand-back", e.ID)

	// compose marks a passive standby healthy (alive), and --ready tells
	// that it takes no browsers.
	if out, err := c.healthcheck(c.standbyHTTP); err != nil {
		t.Errorf("switchboard healthcheck against the passive standby: %v\n%s; want success (it is alive)", err, out)
	}
	if out, err := c.healthcheck(c.standbyHTTP, "--ready"); err == nil {
		t.Errorf("switchboard healthcheck --ready against the passive standby succeeded (%s); want a failure", out)
	}
}

// TestTerminatePrimary: planned maintenance. SIGTERM drains the primary
// (closes spread over its drain window) and its browsers move to the
// standby without a reconnect storm.
func TestTerminatePrimary(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	standby := c.counter(c.standbyGRPC)
	f := browsersim.Start(t, fleetSize, c.wsURL(), c.origin())
	waitCount(t, "primary before SIGTERM", c.counter(c.primaryGRPC), fleetSize, waitTimeout)
	f.WaitCounts(t, "before SIGTERM", fleetSize)
	f.ResetStats()

	// Web servers keep emitting through the maintenance.
	stopPosting := c.startPosting("during the drain", 50*time.Millisecond)
	termed := time.Now()
	c.primary.Signal(t, syscall.SIGTERM)
	moved := waitCount(t, "standby after SIGTERM", standby, fleetSize, waitTimeout)
	t.Logf("SIGTERM -> standby counts all %d: %v", fleetSize, moved.Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond)
	posts := stopPosting()
	select {
	case <-c.primary.Done():
		if err := c.primary.Err(); err != nil {
			t.Errorf("primary after SIGTERM: %v; want exit status 0", err)
		}
		t.Logf("SIGTERM -> primary exited: %v", time.Since(termed).Round(time.Millisecond))
	case <-time.After(12 * time.Second):
		t.Fatal("primary still running 12 s after SIGTERM; want an exit within 10 s")
	}
	f.WaitCounts(t, "after SIGTERM", fleetSize)
	_, _, storm := logReconnects(t, "SIGTERM", f)
	_, joined := f.ReconnectStats()
	if len(joined) < fleetSize {
		t.Errorf("got %d reconnects; want %d", len(joined), fleetSize)
	}
	if len(joined) > 0 {
		t.Logf("SIGTERM: reconnects spread over %v", joined[len(joined)-1].Sub(joined[0]).Round(time.Millisecond))
	}
	if storm > fleetSize/2 {
		t.Errorf("%d of %d clients reconnected within one 100 ms window; want the drain spread out", storm, fleetSize)
	}
	codes := f.CloseCodes()
	if codes[1001]+codes[1012] < fleetSize {
		t.Errorf("close codes %v; want every client closed with 1001 or 1012", codes)
	}
	e := c.mustPost(t, "after SIGTERM", fleetSize)
	assertExactlyOnce(t, f, "emit after SIGTERM", e.ID)

	// A planned restart refuses no emit: a draining node answers
	// UNAVAILABLE, which the web server's client retries (same key)
	// until nginx reaches the standby.
	var ok, refused int
	var slowest time.Duration
	for _, p := range posts {
		slowest = max(slowest, p.took)
		switch {
		case p.err != nil:
			t.Errorf("POST %q: %v", p.text, p.err)
		case p.res.status == http.StatusOK:
			ok++
			// Whichever node took it, it reaches the browsers it was
			// queued to: a draining node writes what it queued before
			// its close frame.
			got := 0
			for _, n := range f.Frames(p.res.ID) {
				if n > 0 {
					got++
				}
			}
			if int64(got) < p.res.Recipients {
				t.Errorf("%q: reached %d clients; want at least its %d recipients", p.text, got, p.res.Recipients)
			}
		case p.res.status == http.StatusServiceUnavailable:
			refused++
		default:
			t.Errorf("POST %q: got %d %+v; want 200", p.text, p.res.status, p.res)
		}
		for i, n := range f.TextCopies(p.text) {
			if n > 1 {
				t.Errorf("client %d got %q under %d ids; want one", i, p.text, n)
			}
		}
	}
	t.Logf("emits during the drain: %d POSTs, %d emitted, %d refused with 503; slowest POST %v",
		len(posts), ok, refused, slowest.Round(time.Millisecond))
	if refused > 0 {
		t.Errorf("%d of %d emits during a planned drain were refused; want none (pkg/client retries UNAVAILABLE)", refused, len(posts))
	}
}

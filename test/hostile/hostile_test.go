package hostile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rt/switchboard/internal/attack"
	"github.com/switchboard-rt/switchboard/internal/browsertest"
	"github.com/switchboard-rt/switchboard/internal/freeport"
)

const (
	// token is the node's API token; the attacks never send it.
	token = "hostile-suite-token"
	// attacker and bystander are the two addresses.
	attacker  = "127.0.0.2"
	bystander = "127.0.0.1"
	// fileLimit is the node's open-file limit, small enough that
	// connections which never upgrade could take every descriptor.
	fileLimit = 4096
	// maxDelay is the longest the browser may wait for an emit during an
	// attack: generous, since the machine is shared, yet far below the
	// seconds an unbounded attack costs.
	maxDelay = 2 * time.Second
	// waitTimeout bounds waits for what should happen soon.
	waitTimeout = 20 * time.Second
)

func TestMain(m *testing.M) {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildDir  string
	built     string
	buildErr  error
)

// binary returns the node under test: $SWITCHBOARD_BIN, or
// ./cmd/switchboard built once per run.
func binary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("SWITCHBOARD_BIN"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "switchboard-hostile-"); buildErr != nil {
			return
		}
		built = filepath.Join(buildDir, "switchboard")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", built, "./cmd/switchboard")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/switchboard: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// node is the node process under attack.
type node struct {
	cmd                   *exec.Cmd
	http, grpc, admin     string
	logPath               string
	target, bystanderView attack.Target
}

// startNode runs the node with fileLimit open files, logging to a file,
// and waits until it is ready.
func startNode(t *testing.T, env ...string) *node {
	t.Helper()
	n := &node{http: freeport.Addr(t), grpc: freeport.Addr(t), admin: freeport.Addr(t), logPath: filepath.Join(t.TempDir(), "node.log")}
	log, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	n.cmd = exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0"`, fileLimit), binary(t))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			n.cmd.Env = append(n.cmd.Env, kv)
		}
	}
	n.cmd.Env = append(n.cmd.Env,
		"SWITCHBOARD_HTTP_ADDR="+n.http,
		"SWITCHBOARD_GRPC_ADDR="+n.grpc,
		"SWITCHBOARD_ADMIN_ADDR="+n.admin,
		"SWITCHBOARD_API_TOKEN="+token,
		"SWITCHBOARD_ALLOWED_ORIGINS=127.0.0.1:*",
	)
	n.cmd.Env = append(n.cmd.Env, env...)
	n.cmd.Stdout, n.cmd.Stderr = log, log
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("failed to start the node: %v", err)
	}
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			n.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(n.logPath)
			t.Logf("--- the node's log (last 8 KiB):\n%s", b[max(0, len(b)-8<<10):])
		}
	})
	n.target = attack.Target{HTTP: n.http, GRPC: n.grpc, From: attacker}
	n.bystanderView = attack.Target{HTTP: n.http, GRPC: n.grpc, From: bystander}
	deadline := time.Now().Add(waitTimeout)
	for {
		resp, err := http.Get("http://" + n.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready after %v: %v", waitTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *node) logSize() int64 {
	fi, err := os.Stat(n.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// log returns what the node logged from offset on.
func (n *node) log(from int64) string {
	b, _ := os.ReadFile(n.logPath)
	return string(b[min(from, int64(len(b))):])
}

// page loads client.js from the node and records when each probe message
// arrives.
const page = `<!doctype html><meta charset="utf-8"><title>bystander</title>
<script src="http://%s/client.js"></script>
<script>
window.got = [];
window.sb = Switchboard.connect(["ws://%s/ws"]);
sb.on("Probe", data => got.push([data.seq, Date.now()]));
</script>`

// browser is the bystander: a Chromium tab whose client.js receives the
// publisher's messages.
type browser struct {
	tab context.Context
}

func openBrowser(t *testing.T, n *node) *browser {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, page, n.http, n.http)
	}))
	t.Cleanup(srv.Close)
	tab, _ := browsertest.Tab(t, browsertest.Browser(t), srv.URL)
	b := &browser{tab: tab}
	ctx, cancel := context.WithTimeout(tab, waitTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`sb.state === "open"`, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		t.Fatalf("the bystander page did not connect: %v", err)
	}
	return b
}

// receipts returns the messages the page received since the last call.
func (b *browser) receipts(t *testing.T) []attack.Receipt {
	t.Helper()
	s, err := chromedp.Run(b.tab, chromedp.Evaluate[string](`JSON.stringify(got.splice(0))`))
	if err != nil {
		t.Fatalf("reading the page's receipts: %v", err)
	}
	var raw [][2]int64
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		t.Fatal(err)
	}
	out := make([]attack.Receipt, len(raw))
	for i, r := range raw {
		out[i] = attack.Receipt{Seq: r[0], At: time.UnixMilli(r[1])}
	}
	return out
}

func (b *browser) state(t *testing.T) string {
	s, _ := chromedp.Run(b.tab, chromedp.Evaluate[string](`sb.state`))
	return s
}

// outcome is what one attack did, as its checks see it.
type outcome struct {
	tally                 *attack.Tally
	before, during, after attack.Peak
	delays                attack.Delays // of the emits sent during the attack
	probes                []attack.Probe
	logged                int64 // bytes the node logged during the attack
	log                   string
	attackerCPU           float64
	seconds               float64 // the attack's length
}

// siege runs a against the node for d while the publisher emits to the
// browser, sampling the node a second before and after as well.
func siege(t *testing.T, n *node, b *browser, a attack.Attack, d time.Duration, payload int, probe bool) outcome {
	t.Helper()
	pub := &attack.Publisher{GRPC: n.grpc, From: bystander, Token: token, Rate: 10, Bytes: payload}
	smp := &attack.Sampler{PID: n.cmd.Process.Pid, Metrics: "http://" + n.admin + "/metrics", From: bystander, Interval: 100 * time.Millisecond}
	smp.SetPhase("before")
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pub.Run(bg) }()
	go func() { defer wg.Done(); smp.Run(bg) }()
	b.receipts(t) // what came before this attack
	time.Sleep(time.Second)

	var o outcome
	o.tally = new(attack.Tally)
	logFrom := n.logSize()
	selfCPU0 := attack.ProcCPU(os.Getpid())
	smp.SetPhase("during")
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx, n.target, o.tally) }()
	for probe && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
			o.probes = append(o.probes, attack.ProbeNode(ctx, n.bystanderView, token, maxDelay))
		}
	}
	<-ctx.Done()
	if err := <-errc; err != nil {
		t.Fatalf("attack: %v", err)
	}
	cancel()
	t1 := time.Now()
	o.seconds = t1.Sub(t0).Seconds()
	o.attackerCPU = attack.ProcCPU(os.Getpid()) - selfCPU0
	o.logged = n.logSize() - logFrom
	o.log = n.log(logFrom)
	// The node closes what the attack left in its own time: wait, up to
	// 5 s, for its goroutines to come back.
	smp.SetPhase("after")
	before := smp.Peaks()[0].Goroutines
	for start := time.Now(); time.Since(start) < 5*time.Second; {
		time.Sleep(250 * time.Millisecond)
		ss := smp.Samples()
		if last := ss[len(ss)-1]; time.Since(start) >= time.Second && last.Phase == "after" && last.Goroutines <= before+100 {
			break
		}
	}
	stopBG()
	wg.Wait()

	// Emits of the attack's last second may still be on their way.
	time.Sleep(500 * time.Millisecond)
	o.delays = attack.MeasureDelays(pub.Emits(), b.receipts(t), t0, t1.Add(-time.Second))
	for _, p := range smp.Peaks() {
		switch p.Phase {
		case "before":
			o.before = p
		case "during":
			o.during = p
		case "after":
			o.after = p
		}
	}
	t.Logf("answers: %s", o.tally)
	t.Logf("node %s", o.before)
	t.Logf("node %s", o.during)
	t.Logf("node %s", o.after)
	t.Logf("bystander during the attack: %s", o.delays)
	t.Logf("node log: %d bytes during the attack; attacker CPU %.2fs", o.logged, o.attackerCPU)
	return o
}

// checkBystander fails the test unless the browser got every emit sent
// during the attack within maxDelay and is still connected.
func (o outcome) checkBystander(t *testing.T, b *browser) {
	t.Helper()
	if o.delays.Emitted == 0 || o.delays.Missing > 0 || o.delays.Max > maxDelay {
		t.Errorf("bystander: %s; want every emit within %v", o.delays, maxDelay)
	}
	if s := b.state(t); s != "open" {
		t.Errorf("bystander page state: %q; want open", s)
	}
}

// checkRecovered fails the test unless the node's goroutines came back to
// about where they were before the attack.
func (o outcome) checkRecovered(t *testing.T) {
	t.Helper()
	if o.after.Last.Goroutines > o.before.Goroutines+100 {
		t.Errorf("goroutines: %d before, %d 5 s after; want them back", o.before.Goroutines, o.after.Last.Goroutines)
	}
}

const mib = 1 << 20

// TestHostile runs every attack, one at a time, against one node with a
// browser watching.
func TestHostile(t *testing.T) {
	n := startNode(t)
	b := openBrowser(t, n)
	cases := []struct {
		name    string
		attack  attack.Attack
		d       time.Duration
		payload int // of the publisher's messages
		probe   bool
		check   func(t *testing.T, o outcome)
	}{
		{"slow readers", attack.SlowReaders{Conns: 1000}, 5 * time.Second, 60 << 10, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if o.during.Heap > 150*mib {
				t.Errorf("heap during 1,000 stalled readers of 60 KiB messages: %d MiB; want at most 150", o.during.Heap/mib)
			}
		}},
		{"idle HTTP connections", attack.IdleHTTP{Conns: 5000}, 4 * time.Second, 64, true, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if len(o.probes) == 0 {
				t.Error("no newcomer probed the node during the attack")
			}
			for _, p := range o.probes {
				if p.Healthz < 0 || p.Upgrade < 0 || p.GRPC < 0 {
					t.Errorf("a newcomer during 5,000 idle connections: %s; want each answered within %v", p, maxDelay)
					break
				}
			}
			if o.during.FDs > fileLimit*3/4 {
				t.Errorf("descriptors during 5,000 idle connections: %d of %d; want the attacker's bounded", o.during.FDs, fileLimit)
			}
		}},
		{"gRPC streams without a body", attack.Streams{Conns: 1, Streams: 100_000}, 3 * time.Second, 64, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if o.during.Goroutines > o.before.Goroutines+1000 {
				t.Errorf("goroutines during 100,000 streams: %d, %d before; want no goroutine per stream", o.during.Goroutines, o.before.Goroutines)
			}
		}},
		{"metadata amplification", attack.Metadata{Streams: 100}, 3 * time.Second, 64, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if grown := o.during.Heap - o.before.Heap; grown > 64*mib {
				t.Errorf("heap during 100 health watches of amplified metadata: +%d MiB; want at most 64", grown/mib)
			}
		}},
		{"big requests without a token", attack.BigRequests{Workers: 16, Bytes: 4 << 20}, 3 * time.Second, 64, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if o.during.Heap > 256*mib {
				t.Errorf("heap during 4 MiB requests, 16 at a time, without a token: %d MiB; want at most 256", o.during.Heap/mib)
			}
		}},
		{"wrong tokens", attack.BadToken{Workers: 16}, 3 * time.Second, 64, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if o.logged > 64<<10 {
				t.Errorf("node log during %d wrong-token calls: %d KiB; want at most 64", o.tally.Get("Unauthenticated")+o.tally.Get("ResourceExhausted"), o.logged>>10)
			}
		}},
		{"refused upgrades, 10 KB Origins", attack.BadOrigin{Workers: 4, Bytes: 10 << 10}, 3 * time.Second, 64, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if o.logged > 64<<10 {
				t.Errorf("node log during %d refused upgrades: %d KiB; want at most 64", o.tally.Get("403"), o.logged>>10)
			}
		}},
		{"empty continuation frames", attack.FrameFlood{Conns: 4, Kind: attack.Continuation}, 3 * time.Second, 64, false, checkFlood(b)},
		{"pings", attack.FrameFlood{Conns: 4, Kind: attack.Ping}, 3 * time.Second, 64, false, checkFlood(b)},
		{"pongs", attack.FrameFlood{Conns: 4, Kind: attack.Pong}, 3 * time.Second, 64, false, checkFlood(b)},
		{"metrics scrapes", attack.Scrape{Workers: 8, Gzip: true}, 3 * time.Second, 64, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			scrapes := o.tally.Get("200")
			if scrapes == 0 {
				t.Fatalf("scrapes: %s; want some", o.tally)
			}
			if perScrape := o.during.CPU / float64(scrapes); perScrape > 250e-6 {
				t.Errorf("node CPU per /metrics scrape: %.0f µs over %d scrapes; want under 250", perScrape*1e6, scrapes)
			}
		}},
		{"rapid reset", attack.RapidReset{Conns: 1}, 3 * time.Second, 64, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if o.tally.Get("connections") < 2 {
				t.Errorf("rapid reset without a token: %s; want the node to close the connection", o.tally)
			}
		}},
		{"big upgrade headers", attack.BigHeaders{Conns: 500, Bytes: 1 << 20}, 3 * time.Second, 64, false, func(t *testing.T, o outcome) {
			o.checkBystander(t, b)
			if o.during.Heap > 100*mib {
				t.Errorf("heap during 500 upgrades with 1 MB of headers: %d MiB; want at most 100", o.during.Heap/mib)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := siege(t, n, b, tc.attack, tc.d, tc.payload, tc.probe)
			tc.check(t, o)
			o.checkRecovered(t)
		})
	}

	// Connections from many addresses can still take every descriptor:
	// the node says so, at most once a second.
	t.Run("accept errors", func(t *testing.T) {
		from := n.logSize()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				at := n.target
				at.From = fmt.Sprintf("127.0.0.%d", 10+i)
				attack.IdleHTTP{Conns: 1000}.Run(ctx, at, new(attack.Tally))
			}()
		}
		wg.Wait()
		log := n.log(from)
		warns := strings.Count(log, "failed to accept a connection")
		if warns == 0 || warns > 10 {
			t.Errorf("warnings while out of descriptors: %d; want one a second or so", warns)
		}
		if !strings.Contains(log, "level=WARN") {
			t.Errorf("accept errors are not logged at warn:\n%.2000s", log)
		}
	})
}

// checkFlood checks a flood of frames: each connection is closed (1008,
// or cut), and the node spent less than a core on it.
func checkFlood(b *browser) func(t *testing.T, o outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		o.checkBystander(t, b)
		if open := o.tally.Get("open"); open > 0 {
			t.Errorf("flooding connections still open after %.0fs: %d of 4 (%s); want each closed", o.seconds, open, o.tally)
		}
		if o.during.CPU > o.seconds {
			t.Errorf("node CPU during the flood: %.1fs in %.1fs; want under a core", o.during.CPU, o.seconds)
		}
	}
}

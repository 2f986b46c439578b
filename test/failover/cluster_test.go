package failover

// This file starts the deployment: the binaries built once per run, each
// process in its own process group (so a cleanup kills its children too),
// and nginx running as nobody with a prefix of its own.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/freeport"
	"github.com/switchboard-rt/switchboard/internal/testenv"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// waitTimeout bounds every wait for something that should happen soon; it
// is generous because the tests run with -race on two busy cores.
const waitTimeout = 20 * time.Second

// testToken is the API token the nodes require and the web servers send.
const testToken = "failover-test-token"

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	raiseFileLimit()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// raiseFileLimit lifts the soft limit on open files to the hard one: big
// fleets hold one socket per client, and nginx and the nodes, started from
// here, inherit the limit.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// binaries holds the paths of the programs under test.
type binaries struct {
	switchboard, webserver, nginx string
}

// needBinaries builds ./cmd/switchboard and ./examples/webserver once per
// run and finds nginx: missing, it skips the test, or fails it where
// tests must not skip (see internal/testenv).
func needBinaries(t testing.TB) binaries {
	t.Helper()
	ngx, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, serr := os.Stat(p); serr == nil {
				ngx, err = p, nil
				break
			}
		}
	}
	if err != nil {
		testenv.Missing(t, "nginx not found: install nginx (apt-get install nginx) to run the fail-over tests")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "switchboard-failover-")
		if buildErr != nil {
			return
		}
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			gobin = "go"
		}
		for _, pkg := range []string{"./cmd/switchboard", "./examples/webserver"} {
			cmd := exec.Command(gobin, "build", "-o", filepath.Join(buildDir, filepath.Base(pkg)), pkg)
			cmd.Dir = moduleRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binaries{
		switchboard: filepath.Join(buildDir, "switchboard"),
		webserver:   filepath.Join(buildDir, "webserver"),
		nginx:       ngx,
	}
}

// moduleRoot is the repository's root, two levels above this package.
func moduleRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Join(wd, "..", "..")
}

// features says which fail-over features the node under test has. They
// are detected from the binary and the source, never assumed.
type features struct {
	handBack    bool // standby mode: SWITCHBOARD_PRIMARY_ADDR
	idempotent  bool // pkg/client retries emits with an idempotency key
	healthcheck bool // the "switchboard healthcheck" subcommand
}

var (
	featuresOnce sync.Once
	detected     features
)

func detectFeatures(t testing.TB, bin binaries) features {
	t.Helper()
	featuresOnce.Do(func() {
		help, _ := exec.Command(bin.switchboard, "-h").CombinedOutput()
		detected.handBack = bytes.Contains(help, []byte("SWITCHBOARD_PRIMARY_ADDR"))
		detected.healthcheck = bytes.Contains(help, []byte("healthcheck"))
		if !detected.healthcheck {
			// The subcommand may exist without being in the usage text: an
			// unknown argument is refused with exit code 2.
			cmd := exec.Command(bin.switchboard, "healthcheck")
			cmd.Env = append(cleanEnv(), "SWITCHBOARD_HTTP_ADDR="+freeport.Addr(t))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			detected.healthcheck = !(errors.As(err, &ee) && ee.ExitCode() == 2 && bytes.Contains(out, []byte("unexpected argument")))
		}
		files, _ := filepath.Glob(filepath.Join(moduleRoot(), "pkg", "client", "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte("IdempotencyKey")) {
				detected.idempotent = true
			}
		}
	})
	t.Logf("features detected: hand-back %v, idempotent emit retries %v, healthcheck subcommand %v",
		detected.handBack, detected.idempotent, detected.healthcheck)
	return detected
}

// cleanEnv is the test's environment without any SWITCHBOARD_ variable,
// so a developer's settings do not leak into the processes under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") && !strings.HasPrefix(kv, "LISTEN_ADDR=") && !strings.HasPrefix(kv, "QUOTES_URL=") {
			env = append(env, kv)
		}
	}
	return env
}

// proc is one running process; its output is kept (the last 64 KiB) and
// shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // the exit status, once done is closed
}

func startProc(t testing.TB, name string, env []string, argv ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = env
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("failed to start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// While the leader lives its group id cannot be reused: kill the
		// group (nginx's workers too). A leader already reaped (a killed
		// node, which starts no children) is left alone.
		if !p.exited() {
			p.killGroup()
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", name, p.cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", name, p.out.String())
		}
	})
	return p
}

// killGroup sends SIGKILL to the process and everything it started.
func (p *proc) killGroup() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// templatePath is the nginx template deploy/compose.yaml mounts.
func templatePath() string {
	return filepath.Join(moduleRoot(), "deploy", "nginx", "nginx.conf.template")
}

var placeholderRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// renderTemplate replaces ${NAME} for every name in vars, as the nginx
// image's envsubst step does, and fails on a placeholder vars lacks.
func renderTemplate(tmpl string, vars map[string]string) (string, error) {
	var missing []string
	out := placeholderRE.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := placeholderRE.FindStringSubmatch(m)[1]
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("template placeholders without a value: %v", missing)
	}
	return out, nil
}

// nginxPrefix renders the template into a fresh prefix directory that
// nginx, running as nobody when the test runs as root, can write.
func nginxPrefix(t testing.TB, vars map[string]string) string {
	t.Helper()
	tmpl, err := os.ReadFile(templatePath())
	if err != nil {
		t.Fatal(err)
	}
	conf, err := renderTemplate(string(tmpl), vars)
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parents are 0700 root: nobody could not reach a prefix
	// inside, so the prefix gets a world-traversable directory of its own.
	prefix, err := os.MkdirTemp("", "switchboard-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(prefix) })
	if err := os.WriteFile(filepath.Join(prefix, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		uid, gid := nobodyIDs(t)
		if err := os.Chown(prefix, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(prefix, "nginx.conf"), uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return prefix
}

func nobodyIDs(t testing.TB) (int, int) {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("running as root needs the user nobody to run nginx: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// nginxArgv runs nginx in the foreground with its own prefix, as nobody
// when the test runs as root (TOOLCHAIN.md section 5).
func nginxArgv(bin binaries, prefix string, extra ...string) []string {
	argv := []string{bin.nginx, "-p", prefix + "/", "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"}
	argv = append(argv, extra...)
	if os.Geteuid() == 0 {
		argv = append([]string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}, argv...)
	}
	return argv
}

// cluster is one deployment on loopback: nginx in front of a primary, a
// standby and two web servers, as deploy/compose.yaml runs it.
type cluster struct {
	t    testing.TB
	bin  binaries
	feat features
	opts clusterOptions

	primaryHTTP, primaryGRPC string
	standbyHTTP, standbyGRPC string
	web1, web2               string
	nginxHTTP, nginxGRPC     string

	primary, standby, nginx *proc
	webs                    []*proc
}

type clusterOptions struct {
	noWebServers bool     // benchmarks need no pages
	nodeEnv      []string // more settings for both nodes
}

func startCluster(t testing.TB, opts clusterOptions) *cluster {
	t.Helper()
	bin := needBinaries(t)
	c := &cluster{
		t: t, bin: bin, feat: detectFeatures(t, bin), opts: opts,
		primaryHTTP: freeport.Addr(t), primaryGRPC: freeport.Addr(t),
		standbyHTTP: freeport.Addr(t), standbyGRPC: freeport.Addr(t),
		web1: freeport.Addr(t), web2: freeport.Addr(t),
		nginxHTTP: freeport.Addr(t), nginxGRPC: freeport.Addr(t),
	}
	// Started together, as compose does: the primary waits for the
	// standby's log (SWITCHBOARD_STANDBY_WAIT) and serves once it has it.
	c.startPrimary()
	c.standby = startProc(t, "standby", c.nodeEnv(c.standbyHTTP, c.standbyGRPC,
		"SWITCHBOARD_PRIMARY_ADDR="+c.primaryGRPC), bin.switchboard)
	c.waitHTTP(c.primaryHTTP+"/readyz", "primary ready")
	c.waitHTTP(c.standbyHTTP+"/healthz", "standby alive")

	prefix := nginxPrefix(t, map[string]string{
		"LISTEN_HTTP": c.nginxHTTP, "LISTEN_GRPC": c.nginxGRPC,
		"PRIMARY_HTTP": c.primaryHTTP, "STANDBY_HTTP": c.standbyHTTP,
		"PRIMARY_GRPC": c.primaryGRPC, "STANDBY_GRPC": c.standbyGRPC,
		"WEB1": c.web1, "WEB2": c.web2,
		"ACCESS_LOG": "access.log",
	})
	c.nginx = startProc(t, "nginx", cleanEnv(), nginxArgv(bin, prefix)...)
	c.waitHTTP(c.nginxHTTP+"/nginx-healthz", "nginx up")

	if !opts.noWebServers {
		for i, addr := range []string{c.web1, c.web2} {
			env := append(cleanEnv(),
				"LISTEN_ADDR="+addr,
				"SWITCHBOARD_ADDR="+c.nginxGRPC, // through nginx: emits fail over too
				"SWITCHBOARD_API_TOKEN="+testToken,
				"SWITCHBOARD_PUBLIC_URLS=ws://"+c.nginxHTTP+"/ws",
				fmt.Sprintf("SITE_NAME=web%d", i+1))
			c.webs = append(c.webs, startProc(t, fmt.Sprintf("web%d", i+1), env, bin.webserver))
			c.waitHTTP(addr+"/healthz", fmt.Sprintf("web%d up", i+1))
		}
	}
	return c
}

func (c *cluster) nodeEnv(httpAddr, grpcAddr string, extra ...string) []string {
	extra = append(extra, c.opts.nodeEnv...)
	return append(append(cleanEnv(),
		"SWITCHBOARD_HTTP_ADDR="+httpAddr,
		"SWITCHBOARD_GRPC_ADDR="+grpcAddr,
		"SWITCHBOARD_API_TOKEN="+testToken,
		"SWITCHBOARD_LOG_LEVEL=warn",
		// nginx is the nodes' only peer; its X-Forwarded-For names the
		// browser, as in deploy/compose.yaml. The per-address limit then
		// applies per browser, not to nginx as a whole.
		"SWITCHBOARD_TRUSTED_PROXIES=127.0.0.1/32",
	), extra...)
}

// startPrimary starts (or restarts, on the same ports) the primary.
func (c *cluster) startPrimary() {
	c.primary = startProc(c.t, "primary", c.nodeEnv(c.primaryHTTP, c.primaryGRPC, "SWITCHBOARD_STANDBY_WAIT=3s"), c.bin.switchboard)
}

// waitHTTP polls http://url until it answers 200.
func (c *cluster) waitHTTP(url, what string) {
	c.t.Helper()
	hc := &http.Client{Timeout: time.Second}
	var last string
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		resp, err := hc.Get("http://" + url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("%s: GET %s never answered 200 (last: %s)", what, url, last)
}

// wsURL and origin are what a page served through nginx uses.
func (c *cluster) wsURL() string  { return "ws://" + c.nginxHTTP + "/ws" }
func (c *cluster) origin() string { return "http://" + c.nginxHTTP }

// counter dials a node's gRPC listener directly (not through nginx).
func (c *cluster) counter(grpcAddr string) *client.Client {
	c.t.Helper()
	cl, err := client.Dial(grpcAddr, client.WithToken(testToken))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// count asks a node for its count, -1 when it does not answer.
func count(cl *client.Client) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := cl.Count(ctx, "")
	if err != nil {
		return -1
	}
	return n
}

// metricCount reads switchboard_local_connections from a node's /metrics:
// a standby refuses GetOnlineCount while its primary serves, but still
// reports the browsers it holds there. -1 when it does not answer.
func metricCount(httpAddr string) int64 {
	hc := &http.Client{Timeout: time.Second}
	resp, err := hc.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	// Prometheus text format: "switchboard_local_connections 50", perhaps
	// with labels, perhaps in float notation.
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "switchboard_local_connections")
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			return int64(v)
		}
	}
	return -1
}

// waitCount polls a node until its count is want and returns how long
// that took.
func waitCount(t testing.TB, what string, cl *client.Client, want int64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got int64
	for time.Since(start) < timeout {
		if got = count(cl); got == want {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: count %d after %v; want %d", what, got, timeout, want)
	return 0
}

// kill ends the primary with SIGKILL, as a crash would, and waits for it.
func (c *cluster) killPrimary() time.Time {
	c.t.Helper()
	at := time.Now()
	if err := c.primary.cmd.Process.Kill(); err != nil {
		c.t.Fatal(err)
	}
	<-c.primary.done
	return at
}

// waitMetric polls a node's /metrics until it holds want browsers.
func waitMetric(t testing.TB, what, httpAddr string, want int64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got int64
	for time.Since(start) < timeout {
		if got = metricCount(httpAddr); got == want {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %d browsers after %v; want %d", what, got, timeout, want)
	return 0
}

// healthcheck runs "switchboard healthcheck" against a node, as the
// image's HEALTHCHECK does.
func (c *cluster) healthcheck(httpAddr string, args ...string) ([]byte, error) {
	cmd := exec.Command(c.bin.switchboard, append([]string{"healthcheck"}, args...)...)
	cmd.Env = append(cleanEnv(), "SWITCHBOARD_HTTP_ADDR="+httpAddr)
	return cmd.CombinedOutput()
}

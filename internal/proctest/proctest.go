// Package proctest runs the project's programs as real processes for
// process-level tests: binaries built once per test binary, each process
// in a process group of its own (so that a cleanup kills its children
// too), its output kept and shown when the test fails, free loopback
// ports, and waits on HTTP endpoints and /metrics.
package proctest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/freeport"
)

// WaitTimeout bounds every wait for something that should happen soon; it
// is generous because the tests run with -race on two busy cores.
const WaitTimeout = 20 * time.Second

// Main runs a package's tests: it raises the open-file limit first (big
// fleets hold a socket per client, and the processes started from the
// tests inherit the limit) and removes the built binaries after.
//
//	func TestMain(m *testing.M) { proctest.Main(m) }
func Main(m *testing.M) {
	raiseFileLimit()
	code := m.Run()
	buildMu.Lock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	buildMu.Unlock()
	os.Exit(code)
}

// raiseFileLimit lifts the soft limit on open files to the hard one.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

var (
	buildMu  sync.Mutex
	buildDir string
	builds   = map[string]*build{}
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Build builds the module's package pkg (such as "./cmd/switchboard") once
// per test binary and returns the program's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	var err error
	if buildDir == "" {
		buildDir, err = os.MkdirTemp("", "switchboard-proctest-")
	}
	b := builds[pkg]
	if b == nil {
		b = &build{}
		builds[pkg] = b
	}
	dir := buildDir
	buildMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	b.once.Do(func() {
		b.path = filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command(GoTool(), "build", "-o", b.path, pkg)
		cmd.Dir = ModuleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// GoTool returns the go command of the toolchain running the tests.
func GoTool() string {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		return "go"
	}
	return gobin
}

// ModuleRoot returns the repository's root: the nearest directory above
// the working directory that holds go.mod.
func ModuleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			panic("proctest: no go.mod above " + dir)
		}
	}
}

// FreeAddr returns a loopback address for a process that will listen on
// it, with a port below the ephemeral range (see freeport).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeport.Addr(t)
}

// CleanEnv is the test's environment without any SWITCHBOARD_ variable
// nor the example web servers' settings, so that a developer's settings
// do not leak into the processes under test.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") && !strings.HasPrefix(kv, "LISTEN_ADDR=") && !strings.HasPrefix(kv, "QUOTES_URL=") {
			env = append(env, kv)
		}
	}
	return env
}

// Proc is one running process.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // the exit status, once done is closed
}

// Start starts argv with env (nil: CleanEnv) as a process named name. Its
// output is kept (the last 64 KiB) and logged when the test fails; when
// the test ends the process and its group are killed.
func Start(t testing.TB, name string, env []string, argv ...string) *Proc {
	t.Helper()
	if env == nil {
		env = CleanEnv()
	}
	p := &Proc{Name: name, out: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	p.Cmd = exec.Command(argv[0], argv[1:]...)
	p.Cmd.Env = env
	p.Cmd.Stdout = p.out
	p.Cmd.Stderr = p.out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("failed to start %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// While the leader lives its group id cannot be reused: kill the
		// group (nginx's workers too). A leader already reaped (a killed
		// node, which starts no children) is left alone.
		if !p.Exited() {
			p.KillGroup()
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", name, p.Pid())
		}
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", name, p.out.String())
		}
	})
	return p
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Kill ends the process with SIGKILL, as a crash would, waits until it is
// gone and returns when the signal was sent.
func (p *Proc) Kill(t testing.TB) time.Time {
	t.Helper()
	at := time.Now()
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatalf("failed to kill %s: %v", p.Name, err)
	}
	<-p.done
	return at
}

// Signal sends sig to the process.
func (p *Proc) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("failed to signal %s: %v", p.Name, err)
	}
}

// KillGroup sends SIGKILL to the process and everything it started.
func (p *Proc) KillGroup() {
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the exit status once Done is closed: nil for exit code 0.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns the last 64 KiB the process wrote.
func (p *Proc) Output() string { return p.out.String() }

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

// WaitHTTP polls http://addrPath (such as 127.0.0.1:8080/readyz) until
// it answers 200, and fails the test after WaitTimeout.
func WaitHTTP(t testing.TB, addrPath, what string) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	var last string
	deadline := time.Now().Add(WaitTimeout)
	for time.Now().Before(deadline) {
		resp, err := hc.Get("http://" + addrPath)
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
	t.Fatalf("%s: GET %s never answered 200 (last: %s)", what, addrPath, last)
}

// Status returns the HTTP status of GET http://addrPath, or 0 and the
// error when it does not answer.
func Status(addrPath string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addrPath, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Metric reads the first sample of metric name from the node's /metrics
// at httpAddr, -1 when the node does not answer or lacks it.
func Metric(httpAddr, name string) int64 {
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
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
		rest, ok := strings.CutPrefix(line, name)
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

// LocalConnections reads switchboard_local_connections, the browsers a
// node holds itself, from its /metrics: -1 when it does not answer.
func LocalConnections(httpAddr string) int64 {
	return Metric(httpAddr, "switchboard_local_connections")
}

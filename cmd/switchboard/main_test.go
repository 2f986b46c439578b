package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/switchboard-rt/switchboard/internal/freeport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestBinary builds the command and runs it as a process, the way a
// container runs it.
func TestBinary(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "switchboard")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("SIGTERM closes browsers with 1001 and exits 0", func(t *testing.T) {
		t.Parallel()
		httpAddr, grpcAddr := freeport.Addr(t), freeport.Addr(t)
		p := start(t, bin, "SWITCHBOARD_HTTP_ADDR="+httpAddr, "SWITCHBOARD_GRPC_ADDR="+grpcAddr)
		waitReady(t, p, "http://"+httpAddr+"/readyz")

		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws", nil)
		if err != nil {
			t.Fatalf("websocket.Dial: %v", err)
		}
		defer ws.CloseNow()
		for _, want := range []string{"welcome", "count"} {
			var f struct{ Type string }
			if _, msg, err := ws.Read(ctx); err != nil || json.Unmarshal(msg, &f) != nil || f.Type != want {
				t.Fatalf("frame = %s, %v; want a %s frame", msg, err, want)
			}
		}
		readErr := make(chan error, 1)
		go func() {
			for {
				if _, _, err := ws.Read(ctx); err != nil {
					readErr <- err
					return
				}
			}
		}()

		signalled := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM: %v", err)
		}
		select {
		case err := <-readErr:
			if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
				t.Errorf("browser's connection ended with %v (status %d); want close status %d", err, got, websocket.StatusGoingAway)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("browser got no close within 10s of SIGTERM")
		}
		code := p.wait(t, 10*time.Second-time.Since(signalled))
		if code != 0 {
			t.Errorf("exit code after SIGTERM = %d; want 0\nstderr:\n%s", code, p.stderr.String())
		}
		if out := p.stderr.String(); !strings.Contains(out, "shut down") {
			t.Errorf("stderr has no shutdown log:\n%s", out)
		}
	})

	t.Run("version", func(t *testing.T) {
		t.Parallel()
		// What the toolchain stamped, as go version -m reads it back.
		meta, err := exec.Command("go", "version", "-m", bin).Output()
		if err != nil {
			t.Fatalf("go version -m: %v", err)
		}
		var want []string
		for _, line := range strings.Split(string(meta), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) >= 3 && f[0] == "mod":
				want = append(want, "switchboard "+f[2]+" ")
			case len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision="):
				want = append(want, " revision "+strings.TrimPrefix(f[1], "vcs.revision=")+" ")
			}
		}
		for _, args := range [][]string{{"version"}, {"--version"}} {
			out, err := exec.Command(bin, args...).Output()
			if err != nil {
				t.Fatalf("%s %s: %v", bin, args[0], err)
			}
			for _, w := range want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s: got %q; want it to contain %q (go version -m:\n%s)", args[0], out, w, meta)
				}
			}
			if !strings.HasPrefix(string(out), "switchboard ") || !strings.HasSuffix(string(out), "\n") || len(want) == 0 {
				t.Errorf("%s: got %q; want one line starting with the module version", args[0], out)
			}
		}
	})

	t.Run("refuses an open gRPC address without a token", func(t *testing.T) {
		t.Parallel()
		p := start(t, bin, "SWITCHBOARD_HTTP_ADDR=127.0.0.1:0", "SWITCHBOARD_GRPC_ADDR=0.0.0.0:0")
		if code := p.wait(t, 10*time.Second); code <= 0 {
			t.Errorf("exit code = %d; want a failure\nstderr:\n%s", code, p.stderr.String())
		}
		if out := p.stderr.String(); !strings.Contains(out, "SWITCHBOARD_API_TOKEN") {
			t.Errorf("stderr does not mention SWITCHBOARD_API_TOKEN:\n%s", out)
		}
	})
}

// process is the command running.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed once it has exited
	code   int
}

// start runs bin with env added to an environment cleared of every
// SWITCHBOARD_ variable, and kills it if it outlives the test.
func start(t *testing.T, bin string, env ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin), stderr: new(syncBuffer), done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("stderr of %s:\n%s", bin, p.stderr.String())
		}
	})
	return p
}

// wait returns the exit code, failing the test if the process runs for
// longer than d; -1 means it was killed by a signal.
func (p *process) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		t.Fatalf("process still running after %v", d)
		return 0
	}
}

// waitReady polls url until it answers 200, failing if the process exits
// or 10 s pass.
func waitReady(t *testing.T, p *process, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("process exited with %d before it was ready\nstderr:\n%s", p.code, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not 200 within 10s: %v", url, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe to write from the process's pipe
// while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

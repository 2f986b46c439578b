//go:build unix

package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/testenv"
)

// TestMakeDemoCtrlC runs `make demo` as the README says and presses Ctrl-C:
// a terminal sends SIGINT to the whole foreground process group, make
// included. The demo must exit cleanly and make print no error: make then
// exits 0, or, having waited for the demo, dies of the SIGINT itself,
// which a shell shows as nothing but its prompt.
func TestMakeDemoCtrlC(t *testing.T) {
	mk, err := exec.LookPath("make")
	if err != nil {
		testenv.Missing(t, "make not found: install make (apt-get install make)")
	}
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mk, "--no-print-directory", "-C", root, "demo",
		"DEMO_BIN="+filepath.Join(t.TempDir(), "demo"),
		"DEMO_FLAGS=-http-addr=127.0.0.1:0 -grpc-addr=127.0.0.1:0 -web-addrs=127.0.0.1:0,127.0.0.1:0 -quote-every=0")
	// Not the make that may be running this test: none of its flags.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("make demo: %v", err)
	}
	var waitErr error
	done := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})

	var out lockedBuffer
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if strings.HasPrefix(sc.Text(), "Open the web") {
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-done:
		t.Fatalf("make demo ended before the demo started: %v\nstdout:\n%s\nstderr:\n%s", waitErr, out.String(), stderr.String())
	case <-time.After(3 * time.Minute): // includes the build
		t.Fatalf("the demo did not start within 3 minutes\nstdout:\n%s\nstderr:\n%s", out.String(), stderr.String())
	}

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatalf("SIGINT: %v", err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("make demo still running 15 s after Ctrl-C\nstderr:\n%s", stderr.String())
	}
	var exit *exec.ExitError
	if waitErr != nil {
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !errors.As(waitErr, &exit) || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("make demo after Ctrl-C: got %v; want exit status 0 or death by SIGINT\nstderr:\n%s", waitErr, stderr.String())
		}
	}
	if s := stderr.String(); strings.Contains(s, "***") || strings.Contains(s, "Error") {
		t.Errorf("make demo after Ctrl-C wrote an error:\n%s", s)
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and one reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)

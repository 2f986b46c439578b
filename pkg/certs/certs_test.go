package certs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-rt/switchboard/pkg/certs"
	"github.com/switchboard-rt/switchboard/pkg/certs/certstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve accepts TLS connections with cfg until the test ends, completing
// each handshake.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// servedSerial dials addr and returns the serial number of the
// certificate it presents.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) (string, error) {
	t.Helper()
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	// With TLS 1.3 a refused client certificate shows at the first read.
	tc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var ne net.Error
	if _, err := tc.Read(make([]byte, 1)); err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		return "", err
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchSwapsCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certstest.NewCA(t)
	first, certFile, keyFile := ca.Files(t, dir)
	var logs syncBuffer
	st, err := certs.Load(certs.Files{Cert: certFile, Key: keyFile}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Load: got %v; want nil", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); st.Watch(ctx, 10*time.Millisecond) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	addr := serve(t, st.ServerConfig())
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	if got, err := servedSerial(t, addr, client); err != nil || got != first.Serial.String() {
		t.Fatalf("first dial: got serial %s, %v; want %s", got, err, first.Serial)
	}

	second := ca.Server(t)
	second.Write(t, certFile, keyFile)
	waitFor(t, "the new certificate to be served", func() bool {
		got, err := servedSerial(t, addr, client)
		return err == nil && got == second.Serial.String()
	})

	// A broken file keeps the previous certificate and is logged. It is
	// written at once, as renewal tools do, so that it fails once.
	tmp := certFile + ".tmp"
	if err := os.WriteFile(tmp, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, certFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed reload to be logged", func() bool { return strings.Contains(logs.String(), "TLS reload failed") })
	if got, err := servedSerial(t, addr, client); err != nil || got != second.Serial.String() {
		t.Fatalf("after a bad file: got serial %s, %v; want %s (the previous one)", got, err, second.Serial)
	}
	if n := strings.Count(logs.String(), "TLS reload failed"); n != 1 {
		// Let a few more polls pass: an unchanged bad file is not retried.
		time.Sleep(50 * time.Millisecond)
		if n := strings.Count(logs.String(), "TLS reload failed"); n != 1 {
			t.Errorf("failed reloads logged: got %d; want 1", n)
		}
	}

	// Fixing the file is picked up.
	third := ca.Server(t)
	third.Write(t, certFile, keyFile)
	waitFor(t, "the fixed certificate to be served", func() bool {
		got, err := servedSerial(t, addr, client)
		return err == nil && got == third.Serial.String()
	})
}

func TestReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certstest.NewCA(t)
	_, certFile, keyFile := ca.Files(t, dir)
	st, err := certs.Load(certs.Files{Cert: certFile, Key: keyFile}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("Load: got %v; want nil", err)
	}
	next := ca.Server(t)
	next.Write(t, certFile, keyFile)
	if err := st.Reload(); err != nil {
		t.Fatalf("Reload: got %v; want nil", err)
	}
	if got := st.Certificate().Leaf.SerialNumber; got.Cmp(next.Serial) != 0 {
		t.Errorf("serial after Reload: got %v; want %v", got, next.Serial)
	}
	// A key that does not match the certificate is refused.
	other := ca.Server(t)
	if err := os.WriteFile(keyFile, other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Reload(); err == nil {
		t.Error("Reload with a mismatched key: got nil; want an error")
	}
	if got := st.Certificate().Leaf.SerialNumber; got.Cmp(next.Serial) != 0 {
		t.Errorf("serial after a failed Reload: got %v; want %v", got, next.Serial)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certstest.NewCA(t)
	_, certFile, keyFile := ca.Files(t, dir)
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files certs.Files
		want  string
	}{
		{name: "no key", files: certs.Files{Cert: certFile}, want: "both a certificate and a key"},
		{name: "missing cert", files: certs.Files{Cert: filepath.Join(dir, "none.pem"), Key: keyFile}, want: "failed to load TLS certificate"},
		{name: "bad cert", files: certs.Files{Cert: bad, Key: keyFile}, want: "failed to load TLS certificate"},
		{name: "missing client CA", files: certs.Files{Cert: certFile, Key: keyFile, ClientCA: filepath.Join(dir, "none.pem")}, want: "client CA"},
		{name: "bad client CA", files: certs.Files{Cert: certFile, Key: keyFile, ClientCA: bad}, want: "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := certs.Load(tt.files, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certstest.NewCA(t)
	leaf, certFile, keyFile := ca.Files(t, dir)
	st, err := certs.Load(certs.Files{Cert: certFile, Key: keyFile, ClientCA: ca.WriteCA(t, dir)}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("Load: got %v; want nil", err)
	}
	if !st.MutualTLS() {
		t.Error("MutualTLS: got false; want true")
	}
	addr := serve(t, st.ServerConfig())
	stranger := certstest.NewCA(t)
	tests := []struct {
		name    string
		certs   []tls.Certificate
		wantErr bool
	}{
		{name: "client certificate", certs: []tls.Certificate{ca.Client(t, "web-1").TLS(t)}},
		{name: "no client certificate", wantErr: true},
		{name: "certificate from another CA", certs: []tls.Certificate{stranger.Client(t, "web-1").TLS(t)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := servedSerial(t, addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: tt.certs})
			if tt.wantErr {
				if err == nil {
					t.Error("dial: got nil; want an error")
				}
				return
			}
			if err != nil || got != leaf.Serial.String() {
				t.Errorf("dial: got serial %s, %v; want %s, nil", got, err, leaf.Serial)
			}
		})
	}
}

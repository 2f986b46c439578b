package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/freeport"
	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/pkg/certs/certstest"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

func TestParseConfigTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want server.TLSConfig
		// wantAdmin is the admin address.
		wantAdmin string
	}{
		{
			name: "env",
			env: map[string]string{
				"SWITCHBOARD_TLS_CERT":            "/c.pem",
				"SWITCHBOARD_TLS_KEY":             "/k.pem",
				"SWITCHBOARD_GRPC_TLS_CERT":       "/gc.pem",
				"SWITCHBOARD_GRPC_TLS_KEY":        "/gk.pem",
				"SWITCHBOARD_GRPC_CLIENT_CA":      "/ca.pem",
				"SWITCHBOARD_TLS_RELOAD_INTERVAL": "1m",
				"SWITCHBOARD_ADMIN_ADDR":          "127.0.0.1:6060",
				"SWITCHBOARD_PRIMARY_CA":          "/pca.pem",
			},
			want:      server.TLSConfig{CertFile: "/c.pem", KeyFile: "/k.pem", GRPCCertFile: "/gc.pem", GRPCKeyFile: "/gk.pem", GRPCClientCAFile: "/ca.pem", PrimaryCAFile: "/pca.pem", ReloadInterval: time.Minute},
			wantAdmin: "127.0.0.1:6060",
		},
		{
			name:      "flags win",
			args:      []string{"--tls-cert=/f.pem", "--tls-key", "/fk.pem", "--grpc-client-ca=/fca.pem", "--admin-addr=:6061"},
			env:       map[string]string{"SWITCHBOARD_TLS_CERT": "/c.pem", "SWITCHBOARD_ADMIN_ADDR": "127.0.0.1:6060"},
			want:      server.TLSConfig{CertFile: "/f.pem", KeyFile: "/fk.pem", GRPCClientCAFile: "/fca.pem", ReloadInterval: 5 * time.Second},
			wantAdmin: ":6061",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			got, _, err := parseConfig(tt.args, env(tt.env), &stderr)
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			if !reflect.DeepEqual(got.TLS, tt.want) || got.AdminAddr != tt.wantAdmin {
				t.Errorf("parseConfig: got TLS %+v admin %q; want %+v %q", got.TLS, got.AdminAddr, tt.want, tt.wantAdmin)
			}
		})
	}
	var stderr bytes.Buffer
	if _, _, err := parseConfig([]string{"--tls-reload-interval=0"}, env(nil), &stderr); err == nil || !strings.Contains(err.Error(), "SWITCHBOARD_TLS_RELOAD_INTERVAL") {
		t.Errorf("parseConfig with a zero reload interval: got %v; want an error naming SWITCHBOARD_TLS_RELOAD_INTERVAL", err)
	}
}

func TestHealthcheckTLS(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	_, certFile, keyFile := ca.Files(t, dir)
	srv := nodetest.Start(t, server.Config{
		TLS:    server.TLSConfig{CertFile: certFile, KeyFile: keyFile},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	env := func(name string) string {
		switch name {
		case "SWITCHBOARD_HTTP_ADDR":
			return srv.HTTPAddr()
		case "SWITCHBOARD_TLS_CERT":
			return certFile
		}
		return ""
	}
	caFile := ca.WriteCA(t, dir)
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"https on loopback", []string{"healthcheck"}, 0},
		{"ready", []string{"healthcheck", "--ready"}, 0},
		{"plain http to a TLS node", []string{"healthcheck", "--tls=false"}, 1},
		{"localhost verifies nothing either", []string{"healthcheck", "--http-addr", "localhost:" + srv.HTTPAddr()[strings.LastIndex(srv.HTTPAddr(), ":")+1:]}, 0},
		{"missing CA file", []string{"healthcheck", "--http-addr", "10.255.255.1:1", "--ca", filepath.Join(dir, "none.pem")}, 2},
		{"CA file given on loopback", []string{"healthcheck", "--ca", caFile}, 0},
	} {
		var stderr bytes.Buffer
		if got := run(tc.args, env, &stderr); got != tc.want {
			t.Errorf("%s: got exit %d (%s); want %d", tc.name, got, stderr.String(), tc.want)
		}
	}
}

// TestBinarySIGHUP runs the command with TLS and checks that SIGHUP swaps
// the certificate it serves.
func TestBinarySIGHUP(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "switchboard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	first, certFile, keyFile := ca.Files(t, dir)
	httpAddr, grpcAddr := freeport.Addr(t), freeport.Addr(t)
	vars := []string{
		"SWITCHBOARD_HTTP_ADDR=" + httpAddr, "SWITCHBOARD_GRPC_ADDR=" + grpcAddr,
		"SWITCHBOARD_TLS_CERT=" + certFile, "SWITCHBOARD_TLS_KEY=" + keyFile,
		"SWITCHBOARD_TLS_RELOAD_INTERVAL=1h", // only SIGHUP reloads
	}
	p := start(t, bin, vars...)
	getenv := func(name string) string {
		for _, kv := range vars {
			if k, v, _ := strings.Cut(kv, "="); k == name {
				return v
			}
		}
		return ""
	}
	deadline := time.Now().Add(10 * time.Second)
	for run([]string{"healthcheck", "--ready", "--timeout=1s"}, getenv, io.Discard) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the node was not ready over https within 10s\nstderr:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	serial := func() string {
		c, err := tls.Dial("tcp", httpAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := serial(); got != first.Serial.String() {
		t.Fatalf("serial: got %s; want %s", got, first.Serial)
	}
	next := ca.Server(t)
	next.Write(t, certFile, keyFile)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for serial() != next.Serial.String() {
		if time.Now().After(deadline) {
			t.Fatalf("serial after SIGHUP: still %s; want %s\nstderr:\n%s", serial(), next.Serial, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM: got %d; want 0\nstderr:\n%s", code, p.stderr.String())
	}
}

package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/internal/freeport"
	"github.com/switchboard-rt/switchboard/pkg/certs/certstest"
)

// startTLSNode is startNode for a node serving TLS with certificates from
// ca; its clients trust ca and, for mutual TLS, present a client
// certificate.
func startTLSNode(t testing.TB, cfg Config, ca *certstest.CA) *node {
	t.Helper()
	tc := &tls.Config{RootCAs: ca.Pool()}
	if cfg.TLS.GRPCClientCAFile != "" {
		tc.Certificates = []tls.Certificate{ca.Client(t, "web").TLS(t)}
	}
	return runNode(t, newNode(t, cfg), clients{
		ws:   "wss",
		http: "https",
		hc:   &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}},
		grpc: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))},
	})
}

// servedSerial returns the serial number of the certificate served at
// addr.
func servedSerial(t testing.TB, addr string, ca *certstest.CA, nextProto string) string {
	t.Helper()
	d := tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{nextProto}}}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS dial %s: got %v; want nil", addr, err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	first, certFile, keyFile := ca.Files(t, dir)
	n := startTLSNode(t, Config{TLS: TLSConfig{CertFile: certFile, KeyFile: keyFile, ReloadInterval: time.Hour}}, ca)
	if h, g := n.srv.TLS(); !h || !g {
		t.Fatalf("TLS(): got %v, %v; want true, true", h, g)
	}

	// wss:// and gRPC over TLS.
	b := n.dialReading(t)
	b.waitCount(t, 1)
	n.waitCount(t, "", 1)
	res := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "E"})
	b.waitMessage(t, res.GetId())

	// Plain HTTP on the TLS port gets a clear refusal.
	resp, err := http.Get("http://" + n.srv.HTTPAddr() + "/healthz")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
			t.Errorf("plain HTTP on the TLS port: got %s %q; want 400 naming HTTPS", resp.Status, body)
		}
	}

	for _, l := range []struct{ name, addr, proto string }{{"HTTP", n.srv.HTTPAddr(), "http/1.1"}, {"gRPC", n.srv.GRPCAddr(), "h2"}} {
		if got := servedSerial(t, l.addr, ca, l.proto); got != first.Serial.String() {
			t.Errorf("%s serial: got %s; want %s", l.name, got, first.Serial)
		}
	}
	// SIGHUP's reload swaps the certificate of both listeners.
	second := ca.Server(t)
	second.Write(t, certFile, keyFile)
	if err := n.srv.ReloadCerts(); err != nil {
		t.Fatalf("ReloadCerts: got %v; want nil", err)
	}
	for _, l := range []struct{ name, addr, proto string }{{"HTTP", n.srv.HTTPAddr(), "http/1.1"}, {"gRPC", n.srv.GRPCAddr(), "h2"}} {
		if got := servedSerial(t, l.addr, ca, l.proto); got != second.Serial.String() {
			t.Errorf("%s serial after ReloadCerts: got %s; want %s", l.name, got, second.Serial)
		}
	}
	// A bad file keeps the certificate; connections still work.
	if err := os.WriteFile(keyFile, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.srv.ReloadCerts(); err == nil {
		t.Error("ReloadCerts with a bad key: got nil; want an error")
	}
	if got := servedSerial(t, n.srv.HTTPAddr(), ca, "http/1.1"); got != second.Serial.String() {
		t.Errorf("serial after a failed reload: got %s; want %s", got, second.Serial)
	}
	n.waitCount(t, "", 1)
}

func TestTLSWatchesFiles(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	_, certFile, keyFile := ca.Files(t, dir)
	grpcLeaf := ca.Server(t)
	grpcCert, grpcKey := filepath.Join(dir, "grpc.pem"), filepath.Join(dir, "grpc-key.pem")
	grpcLeaf.Write(t, grpcCert, grpcKey)
	n := startTLSNode(t, Config{TLS: TLSConfig{
		CertFile: certFile, KeyFile: keyFile,
		GRPCCertFile: grpcCert, GRPCKeyFile: grpcKey,
		ReloadInterval: 10 * time.Millisecond,
	}}, ca)
	if got := servedSerial(t, n.srv.GRPCAddr(), ca, "h2"); got != grpcLeaf.Serial.String() {
		t.Errorf("gRPC serial: got %s; want its own certificate's %s", got, grpcLeaf.Serial)
	}
	next := ca.Server(t)
	next.Write(t, certFile, keyFile)
	eventually(t, waitTimeout, func() (bool, string) {
		got := servedSerial(t, n.srv.HTTPAddr(), ca, "http/1.1")
		return got == next.Serial.String(), fmt.Sprintf("HTTP serial: got %s; want %s", got, next.Serial)
	})
	if got := servedSerial(t, n.srv.GRPCAddr(), ca, "h2"); got != grpcLeaf.Serial.String() {
		t.Errorf("gRPC serial after the HTTP certificate changed: got %s; want %s", got, grpcLeaf.Serial)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	_, certFile, keyFile := ca.Files(t, dir)
	caFile := ca.WriteCA(t, dir)
	tests := []struct {
		name string
		cfg  TLSConfig
		addr string
		want string // in the error; "" wants none
		is   error
		// primary makes the node a standby.
		primary string
	}{
		{name: "cert without key", cfg: TLSConfig{CertFile: certFile}, want: "SWITCHBOARD_TLS_KEY"},
		{name: "gRPC key without cert", cfg: TLSConfig{GRPCKeyFile: keyFile}, want: "SWITCHBOARD_GRPC_TLS_CERT"},
		{name: "client CA without cert", cfg: TLSConfig{GRPCClientCAFile: caFile}, want: "needs a gRPC certificate"},
		{name: "TLS standby without the primary's CA", cfg: TLSConfig{CertFile: certFile, KeyFile: keyFile}, primary: "127.0.0.1:1", want: "SWITCHBOARD_PRIMARY_CA"},
		{name: "bad primary CA file", cfg: TLSConfig{PrimaryCAFile: certFile + ".none"}, primary: "127.0.0.1:1", want: "primary's CA file"},
		{name: "missing cert file", cfg: TLSConfig{CertFile: filepath.Join(dir, "none"), KeyFile: keyFile}, want: "failed to load TLS certificate"},
		{name: "TLS beyond loopback without token", cfg: TLSConfig{CertFile: certFile, KeyFile: keyFile}, addr: "0.0.0.0:0", is: ErrInsecure},
		{name: "mTLS beyond loopback without token", cfg: TLSConfig{CertFile: certFile, KeyFile: keyFile, GRPCClientCAFile: caFile}, addr: "0.0.0.0:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := tt.addr
			if addr == "" {
				addr = "127.0.0.1:0"
			}
			srv, err := New(Config{HTTPAddr: "127.0.0.1:0", GRPCAddr: addr, TLS: tt.cfg, PrimaryAddr: tt.primary, Logger: testLogger(t, slog.LevelInfo)})
			if srv != nil {
				srv.closeListeners()
				srv.hub.Close()
			}
			switch {
			case tt.is != nil:
				if !errors.Is(err, tt.is) {
					t.Errorf("New: got %v; want %v", err, tt.is)
				}
			case tt.want == "":
				if err != nil {
					t.Errorf("New: got %v; want nil", err)
				}
			case err == nil || !strings.Contains(err.Error(), tt.want):
				t.Errorf("New: got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestStandbyTLS runs fail-over with TLS everywhere: the primary requires
// client certificates, and the standby watches it with its own.
func TestStandbyTLS(t *testing.T) {
	t.Parallel()
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	_, certFile, keyFile := ca.Files(t, dir)
	caFile := ca.WriteCA(t, dir)
	primaryAddr := freeport.Addr(t)
	primary := startTLSNode(t, Config{
		GRPCAddr: primaryAddr,
		TLS:      TLSConfig{CertFile: certFile, KeyFile: keyFile, GRPCClientCAFile: caFile},
	}, ca)
	standby := startTLSNode(t, Config{
		PrimaryAddr:    primaryAddr,
		HandBackSpread: 100 * time.Millisecond,
		TLS:            TLSConfig{CertFile: certFile, KeyFile: keyFile, PrimaryCAFile: caFile},
	}, ca)
	standby.checkPassive(t)
	primary.stop(t)
	standby.waitActive(t)
}

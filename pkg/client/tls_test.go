package client_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/switchboard-rt/switchboard/pkg/certs/certstest"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

func TestTLS(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ca := certstest.NewCA(t)
	_, certFile, keyFile := ca.Files(t, t.TempDir())
	n := startNode(t, server.Config{TLS: server.TLSConfig{CertFile: certFile, KeyFile: keyFile}})

	c := dial(t, n.GRPCAddr(), client.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool()})))
	if _, err := c.Count(ctx, ""); err != nil {
		t.Fatalf("Count over TLS: got %v; want nil", err)
	}

	// A plaintext client fails at once, not after its deadline.
	plain := dial(t, n.GRPCAddr())
	start := time.Now()
	_, err := plain.Count(ctx, "")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext Count on the TLS port: got %v; want code Unavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("plaintext Count on the TLS port took %v; want it to fail quickly", d)
	}

	// A client that does not trust the node's CA is refused too.
	stranger := dial(t, n.GRPCAddr(), client.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: certstest.NewCA(t).Pool()})))
	if _, err := stranger.Count(ctx, ""); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Count with an untrusted CA: got %v; want Unavailable naming the certificate", err)
	}
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	_, certFile, keyFile := ca.Files(t, dir)
	// No token on a non-loopback address: client certificates authenticate.
	n := startNode(t, server.Config{
		GRPCAddr: "0.0.0.0:0",
		TLS:      server.TLSConfig{CertFile: certFile, KeyFile: keyFile, GRPCClientCAFile: ca.WriteCA(t, dir)},
	})
	addr := "127.0.0.1:" + n.GRPCAddr()[strings.LastIndex(n.GRPCAddr(), ":")+1:]

	withCert := dial(t, addr, client.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs:      ca.Pool(),
		Certificates: []tls.Certificate{ca.Client(t, "web-1").TLS(t)},
	})))
	if _, err := withCert.Count(ctx, ""); err != nil {
		t.Fatalf("Count with a client certificate: got %v; want nil", err)
	}
	res, err := withCert.Emit(ctx, "ShowMessage", "hi")
	if err != nil || res.ID == "" {
		t.Fatalf("Emit with a client certificate: got %+v, %v; want an id, nil", res, err)
	}

	without := dial(t, addr, client.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool()})))
	if _, err := without.Count(ctx, ""); status.Code(err) != codes.Unavailable {
		t.Errorf("Count without a client certificate: got %v; want code Unavailable", err)
	}
}

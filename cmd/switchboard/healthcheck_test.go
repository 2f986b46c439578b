package main

import (
	"bytes"
	"io"
	"log/slog"
	"testing"

	"github.com/switchboard-rt/switchboard/internal/freeport"
	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

func TestProbeURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, addr string
		ready      bool
		want       string
	}{
		{"any host", ":8080", false, "http://127.0.0.1:8080/healthz"},
		{"unspecified IPv4", "0.0.0.0:8080", true, "http://127.0.0.1:8080/readyz"},
		{"unspecified IPv6", "[::]:8080", false, "http://127.0.0.1:8080/healthz"},
		{"a host", "10.1.2.3:9000", false, "http://10.1.2.3:9000/healthz"},
		{"IPv6 loopback", "[::1]:8080", false, "http://[::1]:8080/healthz"},
	} {
		got, err := probeURL(tc.addr, tc.ready)
		if err != nil || got != tc.want {
			t.Errorf("%s: probeURL(%q, %v): got %q, %v; want %q", tc.name, tc.addr, tc.ready, got, err, tc.want)
		}
	}
	if _, err := probeURL("8080", false); err == nil {
		t.Error("probeURL(\"8080\"): got no error; want one for an address without a port")
	}
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := nodetest.Start(t, server.Config{Logger: quiet})
	env := func(name string) string {
		if name == "SWITCHBOARD_HTTP_ADDR" {
			return srv.HTTPAddr()
		}
		return ""
	}
	dead := freeport.Addr(t)

	// A standby whose primary serves is alive but not ready.
	standby := nodetest.Start(t, server.Config{PrimaryAddr: srv.GRPCAddr(), Logger: quiet})

	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"alive, address from the environment", []string{"healthcheck"}, 0},
		{"ready", []string{"healthcheck", "--ready"}, 0},
		{"nobody listening", []string{"healthcheck", "--http-addr", dead, "--timeout", "1s"}, 1},
		{"bad address", []string{"healthcheck", "--http-addr", "nowhere"}, 2},
		{"passive standby is alive", []string{"healthcheck", "--http-addr", standby.HTTPAddr()}, 0},
		{"passive standby is not ready", []string{"healthcheck", "--http-addr", standby.HTTPAddr(), "--ready"}, 1},
	} {
		var stderr bytes.Buffer
		if got := run(tc.args, env, &stderr); got != tc.want {
			t.Errorf("%s: got exit %d (%s); want %d", tc.name, got, stderr.String(), tc.want)
		}
	}
}

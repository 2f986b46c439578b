package main

import (
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/server"
)

func TestParseLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(*server.Config) // changes from defaults()
	}{
		{
			name: "env",
			env: map[string]string{
				"SWITCHBOARD_MAX_CONNS":             "500",
				"SWITCHBOARD_MAX_CONNS_PER_IP":      "0",
				"SWITCHBOARD_MAX_CONNS_PER_VISITOR": "0",
				"SWITCHBOARD_TRUSTED_PROXIES":       "10.0.0.0/8, 192.168.1.7,,fd00::1/64",
				"SWITCHBOARD_MAX_SUBSCRIPTIONS":     "8",
				"SWITCHBOARD_MAX_FRAME_BYTES":       "1024",
				"SWITCHBOARD_FRAME_RATE":            "off",
				"SWITCHBOARD_FRAME_BURST":           "5",
				"SWITCHBOARD_EMIT_RATE":             "600/m",
				"SWITCHBOARD_EMIT_BURST":            "20",
				"SWITCHBOARD_HANDSHAKE_TIMEOUT":     "2s",

				"SWITCHBOARD_MAX_HTTP_CONNS":        "0",
				"SWITCHBOARD_MAX_HTTP_CONNS_PER_IP": "50",
				"SWITCHBOARD_MAX_GRPC_CONNS":        "20",
				"SWITCHBOARD_MAX_GRPC_CONNS_PER_IP": "0",
				"SWITCHBOARD_MAX_GRPC_STREAMS":      "32",
				"SWITCHBOARD_IDLE_TIMEOUT":          "1m",
				"SWITCHBOARD_MAX_HEADER_BYTES":      "8192",
				"SWITCHBOARD_SEND_BUFFER":           "0",
				"SWITCHBOARD_MAX_QUEUED_BYTES":      "0",
				"SWITCHBOARD_PUBLIC_METRICS":        "false",
			},
			want: func(c *server.Config) {
				c.Limits = server.Limits{
					MaxConns: 500, MaxConnsPerIP: -1, MaxConnsPerVisitor: -1, MaxFrameBytes: 1024,
					TrustedProxies: []netip.Prefix{
						netip.MustParsePrefix("10.0.0.0/8"),
						netip.MustParsePrefix("192.168.1.7/32"),
						netip.MustParsePrefix("fd00::/64"),
					},
					FrameRate: -1, FrameBurst: 5, EmitRate: 10, EmitBurst: 20, HandshakeTimeout: 2 * time.Second,
					MaxHTTPConns: -1, MaxHTTPConnsPerIP: 50, MaxGRPCConns: 20, MaxGRPCConnsPerIP: -1,
					MaxGRPCStreams: 32, IdleTimeout: time.Minute, MaxHeaderBytes: 8192, SendBuffer: -1,
				}
				c.Hub.MaxSubscriptions = 8
				c.Hub.MaxQueuedBytes = -1
				c.PrivateMetrics = true
			},
		},
		{
			name: "flags",
			args: []string{"--max-conns=0", "--frame-rate=5/s", "--emit-rate=100/s", "--max-conns-per-ip=3", "--max-conns-per-visitor=7"},
			env:  map[string]string{"SWITCHBOARD_EMIT_RATE": "1/h"},
			want: func(c *server.Config) {
				c.Limits.MaxConns, c.Limits.MaxConnsPerIP, c.Limits.FrameRate, c.Limits.EmitRate = -1, 3, 5, 100
				c.Limits.MaxConnsPerVisitor = 7
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, _, err := parseConfig(tc.args, env(tc.env), io.Discard)
			if err != nil {
				t.Fatalf("parseConfig: got %v; want nil", err)
			}
			want := defaults()
			tc.want(&want)
			got.Logger = nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("parseConfig:\ngot  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseLimitsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ env, value string }{
		{"SWITCHBOARD_MAX_CONNS", "-1"},
		{"SWITCHBOARD_MAX_CONNS_PER_IP", "many"},
		{"SWITCHBOARD_TRUSTED_PROXIES", "10.0.0.0/33"},
		{"SWITCHBOARD_TRUSTED_PROXIES", "proxy.local"},
		{"SWITCHBOARD_MAX_SUBSCRIPTIONS", "0"},
		{"SWITCHBOARD_MAX_FRAME_BYTES", "0"},
		{"SWITCHBOARD_FRAME_RATE", "20"},
		{"SWITCHBOARD_FRAME_RATE", "20/d"},
		{"SWITCHBOARD_FRAME_BURST", "0"},
		{"SWITCHBOARD_EMIT_RATE", "-5/s"},
		{"SWITCHBOARD_EMIT_RATE", "NaN/s"},
		{"SWITCHBOARD_EMIT_BURST", "-1"},
		{"SWITCHBOARD_HANDSHAKE_TIMEOUT", "0s"},
		{"SWITCHBOARD_MAX_HTTP_CONNS", "-1"},
		{"SWITCHBOARD_MAX_GRPC_CONNS_PER_IP", "lots"},
		{"SWITCHBOARD_MAX_GRPC_STREAMS", "0"},
		{"SWITCHBOARD_IDLE_TIMEOUT", "-1s"},
		{"SWITCHBOARD_MAX_HEADER_BYTES", "100"},
		{"SWITCHBOARD_SEND_BUFFER", "-1"},
		{"SWITCHBOARD_MAX_QUEUED_BYTES", "1GB"},
		{"SWITCHBOARD_PUBLIC_METRICS", "maybe"},
	}
	for _, tc := range tests {
		_, _, err := parseConfig(nil, env(map[string]string{tc.env: tc.value}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.env) {
			t.Errorf("%s=%q: got %v; want an error naming %s", tc.env, tc.value, err, tc.env)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// env returns a getenv over vars.
func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

// defaults is the configuration with no flag and no environment.
func defaults() server.Config {
	return server.Config{
		HTTPAddr:        ":8080",
		KeepAlive:       20 * time.Second,
		ShutdownTimeout: 10 * time.Second,
		MaxDataBytes:    65536,
		HandBackSpread:  3 * time.Second,
		Hub:             hub.Config{CountInterval: 100 * time.Millisecond, MaxSubscriptions: 64, HistorySize: 1000, HistoryTTL: 5 * time.Minute, MaxQueuedBytes: 256 << 20},
		TLS:             server.TLSConfig{ReloadInterval: 5 * time.Second},
		Limits: server.Limits{
			MaxConns: 100000, MaxConnsPerIP: 1000, MaxConnsPerVisitor: 100, MaxFrameBytes: 4096,
			FrameRate: 20, FrameBurst: 80, HandshakeTimeout: 5 * time.Second,
			MaxHTTPConns: 10000, MaxHTTPConnsPerIP: 1000, MaxGRPCConns: 1000, MaxGRPCConnsPerIP: 100,
			MaxGRPCStreams: 256, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 16384, SendBuffer: 65536,
		},
	}
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(*server.Config) // changes from defaults()
	}{
		{name: "defaults", want: func(*server.Config) {}},
		{
			name: "env overrides defaults",
			env: map[string]string{
				"SWITCHBOARD_HTTP_ADDR":        "127.0.0.1:1",
				"SWITCHBOARD_GRPC_ADDR":        "0.0.0.0:2",
				"SWITCHBOARD_API_TOKEN":        " s3cret ",
				"SWITCHBOARD_INSECURE":         "true",
				"SWITCHBOARD_ALLOWED_ORIGINS":  "example.com, *.example.org,,",
				"SWITCHBOARD_KEEPALIVE":        "5s",
				"SWITCHBOARD_COUNT_INTERVAL":   "250ms",
				"SWITCHBOARD_SHUTDOWN_TIMEOUT": "3s",
				"SWITCHBOARD_MAX_DATA_BYTES":   "1024",
				"SWITCHBOARD_PRIMARY_ADDR":     "primary:9090",
				"SWITCHBOARD_HAND_BACK_SPREAD": "5s",
				"SWITCHBOARD_STANDBY_WAIT":     "3s",
				"SWITCHBOARD_HISTORY_SIZE":     "0",
				"SWITCHBOARD_HISTORY_TTL":      "1h",
				"SWITCHBOARD_TOKEN_SECRET":     " shh ",
				"SWITCHBOARD_REQUIRE_TOKEN":    "true",
			},
			want: func(c *server.Config) {
				c.PrimaryAddr, c.HandBackSpread, c.StandbyWait = "primary:9090", 5*time.Second, 3*time.Second
				c.Hub.HistorySize, c.Hub.HistoryTTL = -1, time.Hour
				c.HTTPAddr, c.GRPCAddr, c.APIToken, c.Insecure = "127.0.0.1:1", "0.0.0.0:2", "s3cret", true
				c.TokenSecret, c.RequireToken = "shh", true
				c.AllowedOrigins = []string{"example.com", "*.example.org"}
				c.KeepAlive, c.Hub.CountInterval, c.ShutdownTimeout, c.MaxDataBytes = 5*time.Second, 250*time.Millisecond, 3*time.Second, 1024
			},
		},
		{
			name: "an empty variable is unset",
			env:  map[string]string{"SWITCHBOARD_HTTP_ADDR": "", "SWITCHBOARD_KEEPALIVE": ""},
			want: func(*server.Config) {},
		},
		{
			name: "flags override env",
			args: []string{
				"--http-addr=127.0.0.1:3", "--grpc-addr", "127.0.0.1:4", "--api-token=flag-token", "--insecure=false",
				"--allowed-origins=*", "--keepalive=7s", "-count-interval=1s", "--shutdown-timeout=4s", "--max-data-bytes=2048",
				"--primary-addr=10.0.0.1:9090", "--hand-back-spread=1s", "--history-size=50", "--history-ttl=30s",
			},
			env: map[string]string{
				"SWITCHBOARD_HTTP_ADDR":        "127.0.0.1:1",
				"SWITCHBOARD_GRPC_ADDR":        "0.0.0.0:2",
				"SWITCHBOARD_API_TOKEN":        "env-token",
				"SWITCHBOARD_INSECURE":         "true",
				"SWITCHBOARD_ALLOWED_ORIGINS":  "example.com",
				"SWITCHBOARD_KEEPALIVE":        "5s",
				"SWITCHBOARD_COUNT_INTERVAL":   "250ms",
				"SWITCHBOARD_SHUTDOWN_TIMEOUT": "3s",
				"SWITCHBOARD_MAX_DATA_BYTES":   "1024",
				"SWITCHBOARD_PRIMARY_ADDR":     "primary:9090",
				"SWITCHBOARD_HAND_BACK_SPREAD": "5s",
			},
			want: func(c *server.Config) {
				c.PrimaryAddr, c.HandBackSpread = "10.0.0.1:9090", time.Second
				c.Hub.HistorySize, c.Hub.HistoryTTL = 50, 30*time.Second
				c.HTTPAddr, c.GRPCAddr, c.APIToken, c.Insecure = "127.0.0.1:3", "127.0.0.1:4", "flag-token", false
				c.AllowedOrigins = []string{"*"}
				c.KeepAlive, c.Hub.CountInterval, c.ShutdownTimeout, c.MaxDataBytes = 7*time.Second, time.Second, 4*time.Second, 2048
			},
		},
		{
			name: "insecure is a switch",
			args: []string{"--insecure", "--grpc-addr=0.0.0.0:9090"},
			want: func(c *server.Config) { c.Insecure, c.GRPCAddr = true, "0.0.0.0:9090" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			got, logger, err := parseConfig(tt.args, env(tt.env), &stderr)
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			if logger == nil || got.Logger != logger {
				t.Errorf("parseConfig returned logger %p and Config.Logger %p; want the same non-nil logger", logger, got.Logger)
			}
			got.Logger = nil
			want := defaults()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseConfig = %+v; want %+v", got, want)
			}
			if stderr.Len() != 0 {
				t.Errorf("parseConfig wrote %q; want nothing", stderr.String())
			}
		})
	}
}

func TestParseConfigLogger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		minLevel slog.Level
		json     bool
	}{
		{name: "defaults", minLevel: slog.LevelInfo},
		{name: "env", env: map[string]string{"SWITCHBOARD_LOG_LEVEL": "debug", "SWITCHBOARD_LOG_FORMAT": "json"}, minLevel: slog.LevelDebug, json: true},
		{name: "flag over env", args: []string{"--log-level=WARN", "--log-format=text"}, env: map[string]string{"SWITCHBOARD_LOG_LEVEL": "debug", "SWITCHBOARD_LOG_FORMAT": "json"}, minLevel: slog.LevelWarn},
		{name: "error level", args: []string{"--log-level", "error"}, minLevel: slog.LevelError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			_, logger, err := parseConfig(tt.args, env(tt.env), &stderr)
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			ctx := context.Background()
			if !logger.Enabled(ctx, tt.minLevel) || logger.Enabled(ctx, tt.minLevel-1) {
				t.Errorf("logger enabled at %v: %v, at %v: %v; want only from %v", tt.minLevel, logger.Enabled(ctx, tt.minLevel), tt.minLevel-1, logger.Enabled(ctx, tt.minLevel-1), tt.minLevel)
			}
			logger.Error("hello")
			out := stderr.String()
			if gotJSON := strings.HasPrefix(out, "{"); gotJSON != tt.json || !strings.Contains(out, "hello") {
				t.Errorf("logger wrote %q; want JSON %v", out, tt.json)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		flag, env, value string
	}{
		{"keepalive", "SWITCHBOARD_KEEPALIVE", "soon"},
		{"keepalive", "SWITCHBOARD_KEEPALIVE", "0s"},
		{"count-interval", "SWITCHBOARD_COUNT_INTERVAL", "-1s"},
		{"count-interval", "SWITCHBOARD_COUNT_INTERVAL", "100"},
		{"shutdown-timeout", "SWITCHBOARD_SHUTDOWN_TIMEOUT", "ten seconds"},
		{"insecure", "SWITCHBOARD_INSECURE", "maybe"},
		{"hand-back-spread", "SWITCHBOARD_HAND_BACK_SPREAD", "0"},
		{"max-data-bytes", "SWITCHBOARD_MAX_DATA_BYTES", "64k"},
		{"max-data-bytes", "SWITCHBOARD_MAX_DATA_BYTES", "0"},
		{"log-level", "SWITCHBOARD_LOG_LEVEL", "loud"},
		{"log-format", "SWITCHBOARD_LOG_FORMAT", "xml"},
		{"standby-wait", "SWITCHBOARD_STANDBY_WAIT", "-1s"},
		{"standby-wait", "SWITCHBOARD_STANDBY_WAIT", "3"},
		{"history-size", "SWITCHBOARD_HISTORY_SIZE", "-1"},
		{"history-size", "SWITCHBOARD_HISTORY_SIZE", "1000001"},
		{"history-size", "SWITCHBOARD_HISTORY_SIZE", "lots"},
		{"history-ttl", "SWITCHBOARD_HISTORY_TTL", "0"},
		{"require-token", "SWITCHBOARD_REQUIRE_TOKEN", "yes"},
		{"require-token", "SWITCHBOARD_REQUIRE_TOKEN", "true"}, // without a secret
		{"max-conns-per-visitor", "SWITCHBOARD_MAX_CONNS_PER_VISITOR", "-1"},
	}
	for _, tt := range tests {
		for _, from := range []string{"flag", "env"} {
			t.Run(tt.flag+"="+tt.value+" from "+from, func(t *testing.T) {
				t.Parallel()
				var args []string
				vars := map[string]string{}
				if from == "flag" {
					args = []string{"--" + tt.flag + "=" + tt.value}
				} else {
					vars[tt.env] = tt.value
				}
				_, _, err := parseConfig(args, env(vars), new(bytes.Buffer))
				if err == nil {
					t.Fatalf("parseConfig succeeded; want an error")
				}
				for _, want := range []string{"--" + tt.flag, tt.env, tt.value} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
			})
		}
	}
}

func TestParseConfigReportsEveryError(t *testing.T) {
	t.Parallel()
	_, _, err := parseConfig([]string{"--keepalive=x", "--log-level=y"}, env(map[string]string{"SWITCHBOARD_INSECURE": "z"}), new(bytes.Buffer))
	if err == nil {
		t.Fatal("parseConfig succeeded; want an error")
	}
	for _, want := range []string{"--keepalive", "--log-level", "SWITCHBOARD_INSECURE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestParseConfigArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string // in the error
		wantOut string // in stderr
	}{
		{name: "unexpected argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "argument after flags", args: []string{"--keepalive=5s", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "-nope", wantOut: "Usage: switchboard"},
		{name: "missing value", args: []string{"--http-addr"}, wantErr: "http-addr", wantOut: "Usage: switchboard"},
		{name: "help", args: []string{"-h"}, wantErr: flag.ErrHelp.Error(), wantOut: "SWITCHBOARD_API_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			_, _, err := parseConfig(tt.args, env(nil), &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseConfig(%q) error = %v; want one containing %q", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(stderr.String(), tt.wantOut) {
				t.Errorf("parseConfig(%q) wrote %q; want it to contain %q", tt.args, stderr.String(), tt.wantOut)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    int
		wantOut string
	}{
		{name: "help", args: []string{"-h"}, want: 0, wantOut: "Usage: switchboard"},
		{name: "bad flag", args: []string{"--keepalive=soon"}, want: 2, wantOut: "--keepalive"},
		{name: "unexpected argument", args: []string{"serve"}, want: 2, wantOut: "serve"},
		{
			name:    "open gRPC without a token",
			env:     map[string]string{"SWITCHBOARD_HTTP_ADDR": "127.0.0.1:0", "SWITCHBOARD_GRPC_ADDR": "0.0.0.0:0"},
			want:    1,
			wantOut: "SWITCHBOARD_API_TOKEN",
		},
		{
			name:    "invalid address",
			env:     map[string]string{"SWITCHBOARD_HTTP_ADDR": "127.0.0.1:0", "SWITCHBOARD_GRPC_ADDR": "127.0.0.1:-1"},
			want:    1,
			wantOut: "failed to start",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			if got := run(tt.args, env(tt.env), &stderr); got != tt.want {
				t.Errorf("run = %d; want %d (stderr: %s)", got, tt.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantOut) {
				t.Errorf("run wrote %q; want it to contain %q", stderr.String(), tt.wantOut)
			}
		})
	}
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/server"
)

// option is one setting with its flag and environment variable. An option
// whose default is "false" or "true" is a switch: "--insecure" alone means
// true.
type option struct {
	flag, env, def, usage string
}

func (o option) boolean() bool { return o.def == "false" || o.def == "true" }

var options = []option{
	{"http-addr", "SWITCHBOARD_HTTP_ADDR", ":8080", "HTTP listener: /ws, /client.js, /healthz, /readyz, /metrics"},
	{"grpc-addr", "SWITCHBOARD_GRPC_ADDR", "", "gRPC listener (default :9090 with a token, 127.0.0.1:9090 without)"},
	{"api-token", "SWITCHBOARD_API_TOKEN", "", "bearer token every gRPC caller must present (health and reflection excepted)"},
	{"token-secret", "SWITCHBOARD_TOKEN_SECRET", "", "secret of the HS256 identity tokens web servers give browsers (?token=); unset: every token is refused"},
	{"require-token", "SWITCHBOARD_REQUIRE_TOKEN", "false", "refuse browsers without a valid identity token (401)"},
	{"insecure", "SWITCHBOARD_INSECURE", "false", "allow a non-loopback gRPC address without a token"},
	{"allowed-origins", "SWITCHBOARD_ALLOWED_ORIGINS", "", "comma list of browser origins allowed besides the same host; * allows any"},
	{"keepalive", "SWITCHBOARD_KEEPALIVE", "20s", "longest a browser whose network vanished keeps counting"},
	{"count-interval", "SWITCHBOARD_COUNT_INTERVAL", "100ms", "shortest time between two count frames to browsers"},
	{"shutdown-timeout", "SWITCHBOARD_SHUTDOWN_TIMEOUT", "10s", "deadline for a graceful shutdown"},
	{"max-data-bytes", "SWITCHBOARD_MAX_DATA_BYTES", "65536", "largest message data, as JSON"},
	{"primary-addr", "SWITCHBOARD_PRIMARY_ADDR", "", "the primary's gRPC address; setting it makes this node the standby"},
	{"hand-back-spread", "SWITCHBOARD_HAND_BACK_SPREAD", "3s", "window over which a standby hands its browsers back to the primary"},
	{"standby-wait", "SWITCHBOARD_STANDBY_WAIT", "0s", "on a primary with a standby: how long to wait at start for the standby's message log before serving alone (3s in a pair; 0: no standby)"},
	{"history-size", "SWITCHBOARD_HISTORY_SIZE", "1000", "messages kept for browsers that reconnect or subscribe with last (0: history and recovery off)"},
	{"history-ttl", "SWITCHBOARD_HISTORY_TTL", "5m", "how long a message stays in the history"},
	{"nats-url", "SWITCHBOARD_NATS_URL", "", "comma list of NATS server URLs; setting it makes this node a cluster member"},
	{"cluster-name", "SWITCHBOARD_CLUSTER_NAME", "switchboard", "cluster name: members with the same name on one NATS share counts and messages"},
	{"node-name", "SWITCHBOARD_NODE_NAME", "", "this member's name in the cluster, stable across restarts (default: the host name)"},
	{"nats-creds", "SWITCHBOARD_NATS_CREDS", "", "NATS credentials file (user JWT and seed), for a NATS that requires them"},
	{"nats-ca", "SWITCHBOARD_NATS_CA", "", "PEM CAs of the NATS servers' certificates: connect to NATS over TLS"},
	{"nats-replicas", "SWITCHBOARD_NATS_REPLICAS", "1", "NATS servers that hold the cluster's log: 1, or 3 for a three-server NATS cluster"},
	{"max-conns", "SWITCHBOARD_MAX_CONNS", "100000", "most browser connections; past it upgrades get 503 (0: no limit)"},
	{"max-conns-per-ip", "SWITCHBOARD_MAX_CONNS_PER_IP", "1000", "most browser connections from one address; past it upgrades get 429 (0: no limit)"},
	{"max-conns-per-visitor", "SWITCHBOARD_MAX_CONNS_PER_VISITOR", "100", "most browser connections of one visitor (token subject or anonymous id); past it upgrades get 429 (0: no limit)"},
	{"trusted-proxies", "SWITCHBOARD_TRUSTED_PROXIES", "", "comma list of proxy CIDRs whose X-Forwarded-For names the client address"},
	{"max-subscriptions", "SWITCHBOARD_MAX_SUBSCRIPTIONS", "64", "most channels one browser may subscribe to (1008 past it)"},
	{"max-frame-bytes", "SWITCHBOARD_MAX_FRAME_BYTES", "4096", "largest frame a browser may send (1009 past it)"},
	{"frame-rate", "SWITCHBOARD_FRAME_RATE", "20/s", "frames a browser may send, such as 20/s (1008 past it; off: no limit)"},
	{"frame-burst", "SWITCHBOARD_FRAME_BURST", "80", "frames a browser may send at once"},
	{"emit-rate", "SWITCHBOARD_EMIT_RATE", "off", "EmitMessage calls per caller (token, or address without one), such as 100/s (RESOURCE_EXHAUSTED past it)"},
	{"emit-burst", "SWITCHBOARD_EMIT_BURST", "0", "EmitMessage calls a caller may make at once (0: one second's worth)"},
	{"handshake-timeout", "SWITCHBOARD_HANDSHAKE_TIMEOUT", "5s", "time a client has to send its HTTP request headers or gRPC preface"},
	{"tls-cert", "SWITCHBOARD_TLS_CERT", "", "PEM certificate chain: serves HTTP (wss://) and gRPC over TLS; re-read on SIGHUP and when it changes"},
	{"tls-key", "SWITCHBOARD_TLS_KEY", "", "PEM private key of --tls-cert"},
	{"grpc-tls-cert", "SWITCHBOARD_GRPC_TLS_CERT", "", "PEM certificate chain for the gRPC listener only (default: --tls-cert)"},
	{"grpc-tls-key", "SWITCHBOARD_GRPC_TLS_KEY", "", "PEM private key of --grpc-tls-cert"},
	{"grpc-client-ca", "SWITCHBOARD_GRPC_CLIENT_CA", "", "PEM CA certificates: gRPC callers must present a client certificate they signed (mutual TLS)"},
	{"tls-reload-interval", "SWITCHBOARD_TLS_RELOAD_INTERVAL", "5s", "how often the TLS files are checked for changes"},
	{"primary-ca", "SWITCHBOARD_PRIMARY_CA", "", "PEM CAs of the primary's gRPC certificate: a standby then watches its primary over TLS"},
	{"admin-addr", "SWITCHBOARD_ADMIN_ADDR", "", "admin listener serving the operator's page (/), /debug/pprof/ and /metrics, such as 127.0.0.1:6060 (default: off)"},
	{"log-format", "SWITCHBOARD_LOG_FORMAT", "text", "log format: text or json"},
	{"log-level", "SWITCHBOARD_LOG_LEVEL", "info", "log level: debug, info, warn or error"},
	{"max-http-conns", "SWITCHBOARD_MAX_HTTP_CONNS", "10000", "most HTTP connections that are not WebSockets; past it, 503 at accept (0: no limit)"},
	{"max-http-conns-per-ip", "SWITCHBOARD_MAX_HTTP_CONNS_PER_IP", "1000", "most of them from one address; past it, 429 at accept (0: no limit)"},
	{"max-grpc-conns", "SWITCHBOARD_MAX_GRPC_CONNS", "1000", "most gRPC connections; past it, RESOURCE_EXHAUSTED at accept (0: no limit)"},
	{"max-grpc-conns-per-ip", "SWITCHBOARD_MAX_GRPC_CONNS_PER_IP", "100", "most gRPC connections from one address (0: no limit)"},
	{"max-grpc-streams", "SWITCHBOARD_MAX_GRPC_STREAMS", "256", "most gRPC calls in progress on one connection"},
	{"idle-timeout", "SWITCHBOARD_IDLE_TIMEOUT", "30s", "an idle HTTP keep-alive, or a gRPC connection without a call, is closed after this"},
	{"max-header-bytes", "SWITCHBOARD_MAX_HEADER_BYTES", "16384", "largest HTTP request headers (431 past it) and gRPC metadata"},
	{"send-buffer", "SWITCHBOARD_SEND_BUFFER", "65536", "kernel send buffer of each browser connection (0: the system's)"},
	{"max-queued-bytes", "SWITCHBOARD_MAX_QUEUED_BYTES", "268435456", "bytes queued to browsers that fell behind, in all; past it the furthest behind get 1013 (0: no limit)"},
	{"public-metrics", "SWITCHBOARD_PUBLIC_METRICS", "true", "serve /metrics on the HTTP listener too (false: on the admin listener only)"},
}

// usageHead opens the help that -h prints, above the options.
const usageHead = `Usage: switchboard [flags]
       switchboard healthcheck [--ready] [--http-addr addr]
       switchboard version

A Switchboard node. Browsers load the library from /client.js and connect
to /ws on --http-addr; web servers call the gRPC API on --grpc-addr.

Every flag can also be set by its environment variable; flags win.

`

// parseConfig reads flags over environment variables over defaults. Every
// invalid value is reported, each naming its flag and variable.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (server.Config, *slog.Logger, error) {
	fs := flag.NewFlagSet("switchboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		for _, o := range options {
			fmt.Fprintf(stderr, "  --%s (%s, default %q)\n      %s\n", o.flag, o.env, o.def, o.usage)
		}
	}
	vals := make(map[string]*flagValue, len(options))
	for _, o := range options {
		v := &flagValue{s: o.def, boolean: o.boolean()}
		if e, ok := lookup(getenv, o.env); ok {
			v.s = e
		}
		fs.Var(v, o.flag, o.usage)
		vals[o.flag] = v
	}
	if err := fs.Parse(args); err != nil {
		return server.Config{}, nil, err
	}
	if fs.NArg() > 0 {
		return server.Config{}, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	get := func(name string) string { return strings.TrimSpace(vals[name].s) }

	cfg := server.Config{
		HTTPAddr:    get("http-addr"),
		GRPCAddr:    get("grpc-addr"),
		APIToken:    get("api-token"),
		TokenSecret: get("token-secret"),
		PrimaryAddr: get("primary-addr"),
	}
	var errs []error
	parse := func(name string, fn func(string) error) {
		if err := fn(get(name)); err != nil {
			o := optionByFlag(name)
			errs = append(errs, fmt.Errorf("invalid --%s / %s %q: %w", o.flag, o.env, get(name), err))
		}
	}
	parse("insecure", func(s string) (err error) {
		if cfg.Insecure, err = strconv.ParseBool(s); err != nil {
			return errors.New("want true or false")
		}
		return nil
	})
	parse("require-token", func(s string) (err error) {
		if cfg.RequireToken, err = strconv.ParseBool(s); err != nil {
			return errors.New("want true or false")
		}
		if cfg.RequireToken && cfg.TokenSecret == "" {
			return errors.New("needs --token-secret / SWITCHBOARD_TOKEN_SECRET: without it no token is valid")
		}
		return nil
	})
	parse("keepalive", positiveDuration(&cfg.KeepAlive))
	parse("count-interval", positiveDuration(&cfg.Hub.CountInterval))
	parse("shutdown-timeout", positiveDuration(&cfg.ShutdownTimeout))
	parse("hand-back-spread", positiveDuration(&cfg.HandBackSpread))
	parse("standby-wait", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return errors.New("want a duration such as 3s, or 0 for none")
		}
		cfg.StandbyWait = d
		return nil
	})
	parse("history-size", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxHistorySize {
			return fmt.Errorf("want a number of messages from 0 (off) to %d", maxHistorySize)
		}
		cfg.Hub.HistorySize = n
		if n == 0 {
			cfg.Hub.HistorySize = -1
		}
		return nil
	})
	parse("history-ttl", positiveDuration(&cfg.Hub.HistoryTTL))
	parseCluster(&cfg, get, parse)
	parseTLS(&cfg, get, parse)
	parseLimits(&cfg, parse)
	parse("max-data-bytes", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return errors.New("want a positive number of bytes")
		}
		cfg.MaxDataBytes = n
		return nil
	})
	parse("log-format", func(s string) error {
		if s != "text" && s != "json" {
			return errors.New("want text or json")
		}
		return nil
	})
	var level slog.Level
	parse("log-level", func(s string) error {
		if level.UnmarshalText([]byte(s)) != nil {
			return errors.New("want debug, info, warn or error")
		}
		return nil
	})
	parse("allowed-origins", parseOrigins(&cfg.AllowedOrigins))
	if vals["token-secret"].s != "" && cfg.TokenSecret == "" {
		o := optionByFlag("token-secret")
		errs = append(errs, fmt.Errorf("invalid --%s / %s: only spaces; set a secret, or unset it to take no token", o.flag, o.env))
	}
	if vals["api-token"].s != "" && cfg.APIToken == "" {
		o := optionByFlag("api-token")
		errs = append(errs, fmt.Errorf("invalid --%s / %s: only spaces; set a token, or unset it to run without one", o.flag, o.env))
	}
	if len(errs) > 0 {
		return server.Config{}, nil, errors.Join(errs...)
	}
	cfg.Logger = newLogger(stderr, get("log-format"), level)
	return cfg, cfg.Logger, nil
}

// flagValue is a flag's text, checked after parsing so that a value from
// the environment and one from the command line fail the same way.
type flagValue struct {
	s       string
	boolean bool
}

func (v *flagValue) String() string {
	if v == nil {
		return ""
	}
	return v.s
}

func (v *flagValue) Set(s string) error { v.s = s; return nil }

// IsBoolFlag lets a boolean option be given as a bare switch.
func (v *flagValue) IsBoolFlag() bool { return v.boolean }

// lookup returns the value of the environment variable name, ignoring it
// when empty.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func optionByFlag(name string) option {
	for _, o := range options {
		if o.flag == name {
			return o
		}
	}
	panic("unknown option " + name)
}

// maxHistorySize bounds the history: every message it holds keeps its
// frame, up to the data limit, in memory.
const maxHistorySize = 1_000_000

func positiveDuration(dst *time.Duration) func(string) error {
	return func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 500ms or 20s")
		}
		*dst = d
		return nil
	}
}

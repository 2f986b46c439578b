//go:build linux

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-rt/switchboard/internal/attack"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, so that a test can call it.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("swbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	var asJSON bool
	var cpuProfile string
	fs.StringVar(&cfg.Target, "target", TargetSwitchboard, "server kind: switchboard, or socketio for the reference app in bench/socketio")
	fs.StringVar(&cfg.WSURL, "ws", "ws://127.0.0.1:8080/ws", "Switchboard WebSocket URL, or a comma list of a cluster's nodes' (clients spread over them in turn)")
	fs.StringVar(&cfg.GRPCAddr, "grpc", "127.0.0.1:9090", "Switchboard gRPC address, or a comma list of a cluster's nodes' (emits spread over them in turn)")
	fs.StringVar(&cfg.Token, "token", "", "gRPC API token (default: $SWITCHBOARD_API_TOKEN)")
	fs.StringVar(&cfg.Origin, "origin", "", "Origin header to send on WebSocket upgrades (none by default)")
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:3000", "socket.io app base URL (-target socketio)")
	fs.IntVar(&cfg.Clients, "clients", 100, "number of WebSocket clients")
	fs.IntVar(&cfg.Dialers, "dialers", 256, "connects in progress at once")
	fs.Float64Var(&cfg.Ramp, "ramp", 0, "connects per second at most (0: as fast as -dialers allow)")
	fs.IntVar(&cfg.DialRetries, "dial-retries", 5, "retries of a failed connect, with backoff")
	fs.IntVar(&cfg.Emits, "emits", 100, "messages to publish (0: idle run)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "emits per second (0: as fast as -inflight allows)")
	fs.IntVar(&cfg.Inflight, "inflight", 0, "emits outstanding at once (default 1, sequential; 16 with -rate)")
	fs.IntVar(&cfg.Payload, "payload", 128, "approximate message data size in bytes, as JSON")
	fs.IntVar(&cfg.Visitors, "visitors", 0, "give the clients this many anonymous visitor ids, in turn, and check every client is told that many visitors (Switchboard only)")
	fs.StringVar(&cfg.Channel, "channel", "", "subscribe every client to this channel and emit to it (Switchboard only)")
	fs.DurationVar(&cfg.Hold, "hold", 0, "stay connected this long after counting, before emitting (idle memory: -emits 0 -hold 10s)")
	fs.Func("pid", "server process to sample for CPU (/proc/PID/stat) and RSS (/proc/PID/status), or a comma list of a cluster's nodes' (summed)", func(s string) error {
		for i, item := range splitList(s) {
			pid, err := strconv.Atoi(item)
			if err != nil || pid <= 0 {
				return fmt.Errorf("want process ids, got %q", item)
			}
			if i == 0 {
				cfg.PID = pid
			} else {
				cfg.PIDs = append(cfg.PIDs, pid)
			}
		}
		return nil
	})
	fs.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "limit for connecting and counting, and for the deliveries after the last emit")
	fs.BoolVar(&asJSON, "json", false, "also print the result as one JSON line")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write swbench's own CPU profile to this file (is the load side the bottleneck?)")
	var ac attackConfig
	fs.StringVar(&ac.Mode, "attack", "", "run an attack instead of a benchmark: "+strings.Join(attack.Modes, ", "))
	fs.IntVar(&ac.Size.Conns, "attack-conns", 0, "attack connections (default: the mode's)")
	fs.IntVar(&ac.Size.Streams, "attack-streams", 0, "attack streams per connection (grpc-streams, grpc-metadata)")
	fs.IntVar(&ac.Size.Workers, "attack-workers", 0, "attack requests in flight (grpc-big-requests, bad-token, bad-origin, metrics-scrape)")
	fs.IntVar(&ac.Size.Bytes, "attack-bytes", 0, "bytes per attack request (bad-origin, big-headers, grpc-big-requests)")
	fs.DurationVar(&ac.Duration, "attack-for", 10*time.Second, "how long the attack lasts")
	fs.DurationVar(&ac.Settle, "settle", 3*time.Second, "quiet time measured before and after the attack")
	fs.StringVar(&ac.From, "from", "", "source address of the attack (default 127.0.0.1 against loopback)")
	fs.StringVar(&ac.BystanderFrom, "bystander-from", "", "source address of the bystander and its emits (default 127.0.0.2 against loopback)")
	fs.StringVar(&ac.Metrics, "metrics", "", "the node's /metrics URL, for its heap and goroutines (default: http://HOST/metrics of -ws)")
	fs.StringVar(&ac.LogFile, "log", "", "the file the node logs to: reports how much it grew during the attack")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: swbench [flags]\n\n"+
			"Opens -clients WebSocket clients, waits until each is told the full count, publishes\n"+
			"-emits messages and checks every client got each once and in order. Exits 1 on any\n"+
			"loss, duplicate or reordering, 2 on bad flags.\n\n"+
			"  swbench -clients 1000 -emits 200 -pid $(pgrep -n switchboard)\n"+
			"  swbench -clients 10000 -emits 0 -hold 10s -pid $PID\n"+
			"  swbench -target socketio -url http://127.0.0.1:3000 -clients 1000 -emits 200\n"+
			"  swbench -attack slow-readers -payload 61440 -pid $PID -metrics http://127.0.0.1:6060/metrics\n\n"+
			"With -attack it loads the node as an attacker would instead (see README.md, Limits) and\n"+
			"reports what that cost a bystander and the node.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if cfg.Token == "" {
		cfg.Token = os.Getenv("SWITCHBOARD_API_TOKEN")
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "swbench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if n, err := raiseNoFile(); err != nil {
		fmt.Fprintf(stderr, "swbench: %v\n", err)
	} else if uint64(cfg.Clients)+64 > n {
		fmt.Fprintf(stderr, "swbench: warning: %d clients but only %d file descriptors (ulimit -Hn)\n", cfg.Clients, n)
	}
	cfg.Logf = func(format string, args ...any) {
		fmt.Fprintf(stderr, "swbench: "+format+"\n", args...)
	}

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "swbench: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "swbench: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if ac.Mode != "" {
		if _, err := attack.New(ac.Mode, ac.Size); err != nil {
			fmt.Fprintf(stderr, "swbench: %v\n", err)
			return 2
		}
		ac.Payload = cfg.Payload
		ac.Rate = cfg.Rate
		if ac.Rate == 0 {
			ac.Rate = 10
		}
		ws, _ := url.Parse(cfg.WSURL)
		if ws != nil && isLoopback(ws.Host) {
			ac.From = cmp.Or(ac.From, "127.0.0.1")
			ac.BystanderFrom = cmp.Or(ac.BystanderFrom, "127.0.0.2")
		}
		if ac.Metrics == "" && ws != nil {
			ac.Metrics = "http://" + ws.Host + "/metrics"
		}
		if err := runAttack(ctx, cfg, ac, stdout); err != nil {
			fmt.Fprintf(stderr, "swbench: %v\n", err)
			return 1
		}
		return 0
	}
	res, err := Run(ctx, cfg)
	if res.Target != "" {
		res.print(stdout)
		if asJSON {
			b, _ := json.Marshal(res)
			fmt.Fprintf(stdout, "%s\n", b)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "\n!!! swbench FAILED: %v\n", err)
		if res.FirstDisconnect != "" {
			fmt.Fprintf(stderr, "!!! first disconnect: %s\n", res.FirstDisconnect)
		}
		return 1
	}
	return 0
}

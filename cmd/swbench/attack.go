//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-rt/switchboard/internal/attack"
)

// attackConfig describes one -attack run.
type attackConfig struct {
	Mode string
	Size attack.Size
	// Duration is how long the attack lasts, Settle how long the quiet
	// phases before and after it last.
	Duration, Settle time.Duration
	// From is the attack's source address, BystanderFrom the bystander's
	// and the publisher's.
	From, BystanderFrom string
	// Metrics is the URL of the node's /metrics, for its heap and
	// goroutines; LogFile the file the node logs to, to measure its growth.
	Metrics, LogFile string
	// Payload and Rate size the bystander's messages.
	Payload int
	Rate    float64
}

// runAttack measures the node before, during and after one attack: what
// the attack's connections were answered, how a bystander browser fared
// (a WebSocket client receiving the publisher's Rate emits a second), the
// node's memory, goroutines, descriptors and CPU, newcomers' latency, and
// how much the node logged.
func runAttack(ctx context.Context, cfg Config, ac attackConfig, stdout io.Writer) error {
	u, err := url.Parse(cfg.WSURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("invalid -ws %q", cfg.WSURL)
	}
	t := attack.Target{HTTP: u.Host, GRPC: cfg.GRPCAddr, From: ac.From}
	a, err := attack.New(ac.Mode, ac.Size)
	if err != nil {
		return err
	}
	bystanderAt := attack.Target{HTTP: t.HTTP, GRPC: t.GRPC, From: ac.BystanderFrom}

	by, err := attack.Connect(ctx, t.HTTP, ac.BystanderFrom, cfg.Origin)
	if err != nil {
		return fmt.Errorf("failed to connect the bystander: %w", err)
	}
	defer by.Close()
	pub := &attack.Publisher{GRPC: t.GRPC, From: ac.BystanderFrom, Token: cfg.Token, Rate: ac.Rate, Bytes: ac.Payload}
	smp := &attack.Sampler{PID: cfg.PID, Metrics: ac.Metrics, From: ac.BystanderFrom}
	smp.SetPhase("before")

	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pub.Run(bg) }()
	go func() { defer wg.Done(); smp.Run(bg) }()
	defer func() { stopBG(); wg.Wait() }()

	logSize := func() int64 {
		if ac.LogFile == "" {
			return -1
		}
		fi, err := os.Stat(ac.LogFile)
		if err != nil {
			return -1
		}
		return fi.Size()
	}

	before := scrapeCounters(ac.Metrics, ac.BystanderFrom)
	fmt.Fprintf(stdout, "attack %s from %s on %s (HTTP) and %s (gRPC), %v; bystander from %s, %g emits/s of %d B\n",
		ac.Mode, orAny(ac.From), t.HTTP, t.GRPC, ac.Duration, orAny(ac.BystanderFrom), ac.Rate, ac.Payload)
	sleep(ctx, ac.Settle)
	t0 := time.Now()
	log0 := logSize()
	smp.SetPhase("during")
	cpu0 := selfCPU()

	actx, stopAttack := context.WithTimeout(ctx, ac.Duration)
	defer stopAttack()
	var tally attack.Tally
	attackErr := make(chan error, 1)
	go func() { attackErr <- a.Run(actx, t, &tally) }()
	var probes []attack.Probe
	for {
		select {
		case <-actx.Done():
		case <-time.After(time.Second):
			probes = append(probes, attack.ProbeNode(actx, bystanderAt, cfg.Token, 5*time.Second))
			continue
		}
		break
	}
	err = <-attackErr
	t1 := time.Now()
	log1 := logSize()
	attackerCPU := selfCPU() - cpu0
	smp.SetPhase("after")
	sleep(ctx, ac.Settle)
	t2 := time.Now()
	stopBG()
	wg.Wait()

	fmt.Fprintf(stdout, "answers: %s\n", tally.String())
	emits, got := pub.Emits(), by.Receipts()
	for _, w := range []struct {
		name     string
		from, to time.Time
	}{{"before", t0.Add(-ac.Settle), t0}, {"during", t0, t1}, {"after", t1, t2.Add(-time.Second)}} {
		fmt.Fprintf(stdout, "bystander %-7s %s\n", w.name, attack.MeasureDelays(emits, got, w.from, w.to))
	}
	if err := by.Err(); err != nil {
		fmt.Fprintf(stdout, "bystander disconnected: %v\n", err)
	}
	for _, p := range smp.Peaks() {
		fmt.Fprintf(stdout, "node %s\n", p)
	}
	fmt.Fprintf(stdout, "attacker CPU %.2fs (swbench, bystander included)\n", attackerCPU)
	var failed int
	var worst attack.Probe
	for _, p := range probes {
		if p.Healthz < 0 || p.Upgrade < 0 || p.GRPC < 0 {
			failed++
		}
		worst.Healthz, worst.Upgrade, worst.GRPC = worse(worst.Healthz, p.Healthz), worse(worst.Upgrade, p.Upgrade), worse(worst.GRPC, p.GRPC)
	}
	if len(probes) > 0 {
		fmt.Fprintf(stdout, "newcomers during the attack (%d probes, %d with a failure, 5s timeout): slowest %s\n", len(probes), failed, worst)
	}
	if after := scrapeCounters(ac.Metrics, ac.BystanderFrom); after != nil {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(after)) {
			if d := after[k] - before[k]; d > 0 {
				parts = append(parts, fmt.Sprintf("%s +%.0f", k, d))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(stdout, "node counters: %s\n", strings.Join(parts, ", "))
		}
	}
	if log0 >= 0 && log1 >= 0 {
		fmt.Fprintf(stdout, "node log: %d bytes during the attack (%.0f B/s)\n", log1-log0, float64(log1-log0)/t1.Sub(t0).Seconds())
	}
	return err
}

// worse returns the slower of two probe times, a failure (-1) being the
// slowest.
func worse(a, b time.Duration) time.Duration {
	if a < 0 || b < 0 {
		return -1
	}
	return max(a, b)
}

func orAny(addr string) string {
	if addr == "" {
		return "any address"
	}
	return addr
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// isLoopback reports whether host:port names a loopback address.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// scrapeCounters reads the node's counters of refusals and drops from
// its /metrics: the limit rejections by limit, slow disconnects and write
// failures. It returns nil when it cannot.
func scrapeCounters(metricsURL, from string) map[string]float64 {
	if metricsURL == "" {
		return nil
	}
	s := &attack.Sampler{Metrics: metricsURL, From: from}
	m := s.Scrape()
	if m == nil {
		return nil
	}
	out := make(map[string]float64)
	for k, v := range m {
		if strings.HasPrefix(k, "switchboard_limit_rejections_total") || k == "switchboard_slow_disconnects_total" || k == "switchboard_write_failures_total" {
			out[strings.TrimPrefix(k, "switchboard_")] = v
		}
	}
	return out
}

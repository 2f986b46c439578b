package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// healthcheck probes the node at SWITCHBOARD_HTTP_ADDR (or --http-addr):
// /healthz by default, which a passive standby also passes, or /readyz
// with --ready. It returns 0 when the node answers 200, 1 otherwise.
func healthcheck(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("switchboard healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http-addr", optionDefault(getenv, "http-addr"), "the node's HTTP address (SWITCHBOARD_HTTP_ADDR)")
	ready := fs.Bool("ready", false, "probe /readyz (serving browsers and emits) instead of /healthz (alive)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	url, err := probeURL(*addr, *ready)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard healthcheck: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "switchboard healthcheck: %s answered %s: %s\n", url, resp.Status, body)
		return 1
	}
	return 0
}

// probeURL turns a listen address into a URL to probe: an empty or
// unspecified host means the node listens everywhere, loopback included.
func probeURL(addr string, ready bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("invalid HTTP address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	path := "/healthz"
	if ready {
		path = "/readyz"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// optionDefault returns an option's value from the environment or its
// default.
func optionDefault(getenv func(string) string, flagName string) string {
	o := optionByFlag(flagName)
	if v, ok := lookup(getenv, o.env); ok {
		return v
	}
	return o.def
}

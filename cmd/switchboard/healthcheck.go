package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"time"
)

// healthcheck probes the node at SWITCHBOARD_HTTP_ADDR (or --http-addr):
// /healthz by default, which a passive standby also passes, or /readyz
// with --ready. It returns 0 when the node answers 200, 1 otherwise.
//
// When the node serves TLS (SWITCHBOARD_TLS_CERT is set, or --tls), it
// probes https. On a loopback address it does not verify the certificate:
// it sends nothing secret and only asks whether the local process
// answers, and a certificate rarely names 127.0.0.1. Elsewhere it
// verifies against the system's roots, or the CAs in --ca.
func healthcheck(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("switchboard healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http-addr", optionDefault(getenv, "http-addr"), "the node's HTTP address (SWITCHBOARD_HTTP_ADDR)")
	ready := fs.Bool("ready", false, "probe /readyz (serving browsers and emits) instead of /healthz (alive)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	useTLS := fs.Bool("tls", optionDefault(getenv, "tls-cert") != "", "probe over https (default: on when SWITCHBOARD_TLS_CERT is set)")
	caFile := fs.String("ca", "", "PEM CAs to verify a non-loopback node's certificate with (default: the system's)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	url, err := probeURL(*addr, *ready)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard healthcheck: %v\n", err)
		return 2
	}
	hc := http.DefaultClient
	if *useTLS {
		url = "https://" + strings.TrimPrefix(url, "http://")
		if hc, err = probeClient(url, *caFile); err != nil {
			fmt.Fprintf(stderr, "switchboard healthcheck: %v\n", err)
			return 2
		}
		defer hc.CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
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

// probeClient returns an HTTP client for a TLS probe of url: without
// certificate verification for a loopback host, and with the CAs in
// caFile (the system's when empty) otherwise.
func probeClient(rawURL, caFile string) (*http.Client, error) {
	u, err := neturl.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	host := u.Hostname()
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		tc.InsecureSkipVerify = true // loopback only: see healthcheck
	} else if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read --ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("failed to load --ca %s: no PEM certificate in it", caFile)
		}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, nil
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

// Package freeport finds loopback ports for tests whose processes listen
// a moment later.
//
// A port from 127.0.0.1:0 comes from the kernel's ephemeral range, which
// is also where outgoing connections take theirs: on a loopback busy with
// other tests' connections, another socket may take it between the test
// closing its probe and the process under test binding it. So Addr picks
// ports below that range, which only an explicit bind takes.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Addr returns a loopback address whose port was free a moment ago and
// lies below the kernel's ephemeral ports.
func Addr(t testing.TB) string {
	t.Helper()
	lo, hi := 20000, ephemeralStart()
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	t.Fatalf("no free loopback port between %d and %d", lo, hi)
	return ""
}

// ephemeralStart is the first ephemeral port on Linux (32768 unless
// configured otherwise), and at most 32768 elsewhere.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 21000 {
				return min(n, 32768)
			}
		}
	}
	return 32768
}

// Package freeport finds loopback ports for tests whose processes listen
// a moment later.
//
// A port from 127.0.0.1:0 comes from the kernel's ephemeral range, which
// is also where outgoing connections take theirs: on a loopback busy with
// other tests' connections, another socket may take it between the test
// closing its probe and the process under test binding it. So Addr picks
// ports below that range, which only an explicit bind takes.
//
// Test binaries run side by side, and two of them may probe the same port
// before either's process binds it. So a port is also claimed, for a few
// minutes, by a file of its own in a directory every test process shares,
// and no process hands out a port twice.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Addr returns a loopback address whose port was free a moment ago and
// lies below the kernel's ephemeral ports.
func Addr(t testing.TB) string {
	t.Helper()
	lo, hi := 20000, ephemeralStart()
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		if !claim(port) {
			continue
		}
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

// claimFor is how long a claimed port stays another process's: longer
// than any test takes to start what listens on it.
const claimFor = 5 * time.Minute

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// claim reports whether port is this process's to hand out: not given
// before here, and not claimed by another test process in the last
// claimFor. A directory that cannot be written claims nothing.
func claim(port int) bool {
	mu.Lock()
	defer mu.Unlock()
	if given[port] {
		return false
	}
	given[port] = true
	dir := filepath.Join(os.TempDir(), "switchboard-freeport")
	if os.MkdirAll(dir, 0o777) != nil {
		return true
	}
	name := filepath.Join(dir, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err == nil {
			f.Close()
			return true
		}
		if !os.IsExist(err) {
			return true
		}
		fi, err := os.Stat(name)
		if err != nil || time.Since(fi.ModTime()) < claimFor {
			return false
		}
		os.Remove(name) // an old claim: take it over
	}
	return false
}

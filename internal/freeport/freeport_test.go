package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestAddr(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		a := Addr(t)
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port < 20000 || port >= ephemeralStart() {
			t.Fatalf("Addr: port %d; want it below the ephemeral range, from 20000", port)
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("Addr gave %s, which cannot be bound: %v", a, err)
		}
		ln.Close()
		seen[a] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 calls gave %d distinct addresses; want them spread", len(seen))
	}
}

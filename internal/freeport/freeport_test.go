package freeport

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
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
	if len(seen) != 50 {
		t.Errorf("50 calls gave %d distinct addresses; want no address twice", len(seen))
	}
}

// TestClaimAcrossProcesses: a port another process claimed lately is not
// handed out; one it claimed long ago is.
func TestClaimAcrossProcesses(t *testing.T) {
	dir := filepath.Join(os.TempDir(), "switchboard-freeport")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	fresh, old := 19998, 19999 // below the range Addr picks from, so no Addr here takes them
	for _, p := range []int{fresh, old} {
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(p)), nil, 0o666); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(filepath.Join(dir, strconv.Itoa(p))) })
	}
	long := time.Now().Add(-2 * claimFor)
	if err := os.Chtimes(filepath.Join(dir, strconv.Itoa(old)), long, long); err != nil {
		t.Fatal(err)
	}
	if claim(fresh) {
		t.Error("claimed a port another process claimed a moment ago")
	}
	if !claim(old) {
		t.Error("refused a port whose claim is older than claimFor")
	}
	if claim(old) {
		t.Error("claimed the same port twice in one process")
	}
}

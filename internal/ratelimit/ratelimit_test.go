package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	b := NewBucket(10, 3, start)
	for i := range 3 {
		if !b.Allow(start) {
			t.Fatalf("event %d of the burst: got refused; want allowed", i)
		}
	}
	if b.Allow(start) {
		t.Fatalf("event past the burst: got allowed; want refused")
	}
	if b.Allow(start.Add(50 * time.Millisecond)) {
		t.Fatalf("half a token later: got allowed; want refused")
	}
	if !b.Allow(start.Add(100 * time.Millisecond)) {
		t.Fatalf("one token later: got refused; want allowed")
	}
	// A long pause refills up to the burst, not beyond.
	later := start.Add(time.Hour)
	n := 0
	for b.Allow(later) {
		n++
	}
	if n != 3 {
		t.Fatalf("after a long pause: got %d events; want 3", n)
	}
	// A clock going backwards takes nothing and gives nothing.
	if b.Allow(start) {
		t.Fatalf("earlier time on an empty bucket: got allowed; want refused")
	}
}

func TestKeyed(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	k := NewKeyed(1, 2, 3)
	for _, key := range []string{"a", "a"} {
		if !k.Allow(key, now) {
			t.Fatalf("Allow(%q): got refused; want allowed", key)
		}
	}
	if k.Allow("a", now) {
		t.Fatalf("third Allow(a): got allowed; want refused")
	}
	if !k.Allow("b", now) {
		t.Fatalf("Allow(b): got refused; want allowed: keys are separate")
	}
	// Past maxKeys the map does not grow.
	for i := range 100 {
		k.Allow(fmt.Sprint(i), now)
	}
	if got := len(k.buckets); got > 3 {
		t.Fatalf("buckets: got %d; want at most 3", got)
	}
}

func TestKeyedReady(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	k := NewKeyed(1, 2, 0)
	if !k.Ready("a", now) {
		t.Fatal("Ready for an unknown key: got false; want true")
	}
	for range 2 {
		k.Allow("a", now)
	}
	if k.Ready("a", now) {
		t.Error("Ready with the burst spent: got true; want false")
	}
	if !k.Ready("a", now.Add(time.Second)) {
		t.Error("Ready a second later: got false; want true")
	}
	if !k.Allow("a", now.Add(time.Second)) {
		t.Error("Ready took the token: Allow got false; want true")
	}
}

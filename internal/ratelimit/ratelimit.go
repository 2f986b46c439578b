// Package ratelimit holds the token buckets behind Switchboard's rate
// limits: one per browser connection for inbound frames, one per caller
// for emits. It is a few lines rather than golang.org/x/time/rate so the
// module takes no dependency for it.
package ratelimit

import (
	"sync"
	"time"
)

// Bucket is a token bucket: it holds up to burst tokens, gains rate tokens
// a second, and each allowed event takes one. The zero Bucket allows
// nothing; a Bucket is not safe for concurrent use.
type Bucket struct {
	rate   float64 // tokens a second
	burst  float64
	tokens float64
	last   time.Time
}

// NewBucket returns a full bucket that allows burst events at once and
// rate events a second on average. A burst below 1 is taken as 1.
func NewBucket(rate float64, burst int, now time.Time) Bucket {
	b := float64(max(burst, 1))
	return Bucket{rate: rate, burst: b, tokens: b, last: now}
}

// Allow reports whether an event at now fits, and if so takes its token.
func (b *Bucket) Allow(now time.Time) bool {
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// full reports whether the bucket at now is as full as a new one, so that
// forgetting it changes nothing.
func (b *Bucket) full(now time.Time) bool {
	b.refill(now)
	return b.tokens >= b.burst
}

func (b *Bucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
}

// Keyed is one Bucket per key (a caller's address or token), safe for
// concurrent use. It remembers at most maxKeys buckets: past that, it
// forgets the buckets that have refilled, which a new caller would get
// anyway, and if every bucket is in use it starts over rather than grow
// without bound.
type Keyed struct {
	rate    float64
	burst   int
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*Bucket
}

// NewKeyed returns per-key buckets of rate and burst, remembering at most
// maxKeys keys (default 10,000).
func NewKeyed(rate float64, burst, maxKeys int) *Keyed {
	if maxKeys <= 0 {
		maxKeys = 10_000
	}
	return &Keyed{rate: rate, burst: burst, maxKeys: maxKeys, buckets: make(map[string]*Bucket)}
}

// Allow reports whether an event of key at now fits its bucket.
func (k *Keyed) Allow(key string, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.buckets[key]
	if !ok {
		if len(k.buckets) >= k.maxKeys {
			for key, b := range k.buckets {
				if b.full(now) {
					delete(k.buckets, key)
				}
			}
			if len(k.buckets) >= k.maxKeys {
				clear(k.buckets)
			}
		}
		nb := NewBucket(k.rate, k.burst, now)
		b = &nb
		k.buckets[key] = b
	}
	return b.Allow(now)
}

// Ready reports whether an event of key at now would fit its bucket,
// without taking a token.
func (k *Keyed) Ready(key string, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.buckets[key]
	if !ok {
		return true
	}
	b.refill(now)
	return b.tokens >= 1
}

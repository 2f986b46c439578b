// Package lograte keeps what clients can make a node log bounded: a
// Limiter writes at most one line per kind of event each interval, with
// the number of events since the last line, and Truncate bounds a value a
// client chose.
package lograte

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// DefaultInterval is a Limiter's interval when none is given.
const DefaultInterval = time.Second

// Limiter logs events of each kind at most once per interval. The line
// that goes out carries the event's own attributes and "count", the number
// of events of its kind since the previous line (itself included); the
// events in between are only counted. It is safe for concurrent use.
type Limiter struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last    time.Time // when a line last went out
	skipped int64     // events since then
}

// New returns a Limiter writing to log at most one line per kind each
// interval (DefaultInterval if interval <= 0).
func New(log *slog.Logger, interval time.Duration) *Limiter {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Limiter{log: log, interval: interval, now: time.Now, kinds: make(map[string]*kind)}
}

// Log records one event whose kind is its message, with args (slog
// key-value pairs), writing it at level unless a line of the same kind
// went out within the interval.
func (l *Limiter) Log(ctx context.Context, level slog.Level, msg string, args ...any) {
	l.LogKey(ctx, msg, level, msg, args...)
}

// LogKey is Log for events whose kind is key rather than their message.
// The caller bounds the number of keys.
func (l *Limiter) LogKey(ctx context.Context, key string, level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(ctx, level) {
		return
	}
	now := l.now()
	l.mu.Lock()
	k := l.kinds[key]
	if k == nil {
		k = &kind{}
		l.kinds[key] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < l.interval {
		k.skipped++
		l.mu.Unlock()
		return
	}
	count := k.skipped + 1
	k.last, k.skipped = now, 0
	l.mu.Unlock()
	l.log.Log(ctx, level, msg, append(args, "count", count)...)
}

// MaxValue is how much of a client's value Truncate keeps by default.
const MaxValue = 128

// Truncate returns s cut to at most n bytes (MaxValue if n <= 0) on a
// rune boundary, followed by how long it was, so that a client cannot
// make one log line large.
func Truncate(s string, n int) string {
	if n <= 0 {
		n = MaxValue
	}
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

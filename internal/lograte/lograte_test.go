package lograte

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	ctx := context.Background()

	for i := range 1000 {
		l.Log(ctx, slog.LevelInfo, "refused", "i", i)
		l.LogKey(ctx, "other", slog.LevelWarn, "refused", "i", i)
	}
	now = now.Add(time.Second)
	l.Log(ctx, slog.LevelInfo, "refused", "i", "last")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`msg=refused i=0 count=1`,
		`level=WARN msg=refused i=0 count=1`,
		`msg=refused i=last count=1000`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines:\n%s\nwant %d", len(lines), buf.String(), len(want))
	}
	for i, w := range want {
		if !strings.HasSuffix(lines[i], w) {
			t.Errorf("line %d: got %q; want it to end in %q", i, lines[i], w)
		}
	}
}

func TestLimiterDisabledLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), time.Second)
	l.Log(context.Background(), slog.LevelInfo, "refused")
	if buf.Len() != 0 {
		t.Errorf("got %q below the handler's level; want nothing", buf.String())
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"short", "abc", 5, "abc"},
		{"exact", "abcde", 5, "abcde"},
		{"long", "abcdefgh", 5, "abcde…(8 bytes)"},
		{"rune boundary", "abcdé", 5, "abcd…(6 bytes)"},
		{"default", strings.Repeat("a", 1000), 0, strings.Repeat("a", MaxValue) + "…(1000 bytes)"},
	}
	for _, tc := range tests {
		if got := Truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("%s: Truncate(%q, %d): got %q; want %q", tc.name, tc.in, tc.n, got, tc.want)
		}
	}
}

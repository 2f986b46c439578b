package msglog

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// clock is a manual clock for the TTL.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// newLog returns a log on a manual clock.
func newLog(cfg Config) (*Log, *clock) {
	l := New(cfg)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l.now = c.now
	return l, c
}

// emit appends messages to channel, one per name, at the clock's time.
func emit(t *testing.T, l *Log, c *clock, channel string, names ...string) {
	t.Helper()
	for _, name := range names {
		off := l.Position().Offset + 1
		if err := l.Append(Entry{Offset: off, Channel: channel, ID: name, Frame: []byte(name), Time: c.t}); err != nil {
			t.Fatalf("Append(%s): %v", name, err)
		}
	}
}

func strs(frames [][]byte) []string {
	out := []string{}
	for _, f := range frames {
		out = append(out, string(f))
	}
	return out
}

func all(string) bool { return true }

func TestAppendAssignsOffsetsInOrder(t *testing.T) {
	l, c := newLog(Config{})
	if p := l.Position(); p.Offset != 0 || p.Epoch == "" {
		t.Fatalf("new log: got %+v; want offset 0 and an epoch", p)
	}
	emit(t, l, c, "", "a", "b")
	if got := l.Position().Offset; got != 2 {
		t.Fatalf("head after two appends: got %d; want 2", got)
	}
	for _, off := range []uint64{2, 4, 0} {
		if err := l.Append(Entry{Offset: off}); !errors.Is(err, ErrOffset) {
			t.Errorf("Append(offset %d) after head 2: got %v; want ErrOffset", off, err)
		}
	}
}

func TestEpochsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		e := New(Config{}).Position().Epoch
		if len(e) != 13 || seen[e] {
			t.Fatalf("epoch %q: want 13 characters, never repeated", e)
		}
		seen[e] = true
	}
}

func TestReplay(t *testing.T) {
	l, c := newLog(Config{Size: 5})
	emit(t, l, c, "", "g1")
	emit(t, l, c, "quotes", "q2")
	emit(t, l, c, "news", "n3")
	emit(t, l, c, "", "g4")
	emit(t, l, c, "quotes", "q5")
	emit(t, l, c, "", "g6") // forgets g1: the log holds 2..6
	epoch := l.Position().Epoch
	quotes := func(ch string) bool { return ch == "" || ch == "quotes" }
	for _, tc := range []struct {
		name      string
		from      Position
		include   func(string) bool
		want      []string
		recovered bool
	}{
		{"head: nothing missed", Position{epoch, 6}, all, []string{}, true},
		{"one missed", Position{epoch, 5}, all, []string{"g6"}, true},
		{"the oldest kept is next", Position{epoch, 1}, all, []string{"q2", "n3", "g4", "q5", "g6"}, true},
		{"channel filter", Position{epoch, 1}, quotes, []string{"q2", "g4", "q5", "g6"}, true},
		{"older than the history", Position{epoch, 0}, all, []string{}, false},
		{"beyond the head", Position{epoch, 7}, all, []string{}, false},
		{"unknown epoch", Position{"other", 5}, all, []string{}, false},
		{"empty epoch", Position{"", 6}, all, []string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := l.Replay(nil, tc.from, tc.include)
			if !slices.Equal(strs(got), tc.want) || ok != tc.recovered {
				t.Errorf("Replay(%+v): got %v, %v; want %v, %v", tc.from, strs(got), ok, tc.want, tc.recovered)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	l, c := newLog(Config{TTL: time.Minute})
	emit(t, l, c, "", "old")
	c.t = c.t.Add(30 * time.Second)
	emit(t, l, c, "quotes", "new")
	epoch := l.Position().Epoch
	if got, ok := l.Replay(nil, Position{epoch, 0}, all); !ok || !slices.Equal(strs(got), []string{"old", "new"}) {
		t.Fatalf("within the TTL: got %v, %v; want both, recovered", strs(got), ok)
	}
	c.t = c.t.Add(31 * time.Second) // "old" is 61 s old, "new" 31 s
	if got, ok := l.Replay(nil, Position{epoch, 0}, all); ok || len(got) != 0 {
		t.Errorf("after the oldest expired, from 0: got %v, %v; want nothing, not recovered", strs(got), ok)
	}
	if got, ok := l.Replay(nil, Position{epoch, 1}, all); !ok || !slices.Equal(strs(got), []string{"new"}) {
		t.Errorf("after the oldest expired, from 1: got %v, %v; want [new], recovered", strs(got), ok)
	}
	if n, b := l.Stats(); n != 1 || b != len("new") {
		t.Errorf("Stats: got %d messages, %d bytes; want 1, %d", n, b, len("new"))
	}
	c.t = c.t.Add(time.Minute)
	if n, b := l.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats after everything expired: got %d, %d; want 0, 0", n, b)
	}
	if got := l.Position().Offset; got != 2 {
		t.Errorf("head after expiry: got %d; want 2 (expiry does not move it)", got)
	}
	if got, ok := l.Replay(nil, Position{epoch, 2}, all); !ok || len(got) != 0 {
		t.Errorf("at the head after expiry: got %v, %v; want nothing, recovered", strs(got), ok)
	}
}

func TestHistoryOff(t *testing.T) {
	l, c := newLog(Config{Size: -1})
	emit(t, l, c, "", "a", "b")
	p := l.Position()
	if p.Offset != 2 {
		t.Fatalf("head: got %d; want 2: offsets are assigned with history off", p.Offset)
	}
	if got, ok := l.Replay(nil, Position{p.Epoch, 1}, all); ok || len(got) != 0 {
		t.Errorf("Replay from 1: got %v, %v; want nothing, not recovered", strs(got), ok)
	}
	if _, ok := l.Replay(nil, p, all); !ok {
		t.Errorf("Replay from the head: got not recovered; want recovered, nothing was missed")
	}
	if got := l.Last(nil, "", 5); len(got) != 0 {
		t.Errorf("Last: got %v; want nothing", strs(got))
	}
	if n, b := l.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats: got %d, %d; want 0, 0", n, b)
	}
	if err := l.Restore(State{Epoch: "e", Head: 3, Entries: []Entry{{Offset: 3, Frame: []byte("x")}}}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if n, _ := l.Stats(); n != 0 || l.Position() != (Position{"e", 3}) {
		t.Errorf("after Restore: got %d messages at %+v; want 0 at {e 3}", n, l.Position())
	}
}

func TestLast(t *testing.T) {
	l, c := newLog(Config{Size: 10})
	emit(t, l, c, "quotes", "q1")
	emit(t, l, c, "", "g2")
	emit(t, l, c, "quotes", "q3")
	emit(t, l, c, "news", "n4")
	emit(t, l, c, "quotes", "q5")
	for _, tc := range []struct {
		channel string
		k       int
		want    []string
	}{
		{"quotes", 1, []string{"q5"}},
		{"quotes", 2, []string{"q3", "q5"}},
		{"quotes", 100, []string{"q1", "q3", "q5"}},
		{"news", 5, []string{"n4"}},
		{"", 5, []string{"g2"}},
		{"none", 5, []string{}},
	} {
		if got := l.Last(nil, tc.channel, tc.k); !slices.Equal(strs(got), tc.want) {
			t.Errorf("Last(%q, %d): got %v; want %v", tc.channel, tc.k, strs(got), tc.want)
		}
	}
	c.t = c.t.Add(DefaultTTL)
	if got := l.Last(nil, "quotes", 1); len(got) != 0 {
		t.Errorf("Last after the TTL: got %v; want nothing", strs(got))
	}
}

func TestSizeBound(t *testing.T) {
	l, c := newLog(Config{Size: 3})
	for i := range 10 {
		emit(t, l, c, "", fmt.Sprintf("m%d", i+1))
	}
	if n, b := l.Stats(); n != 3 || b != len("m8m9m10") {
		t.Errorf("Stats: got %d messages, %d bytes; want 3 (m8 m9 m10), %d", n, b, len("m8m9m10"))
	}
	s := l.State()
	var offs []uint64
	for _, e := range s.Entries {
		offs = append(offs, e.Offset)
	}
	if !slices.Equal(offs, []uint64{8, 9, 10}) || s.Head != 10 {
		t.Errorf("State: got offsets %v, head %d; want [8 9 10], 10", offs, s.Head)
	}
}

func TestForkKeepsEarlierPositions(t *testing.T) {
	l, c := newLog(Config{})
	emit(t, l, c, "", "a", "b")
	old := l.Position().Epoch
	l.Fork()
	if l.Position().Epoch == old || l.Position().Offset != 2 {
		t.Fatalf("after Fork: got %+v; want a new epoch at offset 2", l.Position())
	}
	emit(t, l, c, "", "c")
	if got, ok := l.Replay(nil, Position{old, 1}, all); !ok || !slices.Equal(strs(got), []string{"b", "c"}) {
		t.Errorf("from the earlier epoch before the fork: got %v, %v; want [b c], recovered", strs(got), ok)
	}
	if got, ok := l.Replay(nil, Position{old, 2}, all); !ok || !slices.Equal(strs(got), []string{"c"}) {
		t.Errorf("from the fork point: got %v, %v; want [c], recovered", strs(got), ok)
	}
	if _, ok := l.Replay(nil, Position{old, 3}, all); ok {
		t.Errorf("from the earlier epoch past the fork: got recovered; want not: offset 3 of the old epoch may be another message")
	}
	for range maxForks {
		l.Fork()
	}
	if _, ok := l.Replay(nil, Position{old, 2}, all); ok {
		t.Errorf("an epoch %d forks ago: got recovered; want forgotten", maxForks+1)
	}
}

func TestStateRestore(t *testing.T) {
	a, c := newLog(Config{})
	emit(t, a, c, "q", "x", "y")
	a.Fork()
	emit(t, a, c, "", "z")
	b, _ := newLog(Config{})
	b.now = c.now
	if err := b.Restore(a.State()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if a.Position() != b.Position() {
		t.Fatalf("positions: got %+v; want %+v", b.Position(), a.Position())
	}
	for _, from := range []Position{{a.State().Forks[0].Epoch, 1}, {a.Position().Epoch, 2}} {
		want, _ := a.Replay(nil, from, all)
		got, ok := b.Replay(nil, from, all)
		if !ok || !slices.Equal(strs(got), strs(want)) {
			t.Errorf("Replay(%+v) on the copy: got %v, %v; want %v, true", from, strs(got), ok, strs(want))
		}
	}
	emit(t, b, c, "", "w")
	if b.Position().Offset != 4 {
		t.Errorf("head after appending to the copy: got %d; want 4", b.Position().Offset)
	}

	for _, bad := range []State{
		{Head: 1, Entries: []Entry{{Offset: 1}}},
		{Epoch: "e", Head: 3, Entries: []Entry{{Offset: 1}, {Offset: 3}}},
		{Epoch: "e", Head: 5, Entries: []Entry{{Offset: 3}, {Offset: 4}}},
	} {
		before := b.Position()
		if err := b.Restore(bad); err == nil || b.Position() != before {
			t.Errorf("Restore(%+v): got %v, position %+v; want an error and no change", bad, err, b.Position())
		}
	}
}

func TestRestoreKeepsTheNewestWithinTheSize(t *testing.T) {
	l, _ := newLog(Config{Size: 2})
	entries := []Entry{{Offset: 5, Frame: []byte("a")}, {Offset: 6, Frame: []byte("b")}, {Offset: 7, Frame: []byte("c")}}
	for i := range entries {
		entries[i].Time = l.now()
	}
	if err := l.Restore(State{Epoch: "e", Head: 7, Entries: entries}); err != nil {
		t.Fatal(err)
	}
	got, ok := l.Replay(nil, Position{"e", 5}, all)
	if !ok || !slices.Equal(strs(got), []string{"b", "c"}) {
		t.Errorf("Replay from 5: got %v, %v; want [b c], true", strs(got), ok)
	}
}

func BenchmarkAppend(b *testing.B) {
	l := New(Config{})
	frame := make([]byte, 128)
	now := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		l.Append(Entry{Offset: uint64(i + 1), Frame: frame, Time: now})
	}
}

func BenchmarkReplay1000(b *testing.B) {
	l := New(Config{})
	now := time.Now()
	for i := range 1000 {
		l.Append(Entry{Offset: uint64(i + 1), Frame: []byte("x"), Time: now})
	}
	from := Position{l.Position().Epoch, 0}
	var dst [][]byte
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = l.Replay(dst[:0], from, all)
	}
}

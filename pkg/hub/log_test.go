package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/msglog"
)

// emitTo emits one message with event name to channel and returns what
// the hub says of it.
func emitTo(t testing.TB, h *Hub, channel, name string) Emitted {
	t.Helper()
	res, err := h.Emit(context.Background(), Message{Event: name, Channel: channel, Data: []byte(`"` + name + `"`)})
	if err != nil {
		t.Fatalf("Emit(%s): got %v; want nil", name, err)
	}
	return res
}

// connect registers a new fake transport with s.
func connect(t testing.TB, h *Hub, s Start) (*Client, *fakeTransport) {
	t.Helper()
	ft := newFake()
	c, err := h.Connect(ft, s)
	if err != nil {
		t.Fatalf("Connect(%+v): got %v; want nil", s, err)
	}
	return c, ft
}

// welcome waits for ft's first frame and checks that it is the welcome.
func welcome(t testing.TB, ft *fakeTransport) wireFrame {
	t.Helper()
	waitFor(t, "the welcome", func() bool { return len(ft.all()) > 0 })
	w := ft.all()[0]
	if w.Type != "welcome" || w.Epoch == "" {
		t.Fatalf("first frame: got %+v; want a welcome with an epoch", w)
	}
	return w
}

// poll is waitFor for goroutines other than the test's: it reports
// whether cond held in time.
func poll(cond func() bool) bool {
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func events(ft *fakeTransport) []string {
	out := []string{}
	for _, m := range ft.messages() {
		out = append(out, m.Event)
	}
	return out
}

func TestWelcomeComesFirstWithTheLogsPosition(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	_, first := register(t, h)
	w := welcome(t, first)
	if w.Offset != 0 || w.Recovered != nil {
		t.Errorf("welcome of an empty log: got %+v; want offset 0 and no recovered", w)
	}
	for i := range 3 {
		if res := emitTo(t, h, "", fmt.Sprint("m", i)); res.Offset != uint64(i+1) {
			t.Errorf("Emit %d: got offset %d; want %d", i, res.Offset, i+1)
		}
	}
	waitFor(t, "three messages", func() bool { return len(first.messages()) == 3 })
	if got := first.offsets(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("message offsets: got %v; want [1 2 3]", got)
	}
	_, second := register(t, h)
	w2 := welcome(t, second)
	if w2.Offset != 3 || w2.Epoch != w.Epoch {
		t.Errorf("a later welcome: got %+v; want offset 3 in epoch %s", w2, w.Epoch)
	}
	waitFor(t, "the count", func() bool { return second.lastCount() == 2 })
	if all := second.all(); all[1].Type != "count" {
		t.Errorf("second frame: got %+v; want the count", all[1])
	}
}

func TestResumeDeliversWhatWasMissed(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	c, ft := connect(t, h, Start{Channels: []string{"page"}})
	emitTo(t, h, "page", "before")
	waitFor(t, "the first message", func() bool { return len(ft.messages()) == 1 })
	epoch, seen := welcome(t, ft).Epoch, ft.messages()[0].Offset
	c.Close()

	var want []string
	for i := range 100 {
		ch := []string{"", "page", "other"}[i%3]
		name := fmt.Sprintf("missed-%d", i)
		emitTo(t, h, ch, name)
		if ch != "other" {
			want = append(want, name)
		}
	}
	_, back := connect(t, h, Start{Channels: []string{"page"}, Resume: true, From: msglog.Position{Epoch: epoch, Offset: seen}})
	w := welcome(t, back)
	if w.Recovered == nil || !*w.Recovered || w.Offset != 101 {
		t.Fatalf("welcome: got %+v; want recovered at offset 101", w)
	}
	emitTo(t, h, "page", "live")
	want = append(want, "live")
	waitFor(t, "the missed and the live messages", func() bool { return len(back.messages()) >= len(want) })
	time.Sleep(20 * time.Millisecond)
	if got := events(back); !slices.Equal(got, want) {
		t.Errorf("after resuming: got %v; want %v", got, want)
	}
	if got := h.Stats().Recovered.Load(); got != 1 {
		t.Errorf("Recovered: got %d; want 1", got)
	}
}

func TestResumeThatCannotRecover(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  Config
		from func(msglog.Position) msglog.Position
	}{
		{"older than the history", Config{HistorySize: 3}, func(p msglog.Position) msglog.Position { return msglog.Position{Epoch: p.Epoch, Offset: 1} }},
		{"unknown epoch", Config{}, func(p msglog.Position) msglog.Position { return msglog.Position{Epoch: "other", Offset: 4} }},
		{"beyond the head", Config{}, func(p msglog.Position) msglog.Position { return msglog.Position{Epoch: p.Epoch, Offset: p.Offset + 1} }},
		{"history off", Config{HistorySize: -1}, func(p msglog.Position) msglog.Position { return msglog.Position{Epoch: p.Epoch, Offset: 4} }},
		{"expired", Config{HistoryTTL: 50 * time.Millisecond}, func(p msglog.Position) msglog.Position {
			time.Sleep(100 * time.Millisecond)
			return msglog.Position{Epoch: p.Epoch, Offset: 4}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHub(t, tt.cfg)
			for i := range 5 {
				emitTo(t, h, "", fmt.Sprint("old-", i))
			}
			_, ft := connect(t, h, Start{Resume: true, From: tt.from(h.Position())})
			w := welcome(t, ft)
			if w.Recovered == nil || *w.Recovered || w.Offset != 5 {
				t.Fatalf("welcome: got %+v; want not recovered, at offset 5", w)
			}
			emitTo(t, h, "", "live")
			waitFor(t, "the live message", func() bool { return len(ft.messages()) == 1 })
			if got := events(ft); !slices.Equal(got, []string{"live"}) {
				t.Errorf("messages: got %v; want only the live one", got)
			}
		})
	}
}

func TestResumeAtTheHeadOfAnEmptyHistoryRecovers(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{HistorySize: -1})
	emitTo(t, h, "", "m")
	_, ft := connect(t, h, Start{Resume: true, From: h.Position()})
	if w := welcome(t, ft); w.Recovered == nil || !*w.Recovered {
		t.Errorf("welcome: got %+v; want recovered: nothing was missed", w)
	}
}

// TestReplayFitsAnySmallQueue: a replay longer than the queue's bounds is
// not an overflow.
func TestReplayFitsAnySmallQueue(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{QueueFrames: 4, QueueBytes: 256})
	for i := range 50 {
		emitTo(t, h, "", fmt.Sprint("m", i))
	}
	_, ft := connect(t, h, Start{Resume: true, From: msglog.Position{Epoch: h.Position().Epoch, Offset: 0}})
	waitFor(t, "50 replayed messages", func() bool { return len(ft.messages()) == 50 })
	if got := h.Stats().SlowDisconnects.Load(); got != 0 {
		t.Errorf("SlowDisconnects: got %d; want 0", got)
	}
}

// TestResumeRacingWithEmits has many clients resume again and again while
// emits go on, to everyone and to channels: every client sees every
// message it is a recipient of once, in order, with no gap, across all its
// connections.
func TestResumeRacingWithEmits(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{HistorySize: 100_000, QueueFrames: 100_000, QueueBytes: 1 << 30})
	const clients, rounds = 8, 40
	var emitted atomic.Int64
	stop := make(chan struct{})
	var emitting sync.WaitGroup
	emitting.Add(2)
	for _, channels := range [][]string{{"", "a"}, {"b", ""}} {
		go func() {
			defer emitting.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := h.Emit(context.Background(), Message{Event: "e", Channel: channels[i%2]}); err != nil {
					t.Errorf("Emit: %v", err)
					return
				}
				emitted.Add(1)
				if i%2 == 1 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}

	type seen struct {
		channel string
		offsets []uint64
	}
	results := make([]seen, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			channel := []string{"a", "b"}[i%2]
			var got []uint64
			var from *msglog.Position
			for range rounds {
				s := Start{Channels: []string{channel}}
				if from != nil {
					s.Resume, s.From = true, *from
				}
				ft := newFake()
				c, err := h.Connect(ft, s)
				if err != nil {
					t.Errorf("Connect: %v", err)
					return
				}
				// Read a few live messages, then leave.
				target := emitted.Load() + 30
				if !poll(func() bool { return len(ft.all()) > 0 && emitted.Load() >= target }) {
					t.Errorf("client %d: no welcome, or no emits", i)
					return
				}
				c.Close()
				w := ft.all()[0]
				if from != nil && (w.Recovered == nil || !*w.Recovered) {
					t.Errorf("client %d: resume from %+v not recovered: %+v", i, *from, w)
					return
				}
				offs := ft.offsets()
				got = append(got, offs...)
				p := msglog.Position{Epoch: w.Epoch, Offset: w.Offset}
				if from != nil {
					p.Offset = from.Offset
				}
				if len(offs) > 0 {
					p.Offset = offs[len(offs)-1]
				}
				from = &p
			}
			results[i] = seen{channel, got}
		}()
	}
	wg.Wait()
	close(stop)
	emitting.Wait()

	// Which channel each offset went to, from the log itself.
	log := h.msgs.State()
	channelOf := make(map[uint64]string, len(log.Entries))
	for _, e := range log.Entries {
		channelOf[e.Offset] = e.Channel
	}
	if uint64(len(log.Entries)) != log.Head || h.Stats().SlowDisconnects.Load() != 0 {
		t.Fatalf("the log holds %d of %d messages, %d clients were dropped as slow; want all, none: the test is too fast for this machine", len(log.Entries), log.Head, h.Stats().SlowDisconnects.Load())
	}
	for i, r := range results {
		if len(r.offsets) == 0 {
			t.Errorf("client %d got no messages", i)
			continue
		}
		var want []uint64
		for off := r.offsets[0]; off <= r.offsets[len(r.offsets)-1]; off++ {
			if ch := channelOf[off]; ch == "" || ch == r.channel {
				want = append(want, off)
			}
		}
		if !slices.Equal(r.offsets, want) {
			t.Errorf("client %d (%s): got %d messages; want %d, every one of its from %d to %d once in order", i, r.channel, len(r.offsets), len(want), want[0], want[len(want)-1])
		}
	}
}

func TestSubscribeLast(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	emitTo(t, h, "quotes", "q1")
	emitTo(t, h, "", "g")
	emitTo(t, h, "quotes", "q2")
	emitTo(t, h, "news", "n")

	c, ft := register(t, h)
	if err := c.SubscribeLast("quotes", 1); err != nil {
		t.Fatalf("SubscribeLast: %v", err)
	}
	emitTo(t, h, "quotes", "q3")
	waitFor(t, "two quotes", func() bool { return len(ft.messages()) == 2 })
	time.Sleep(20 * time.Millisecond)
	if got := events(ft); !slices.Equal(got, []string{"q2", "q3"}) {
		t.Errorf("after subscribing with last 1: got %v; want [q2 q3]", got)
	}

	// Subscribed already: the last ones come again, as asked.
	if err := c.SubscribeLast("quotes", 100); err != nil {
		t.Fatalf("SubscribeLast again: %v", err)
	}
	waitFor(t, "the last three", func() bool { return len(ft.messages()) == 5 })
	if got := events(ft)[2:]; !slices.Equal(got, []string{"q1", "q2", "q3"}) {
		t.Errorf("last 100 of three: got %v; want [q1 q2 q3]", got)
	}
	if got := h.Count("quotes"); got != 1 {
		t.Errorf("Count(quotes): got %d; want 1", got)
	}

	off := newHub(t, Config{HistorySize: -1})
	emitTo(t, off, "quotes", "q")
	c2, ft2 := register(t, off)
	if err := c2.SubscribeLast("quotes", 1); err != nil {
		t.Fatalf("SubscribeLast with history off: %v", err)
	}
	emitTo(t, off, "quotes", "live")
	waitFor(t, "the live quote", func() bool { return len(ft2.messages()) == 1 })
	if got := events(ft2); !slices.Equal(got, []string{"live"}) {
		t.Errorf("with history off: got %v; want [live]", got)
	}
}

func TestConnectRefusesBadChannels(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{MaxSubscriptions: 2})
	if _, err := h.Connect(newFake(), Start{Channels: []string{"a", "b", "c"}}); !errors.Is(err, ErrTooManySubscriptions) {
		t.Errorf("three channels with a limit of two: got %v; want ErrTooManySubscriptions", err)
	}
	if _, err := h.Connect(newFake(), Start{Channels: []string{"a b"}}); err == nil {
		t.Errorf("an invalid channel: got nil; want an error")
	}
	if got := h.Count(""); got != 0 {
		t.Errorf("Count after refusals: got %d; want 0", got)
	}
}

// fakeFollower records what the hub hands it.
type fakeFollower struct {
	mu      sync.Mutex
	entries []msglog.Entry
	stopped error
	stops   int
}

func (f *fakeFollower) Append(e msglog.Entry) {
	f.mu.Lock()
	f.entries = append(f.entries, e)
	f.mu.Unlock()
}

func (f *fakeFollower) Stop(err error) {
	f.mu.Lock()
	f.stopped = err
	f.stops++
	f.mu.Unlock()
}

func (f *fakeFollower) got() []msglog.Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries)
}

func TestFollowerHoldsEachMessageBeforeItIsDelivered(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{FollowTimeout: time.Hour})
	_, ft := register(t, h)
	emitTo(t, h, "", "before")
	ff := &fakeFollower{}
	snap := h.Follow(ff)
	if snap.Log.Head != 1 || len(snap.Log.Entries) != 1 {
		t.Fatalf("snapshot: got head %d, %d entries; want 1, 1", snap.Log.Head, len(snap.Log.Entries))
	}

	done := make(chan Emitted, 1)
	go func() {
		res, err := h.EmitOnce(context.Background(), "k1", Message{Event: "held"})
		if err != nil {
			t.Errorf("EmitOnce: %v", err)
		}
		done <- res
	}()
	waitFor(t, "the follower to get the message", func() bool { return len(ff.got()) == 1 })
	time.Sleep(20 * time.Millisecond)
	select {
	case res := <-done:
		t.Fatalf("EmitOnce returned %+v before the follower acknowledged", res)
	default:
	}
	if n := len(ft.messages()); n != 1 {
		t.Errorf("browser messages before the acknowledgement: got %d; want 1 (only the one before)", n)
	}
	if e := ff.got()[0]; e.Offset != 2 || e.Key != "k1" || e.ID != "k1" {
		t.Errorf("entry handed to the follower: got %+v; want offset 2, key and id k1", e)
	}
	h.Acked(ff, 2)
	res := <-done
	if res.Offset != 2 || res.Recipients != 1 {
		t.Errorf("EmitOnce after the acknowledgement: got %+v; want offset 2, 1 recipient", res)
	}
	waitFor(t, "the held message", func() bool { return len(ft.messages()) == 2 })

	// The key was committed: a retry is a duplicate, answered at once.
	again, err := h.EmitOnce(context.Background(), "k1", Message{Event: "held"})
	if err != nil || !again.Duplicate || again.Offset != 2 {
		t.Errorf("retry: got %+v, %v; want a duplicate at offset 2", again, err)
	}

	// A follower that goes away releases what waits for it.
	go func() {
		res, _ := h.Emit(context.Background(), Message{Event: "alone"})
		done <- res
	}()
	waitFor(t, "the second entry", func() bool { return len(ff.got()) == 2 })
	h.Unfollow(ff)
	if res := <-done; res.Offset != 3 {
		t.Errorf("emit released by Unfollow: got %+v; want offset 3", res)
	}
	if res := emitTo(t, h, "", "after"); res.Offset != 4 || len(ff.got()) != 2 {
		t.Errorf("emit after Unfollow: got %+v, follower has %d entries; want offset 4, follower untouched", res, len(ff.got()))
	}
}

func TestFollowerThatStopsAnsweringIsDropped(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{FollowTimeout: 100 * time.Millisecond})
	ff := &fakeFollower{}
	h.Follow(ff)
	start := time.Now()
	res := emitTo(t, h, "", "waits")
	if took := time.Since(start); took < 100*time.Millisecond || res.Offset != 1 {
		t.Errorf("emit with a silent follower: got %+v after %v; want offset 1 after the 100ms timeout", res, took)
	}
	waitFor(t, "the follower to be stopped", func() bool {
		ff.mu.Lock()
		defer ff.mu.Unlock()
		return ff.stops > 0
	})
	ff.mu.Lock()
	stopped, stops := ff.stopped, ff.stops
	ff.mu.Unlock()
	if stops != 1 || stopped == nil {
		t.Errorf("follower: got %d Stops (%v); want 1 with a reason", stops, stopped)
	}
	if h.Following() || h.Stats().FollowerDrops.Load() != 1 {
		t.Errorf("after the drop: following %v, drops %d; want false, 1", h.Following(), h.Stats().FollowerDrops.Load())
	}
	if start := time.Now(); emitTo(t, h, "", "alone").Offset != 2 || time.Since(start) > 50*time.Millisecond {
		t.Errorf("emit after the drop waited %v; want no wait", time.Since(start))
	}
}

func TestFollowerReplacedByAnother(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{FollowTimeout: time.Hour})
	a, b := &fakeFollower{}, &fakeFollower{}
	h.Follow(a)
	done := make(chan Emitted, 1)
	go func() {
		res, _ := h.Emit(context.Background(), Message{Event: "pending"})
		done <- res
	}()
	waitFor(t, "a to hold the entry", func() bool { return len(a.got()) == 1 })
	snap := h.Follow(b)
	if res := <-done; res.Offset != 1 {
		t.Errorf("emit pending on the replaced follower: got %+v; want committed at 1", res)
	}
	if snap.Log.Head != 1 {
		t.Errorf("snapshot for the new follower: got head %d; want 1, with the pending emit", snap.Log.Head)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !errors.Is(a.stopped, ErrFollowerReplaced) {
		t.Errorf("old follower stopped with %v; want ErrFollowerReplaced", a.stopped)
	}
}

// TestFollowingHubHoldsTheSameLog copies a log to a second hub as a
// standby would: snapshot, then entries. Both answer resumes alike, and a
// retry on the copy is a duplicate.
func TestFollowingHubHoldsTheSameLog(t *testing.T) {
	t.Parallel()
	primary := newHub(t, Config{FollowTimeout: time.Hour})
	standby := newHub(t, Config{})
	first, _ := primary.EmitOnce(context.Background(), "early", Message{Event: "early", Channel: "c"})
	ff := &fakeFollower{}
	if err := standby.Restore(primary.Follow(ff)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	_, onStandby := connect(t, standby, Start{Channels: []string{"c"}})
	go func() {
		for i := range 5 {
			primary.EmitOnce(context.Background(), fmt.Sprint("k", i), Message{Event: fmt.Sprint("m", i)})
		}
	}()
	applied := 0
	waitFor(t, "five entries applied", func() bool {
		for _, e := range ff.got()[applied:] {
			if err := standby.Apply(e); err != nil {
				t.Fatalf("Apply(%d): %v", e.Offset, err)
			}
			primary.Acked(ff, e.Offset)
			applied++
		}
		return applied == 5
	})
	if primary.Position() != standby.Position() {
		t.Fatalf("positions: primary %+v, standby %+v; want equal", primary.Position(), standby.Position())
	}
	waitFor(t, "the standby's browser to get the five", func() bool { return len(onStandby.messages()) == 5 })
	for _, from := range []uint64{0, 3} {
		pos := msglog.Position{Epoch: primary.Position().Epoch, Offset: from}
		_, p := connect(t, primary, Start{Resume: true, From: pos, Channels: []string{"c"}})
		_, s := connect(t, standby, Start{Resume: true, From: pos, Channels: []string{"c"}})
		want := int(6 - from)
		waitFor(t, "both replays", func() bool { return len(p.messages()) == want && len(s.messages()) == want })
		if !slices.Equal(p.messageIDs(), s.messageIDs()) || !slices.Equal(p.offsets(), s.offsets()) {
			t.Errorf("replay from %d: primary %v %v, standby %v %v; want the same", from, p.messageIDs(), p.offsets(), s.messageIDs(), s.offsets())
		}
	}
	for key, off := range map[string]uint64{"early": first.Offset, "k3": 5} {
		res, err := standby.EmitOnce(context.Background(), key, Message{Event: "retry"})
		if err != nil || !res.Duplicate || res.Offset != off || res.ID != key {
			t.Errorf("retry of %s on the standby: got %+v, %v; want a duplicate at offset %d", key, res, err, off)
		}
	}
	if err := standby.Apply(msglog.Entry{Offset: 99}); !errors.Is(err, msglog.ErrOffset) {
		t.Errorf("Apply out of order: got %v; want ErrOffset", err)
	}
}

func TestHandoverStopsTheLogAndForkKeepsPositions(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	emitTo(t, h, "", "a")
	before := h.Position()
	snap := h.Handover()
	if snap.Log.Head != 1 || !h.Paused() {
		t.Fatalf("Handover: got head %d, paused %v; want 1, true", snap.Log.Head, h.Paused())
	}
	if _, err := h.Emit(context.Background(), Message{Event: "late"}); !errors.Is(err, ErrPaused) {
		t.Errorf("emit after the handover: got %v; want ErrPaused", err)
	}
	h.ForkLog()
	h.Resume()
	emitTo(t, h, "", "b")
	if h.Position().Epoch == before.Epoch {
		t.Fatalf("epoch after ForkLog: unchanged; want a new one")
	}
	_, ft := connect(t, h, Start{Resume: true, From: before})
	waitFor(t, "the message after the fork", func() bool { return len(ft.messages()) == 1 })
	if w := welcome(t, ft); w.Recovered == nil || !*w.Recovered || events(ft)[0] != "b" {
		t.Errorf("resume from before the fork: got %+v, %v; want recovered with [b]", w, events(ft))
	}
}

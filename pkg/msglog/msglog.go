// Package msglog is a node's message log: every emitted message gets a
// position in one ordered log (an offset within an epoch), and the newest
// messages are kept, bounded by count and age, so that a browser that
// comes back after a disconnect gets what it missed and a page that opens
// gets a channel's latest messages.
//
// The log holds each message as the frame browsers receive, encoded once:
// the same bytes go to the fan-out, to every replay and to a standby. It
// knows nothing of transports or of how frames are encoded.
//
// An epoch names one history of offsets. A log that may have lost
// messages starts a new epoch, so that positions from before never pass
// for positions in it. A log that continues another node's, knowing it
// may diverge from it (a standby taking over), forks: it starts a new
// epoch but remembers where the earlier one ended, so positions in the
// earlier epoch up to that point stay meaningful.
package msglog

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultSize = 1000
	DefaultTTL  = 5 * time.Minute
)

// maxForks bounds the earlier epochs a log remembers.
const maxForks = 8

// Config tunes a Log. The zero value holds the defaults.
type Config struct {
	// Size bounds the messages kept. Default: DefaultSize (1000);
	// negative: none are kept, so that offsets are still assigned but a
	// browser that missed anything cannot recover it.
	Size int
	// TTL bounds how long a message is kept. Default: DefaultTTL (5m).
	TTL time.Duration
}

// Entry is one message in the log.
type Entry struct {
	// Offset is the message's position: the previous entry's plus one.
	Offset uint64
	// Channel is the channel the message was emitted to; empty for every
	// connection.
	Channel string
	// ID is the message's id.
	ID string
	// Key is the idempotency key the message was emitted with, if any.
	Key string
	// Frame is the message as browsers receive it. It is shared and never
	// modified.
	Frame []byte
	// Time is when the message entered the log.
	Time time.Time
}

// Position is a point in a log: the offset of the newest message seen, in
// an epoch.
type Position struct {
	Epoch  string
	Offset uint64
}

// Fork records that a log continued an earlier epoch up to End.
type Fork struct {
	Epoch string
	End   uint64
}

// State is a log's whole content, for another node to hold a copy.
type State struct {
	// Epoch is the log's epoch.
	Epoch string
	// Forks are the earlier epochs the log continues, oldest first.
	Forks []Fork
	// Head is the offset of the newest message the log has taken.
	Head uint64
	// Entries are the messages kept, oldest first; the last one's offset
	// is Head.
	Entries []Entry
}

// ErrOffset is returned by Append for an entry that does not follow the
// log's head.
var ErrOffset = errors.New("offset does not follow the log's head")

// Log is a message log. All methods are safe for concurrent use.
type Log struct {
	size int
	ttl  time.Duration
	now  func() time.Time

	mu    sync.Mutex
	epoch string
	forks []Fork
	head  uint64
	ring  []Entry // kept entries, oldest at ring[first], n of them
	first int
	n     int
	bytes int
}

// New returns an empty log with a new epoch.
func New(cfg Config) *Log {
	if cfg.Size == 0 {
		cfg.Size = DefaultSize
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	l := &Log{size: max(0, cfg.Size), ttl: cfg.TTL, now: time.Now, epoch: NewEpoch()}
	l.ring = make([]Entry, l.size)
	return l
}

// Position returns the log's epoch and the offset of the newest message it
// has taken (0 before the first). The size and age bounds do not change
// it.
func (l *Log) Position() Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Position{l.epoch, l.head}
}

// Append adds e, whose Offset must be the head's plus one, and forgets the
// oldest message beyond the size bound.
func (l *Log) Append(e Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Offset != l.head+1 {
		return fmt.Errorf("%w: got %d, want %d", ErrOffset, e.Offset, l.head+1)
	}
	l.head = e.Offset
	if l.size == 0 {
		return nil
	}
	if l.n == l.size {
		l.dropOldest()
	}
	l.ring[(l.first+l.n)%l.size] = e
	l.n++
	l.bytes += len(e.Frame)
	l.expire(e.Time)
	return nil
}

// Replay appends to dst the frames of the messages after from that
// include selects by channel, oldest first, and reports whether they are
// all the messages after from: false when from is in an epoch the log does
// not continue, lies beyond it, or the log no longer holds every message
// after it. Then it appends nothing.
func (l *Log) Replay(dst [][]byte, from Position, include func(channel string) bool) ([][]byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	end, ok := l.endOf(from.Epoch)
	if !ok || from.Offset > end {
		return dst, false
	}
	if from.Offset == l.head {
		return dst, true
	}
	l.expire(l.now())
	if l.n == 0 || l.at(0).Offset > from.Offset+1 {
		return dst, false
	}
	for i := int(from.Offset + 1 - l.at(0).Offset); i < l.n; i++ {
		if e := l.at(i); include(e.Channel) {
			dst = append(dst, e.Frame)
		}
	}
	return dst, true
}

// endOf returns the last offset of epoch in this log's history: the head
// for its own epoch, the fork point for an earlier one it continues.
func (l *Log) endOf(epoch string) (uint64, bool) {
	if epoch == l.epoch {
		return l.head, true
	}
	for _, f := range l.forks {
		if f.Epoch == epoch {
			return f.End, true
		}
	}
	return 0, false
}

// Last appends to dst the frames of the newest k messages emitted to
// channel that the log still holds, oldest first.
func (l *Log) Last(dst [][]byte, channel string, k int) [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.now())
	i := l.n
	for found := 0; i > 0 && found < k; {
		i--
		if l.at(i).Channel == channel {
			found++
		}
	}
	for ; i < l.n; i++ {
		if e := l.at(i); e.Channel == channel {
			dst = append(dst, e.Frame)
		}
	}
	return dst
}

// Fork starts a new epoch that continues the current one: positions in
// the current epoch up to the head stay valid, later ones in it do not.
func (l *Log) Fork() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forks = append(l.forks, Fork{l.epoch, l.head})
	if len(l.forks) > maxForks {
		l.forks = append(l.forks[:0], l.forks[len(l.forks)-maxForks:]...)
	}
	l.epoch = NewEpoch()
}

// State returns a copy of the log's content; the frames are shared.
func (l *Log) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.now())
	s := State{Epoch: l.epoch, Forks: append([]Fork(nil), l.forks...), Head: l.head, Entries: make([]Entry, l.n)}
	for i := range l.n {
		s.Entries[i] = l.at(i)
	}
	return s
}

// Restore replaces the log's content with s, keeping as many of its
// newest entries as the size bound allows. It fails, changing nothing,
// when the entries do not run one by one up to s.Head.
func (l *Log) Restore(s State) error {
	if s.Epoch == "" {
		return errors.New("state has no epoch")
	}
	for i, e := range s.Entries {
		if e.Offset != s.Head-uint64(len(s.Entries)-1-i) {
			return fmt.Errorf("%w: entry %d of %d has offset %d, head %d", ErrOffset, i, len(s.Entries), e.Offset, s.Head)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.epoch, l.forks, l.head = s.Epoch, append([]Fork(nil), s.Forks...), s.Head
	clear(l.ring)
	l.first, l.n, l.bytes = 0, 0, 0
	entries := s.Entries[max(0, len(s.Entries)-l.size):]
	for i, e := range entries {
		l.ring[i] = e
		l.bytes += len(e.Frame)
	}
	l.n = len(entries)
	l.expire(l.now())
	return nil
}

// Stats returns the number of messages the log holds and the bytes of
// their frames.
func (l *Log) Stats() (messages, bytes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.now())
	return l.n, l.bytes
}

// at returns the i-th kept entry, oldest first; l.mu must be held.
func (l *Log) at(i int) Entry { return l.ring[(l.first+i)%l.size] }

// dropOldest forgets the oldest kept entry; l.mu must be held.
func (l *Log) dropOldest() {
	l.bytes -= len(l.ring[l.first].Frame)
	l.ring[l.first] = Entry{}
	l.first = (l.first + 1) % l.size
	l.n--
}

// expire forgets the entries older than the TTL at now; l.mu must be held.
func (l *Log) expire(now time.Time) {
	for l.n > 0 && now.Sub(l.ring[l.first].Time) >= l.ttl {
		l.dropOldest()
	}
}

var epochEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// NewEpoch returns a new random epoch name: 13 characters of [0-9a-v].
func NewEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return epochEncoding.EncodeToString(b[:])
}

//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"
)

// conn is one measured client. Its reader goroutine alone writes the
// fields below the line; Run reads them only after the reader returned.
type conn struct {
	ws           *wsConn
	countFrames  atomic.Int64
	lastVisitors atomic.Int64 // visitors of the last count frame
	lastCount    atomic.Int64

	lat      []int32 // by seq: latency in µs, at least 1; 0 = not received
	order    []int32 // seqs in arrival order, first receipts only
	got      int     // distinct seqs received
	dups     int
	bad      int   // message frames whose seq or t did not parse or fit
	negative int   // deliveries stamped before they were published
	last     int64 // unix nanos of the last first receipt
	finished bool  // clientDone was called
	err      error // why the connection ended before the run did
}

// dial connects client i, retrying with jittered exponential backoff: a
// connect storm can overflow the server's listen backlog.
func (b *bench) dial(ctx context.Context, i int) (*conn, error) {
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		c, err := b.dialOnce(ctx, i)
		if err == nil {
			return c, nil
		}
		if attempt >= b.cfg.DialRetries || ctx.Err() != nil {
			return nil, err
		}
		b.retries.Add(1)
		d := backoff/2 + rand.N(backoff)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// dialOnce connects client i and, within the same 15 s, joins the
// socket.io namespace or subscribes to cfg.Channel.
func (b *bench) dialOnce(ctx context.Context, i int) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ws, err := b.dialerFor(i).dial(ctx, b.cfg.Payload+512, b.cfg.Payload+64<<10)
	if err != nil {
		return nil, fmt.Errorf("failed to dial: %w", err)
	}
	c := &conn{
		ws:    ws,
		lat:   make([]int32, b.cfg.Emits),
		order: make([]int32, 0, b.cfg.Emits),
	}
	c.lastCount.Store(-1)
	release := ws.bind(ctx)
	if err := release(b.join(c)); err != nil {
		ws.close()
		return nil, err
	}
	return c, nil
}

// join does what a new client does before it is measured: the socket.io
// handshake, or subscribing to cfg.Channel.
func (b *bench) join(c *conn) error {
	switch {
	case b.cfg.Target == TargetSocketIO:
		return c.socketIOHandshake()
	case b.cfg.Channel != "":
		msg := fmt.Appendf(nil, `{"type":"subscribe","channel":%q}`, b.cfg.Channel)
		if err := c.ws.writeText(msg); err != nil {
			return fmt.Errorf("failed to subscribe: %w", err)
		}
	}
	return nil
}

// socketIOHandshake joins the default namespace over a WebSocket-only
// Engine.IO v4 connection: the server opens with "0{...}", the client
// sends "40", the server confirms with "40{...}".
func (c *conn) socketIOHandshake() error {
	sentConnect := false
	for {
		frame, err := c.ws.next()
		if err != nil {
			return fmt.Errorf("failed to join the socket.io namespace: %w", err)
		}
		switch {
		case len(frame) > 0 && frame[0] == '0' && !sentConnect:
			if err := c.ws.writeText(eioConnect); err != nil {
				return fmt.Errorf("failed to join the socket.io namespace: %w", err)
			}
			sentConnect = true
		case bytes.Equal(frame, eioPing):
			if err := c.ws.writeText(eioPong); err != nil {
				return fmt.Errorf("failed to answer a ping: %w", err)
			}
		case bytes.HasPrefix(frame, eioConnect):
			return nil
		case bytes.HasPrefix(frame, []byte("44")):
			return fmt.Errorf("socket.io refused the connection: %s", frame)
		}
	}
}

var (
	eioConnect  = []byte("40")
	eioPing     = []byte("2")
	eioPong     = []byte("3")
	eioEvent    = []byte(`42["ShowMessage",`)
	sbMessage   = []byte(`{"type":"message",`)
	sbCount     = []byte(`{"type":"count","connections":`)
	keyType     = []byte(`"type":"`)
	keyConns    = []byte(`"connections":`)
	keyVisitors = []byte(`"visitors":`)
	keyData     = []byte(`"data":`)
	keySeq      = []byte(`"seq":`)
	keyT        = []byte(`"t":`)
)

// readLoop reads until the connection ends; closeAll ends it by closing
// the connection.
func (c *conn) readLoop(b *bench) {
	defer b.readers.Done()
	socketIO := b.cfg.Target == TargetSocketIO
	for {
		frame, err := c.ws.next()
		if err != nil {
			c.ended(b, err)
			return
		}
		now := time.Now().UnixNano()
		if socketIO {
			switch {
			case bytes.HasPrefix(frame, eioEvent):
				c.message(b, frame[len(eioEvent):], now)
			case bytes.Equal(frame, eioPing):
				if err := c.ws.writeText(eioPong); err != nil {
					c.ended(b, err)
					return
				}
			case bytes.Equal(frame, []byte("41")) || bytes.Equal(frame, []byte("1")):
				c.ended(b, fmt.Errorf("socket.io disconnected the client (%s)", frame))
				c.ws.close()
				return
			}
			continue
		}
		switch {
		case bytes.HasPrefix(frame, sbMessage):
			c.sbMessage(b, frame, now)
		case bytes.HasPrefix(frame, sbCount):
			if j := bytes.Index(frame, keyVisitors); j >= 0 {
				if v, ok := parseInt(frame[j+len(keyVisitors):]); ok {
					c.lastVisitors.Store(v)
				}
			}
			if n, ok := parseInt(frame[len(sbCount):]); ok {
				b.sawCount(c, n)
			}
		default:
			// The fields in another order: find the type the slow way.
			i := bytes.Index(frame, keyType)
			if i < 0 {
				c.bad++
				continue
			}
			rest := frame[i+len(keyType):]
			switch {
			case bytes.HasPrefix(rest, []byte(`message"`)):
				c.sbMessage(b, frame, now)
			case bytes.HasPrefix(rest, []byte(`count"`)):
				if j := bytes.Index(frame, keyConns); j >= 0 {
					if n, ok := parseInt(frame[j+len(keyConns):]); ok {
						b.sawCount(c, n)
					}
				}
			}
		}
	}
}

// sbMessage handles a Switchboard message frame: the seq and t it needs
// are in its data.
func (c *conn) sbMessage(b *bench, frame []byte, now int64) {
	i := bytes.Index(frame, keyData)
	if i < 0 {
		c.bad++
		return
	}
	c.message(b, frame[i+len(keyData):], now)
}

// message records the delivery of the message whose data starts data.
func (c *conn) message(b *bench, data []byte, now int64) {
	seq, ok1 := field(data, keySeq)
	t, ok2 := field(data, keyT)
	if !ok1 || !ok2 || seq < 0 || seq >= int64(len(c.lat)) {
		c.bad++
		return
	}
	if c.lat[seq] != 0 {
		c.dups++
		return
	}
	us := (now - t + 999) / 1000
	if us < 1 {
		if now < t {
			c.negative++
		}
		us = 1
	}
	c.lat[seq] = int32(min(us, 1<<31-1))
	c.order = append(c.order, int32(seq))
	c.got++
	c.last = now
	if c.got == len(c.lat) && !c.finished {
		c.finished = true
		b.clientDone()
	}
}

// ended records why the connection ended, unless the run ended it.
func (c *conn) ended(b *bench, err error) {
	if c.finished {
		return
	}
	c.finished = true
	if !errors.Is(err, net.ErrClosed) && closeCode(err) != closeNormal {
		c.err = err
	}
	b.clientDone()
}

// close closes the connection at once; the reader then returns.
func (c *conn) close() {
	c.ws.close()
}

// field returns the integer after key in data.
func field(data, key []byte) (int64, bool) {
	i := bytes.Index(data, key)
	if i < 0 {
		return 0, false
	}
	return parseInt(data[i+len(key):])
}

// parseInt parses the JSON number at the start of b as an integer. A
// fraction or exponent (a float64 formatted by the server) falls back to
// a float parse, which is exact to 2^53 and good to a few hundred
// nanoseconds beyond.
func parseInt(b []byte) (int64, bool) {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg = true
		b = b[1:]
	}
	var n int64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	if i == 0 {
		return 0, false
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return parseFloatInt(b, neg)
	}
	if neg {
		n = -n
	}
	return n, true
}

// dialerFor returns the dialer of client i: its node, and its visitor.
func (b *bench) dialerFor(i int) *wsDialer {
	node := b.dialers[i%len(b.dialers)]
	return node[i%len(node)]
}

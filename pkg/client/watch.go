package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
)

// The bounds of the delay between two attempts to re-open a Watch stream.
const (
	watchMinDelay = 100 * time.Millisecond
	watchMaxDelay = 5 * time.Second
)

// Watch calls fn with the count of open browser connections (or of
// channel's subscribers, when channel is not empty) at once, then with
// every new value, until ctx ends. fn runs on Watch's goroutine, one call
// at a time, and only when the count differs from the value it last got;
// the server coalesces changes made while fn runs, so the last value fn
// sees after a burst is the true count.
//
// Watch outlives the node: when the stream breaks (the node restarts,
// drains, is unreachable, or is a standby handing over to its primary,
// all codes.Unavailable) it reopens it with jittered exponential
// backoff, waiting up to 100 ms at first and doubling to at most 5 s,
// back to the start once a value arrives.
// While no node answers fn is not called, so its last value may be stale.
//
// Watch returns ctx.Err() when ctx ends, and an error at once when
// retrying cannot help: codes.InvalidArgument (a bad channel name),
// codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented, or
// Close.
func (c *Client) Watch(ctx context.Context, channel string, fn func(count int64)) error {
	last := int64(-1)
	return c.WatchOnline(ctx, channel, func(o Online) {
		if o.Connections != last {
			last = o.Connections
			fn(o.Connections)
		}
	})
}

// WatchOnline is Watch for the connections and the distinct visitors: fn
// gets both, once either changes.
func (c *Client) WatchOnline(ctx context.Context, channel string, fn func(Online)) error {
	last := Online{Connections: -1}
	failures := 0 // failed attempts since the last value
	report := func(o Online) {
		if failures > 0 {
			c.log.Info("count watch resumed", "channel", channel, "failed_attempts", failures)
			failures = 0
		}
		if o != last {
			last = o
			fn(o)
		}
	}
	for {
		err := c.watchOnce(ctx, channel, report)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.closed() {
			return fmt.Errorf("failed to watch: client closed: %w", err)
		}
		if !retryable(err) {
			return fmt.Errorf("failed to watch: %w", err)
		}
		d := watchDelay(failures)
		if failures == 0 {
			c.log.Warn("count watch interrupted; reconnecting", "channel", channel, "err", err, "delay", d)
		} else {
			c.log.Debug("count watch still failing", "channel", channel, "err", err, "delay", d, "failed_attempts", failures)
		}
		failures++
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-c.done:
			t.Stop()
			return fmt.Errorf("failed to watch: client closed: %w", err)
		}
	}
}

// watchOnce opens one stream and passes its values to fn until it breaks.
func (c *Client) watchOnce(ctx context.Context, channel string, fn func(Online)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{Channel: channel})
	if err != nil {
		return err
	}
	for {
		res, err := stream.Recv()
		if err != nil {
			return err // io.EOF when the server ends the stream cleanly: retried
		}
		fn(Online{Connections: res.GetConnections(), Visitors: res.GetVisitors()})
	}
}

func (c *Client) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// retryable reports whether reopening the stream may succeed where err
// failed.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented:
		return false
	}
	return true
}

// watchDelay returns the wait before the next attempt after failures
// failed ones: it doubles from watchMinDelay up to watchMaxDelay, with
// "equal jitter" (a random half) so that the web servers watching a node
// that restarts do not all come back at the same instant.
func watchDelay(failures int) time.Duration {
	d := watchMaxDelay
	if failures < 16 {
		d = min(watchMaxDelay, watchMinDelay<<failures)
	}
	return d/2 + rand.N(d/2+1)
}

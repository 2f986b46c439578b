// Package client is the Go client web servers use to reach a Switchboard
// node over gRPC: emit events to the connected browsers, count them, and
// watch the count. It hides the generated stubs behind plain Go types.
//
// A Client is safe for concurrent use: create one per process at start-up,
// share it between HTTP handlers, and Close it on shutdown.
//
//	c, err := client.Dial("switchboard:9090", client.WithToken(os.Getenv("SWITCHBOARD_API_TOKEN")))
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//	res, err := c.Emit(ctx, "ShowMessage", map[string]any{"text": "hi"})
//
// Errors from the server keep their gRPC status: status.Code(err) returns
// codes.InvalidArgument for bad input, codes.Unauthenticated for a missing
// or wrong token, codes.Unavailable while the node is down, draining or a
// passive standby. Emit and Watch retry codes.Unavailable on their own
// (Emit until its context ends, with an idempotency key so that a retry
// is delivered once), so they ride through a fail-over.
package client

import (
	"context"
	crand "crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/identity"
)

// Client talks to one Switchboard target. Create it with Dial; all methods
// are safe for concurrent use.
type Client struct {
	cc        *grpc.ClientConn
	api       switchboardv1.SwitchboardServiceClient
	log       *slog.Logger
	done      chan struct{} // closed by Close; ends every Watch
	closeOnce sync.Once
	closeErr  error
}

// Option configures Dial.
type Option func(*options)

type options struct {
	token string
	creds credentials.TransportCredentials
	dial  []grpc.DialOption
	log   *slog.Logger
}

// WithToken makes every call carry "authorization: Bearer <token>", as a
// node started with SWITCHBOARD_API_TOKEN requires. An empty token sends
// nothing, so the value can come straight from an optional setting. Over
// the default insecure transport the token crosses the network in clear
// text: keep that network private or use WithTransportCredentials.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithTransportCredentials secures the connection, for example with
// credentials.NewTLS. Default: insecure (plaintext) transport, which fits
// a node on loopback or on a private network.
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = creds }
}

// WithDialOptions passes extra options to grpc.NewClient. They are applied
// last, so they override the client's own (transport credentials,
// reconnect backoff); grpc.WithDefaultCallOptions(grpc.WaitForReady(true))
// for instance makes calls wait for a node instead of failing at once
// while none is reachable.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// WithLogger sets where the client logs, which it does only when a Watch
// loses and regains its stream. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// connectBackoff bounds how long the connection waits before redialling a
// node that went away: gRPC's default grows to 120 s, far longer than a
// node restart takes.
var connectBackoff = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   5 * time.Second,
	},
	MinConnectTimeout: 20 * time.Second,
}

// Dial returns a Client for target, a gRPC target such as
// "switchboard:9090" or "dns:///switchboard:9090". Like grpc.NewClient it
// does not connect: the first call does, and a node that is down shows up
// as a codes.Unavailable error from that call.
func Dial(target string, opts ...Option) (*Client, error) {
	if target == "" {
		return nil, errors.New("failed to dial: empty target")
	}
	o := options{creds: insecure.NewCredentials(), log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(o.creds),
		grpc.WithConnectParams(connectBackoff),
	}
	if o.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(o.token)))
	}
	cc, err := grpc.NewClient(target, append(dopts, o.dial...)...)
	if err != nil {
		return nil, fmt.Errorf("failed to dial %s: %w", target, err)
	}
	return &Client{
		cc:   cc,
		api:  switchboardv1.NewSwitchboardServiceClient(cc),
		log:  o.log,
		done: make(chan struct{}),
	}, nil
}

// Close closes the connection: calls in flight fail and every Watch
// returns. Calling it again does nothing and returns the first result.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		if err := c.cc.Close(); err != nil {
			c.closeErr = fmt.Errorf("failed to close: %w", err)
		}
	})
	return c.closeErr
}

// EmitResult describes an emitted message.
type EmitResult struct {
	// ID is the message's unique id; browsers receive it in the message
	// frame.
	ID string
	// Recipients is the number of browser connections on the node the
	// message was queued to.
	Recipients int64
	// Offset is the message's position in the node's log, which browsers
	// that reconnect resume from.
	Offset uint64
	// Duplicate reports that the node had already delivered a message with
	// this idempotency key (an earlier attempt whose answer was lost) and
	// did not deliver it again; ID and Recipients are the first attempt's.
	Duplicate bool
}

// EmitOption configures one Emit.
type EmitOption func(*emitOptions)

type emitOptions struct {
	channel string
	key     string
}

// WithIdempotencyKey sets the emit's idempotency key, which is also the
// message id browsers see: 1 to 128 bytes of printable UTF-8, unique per
// message. Emits with a key a node has seen in the last few minutes are
// not delivered again, and browsers drop a message id they have seen, so
// a web server that retries a request after a crash can pass a key
// derived from it (an order id, say) to emit once. Default: a random
// 128-bit key per Emit call, shared by its retries.
func WithIdempotencyKey(key string) EmitOption {
	return func(o *emitOptions) { o.key = key }
}

// ToChannel sends the message only to the browsers subscribed to channel
// instead of to every browser.
func ToChannel(channel string) EmitOption {
	return func(o *emitOptions) { o.channel = channel }
}

// Emit sends event with data to every connected browser, or to one
// channel's subscribers with ToChannel. data is any value encoding/json can
// marshal (nil is JSON null; a json.RawMessage is sent as the JSON it
// holds) or a *structpb.Value. Numbers travel as float64, exact up to 2^53;
// browsers get object keys sorted.
//
// Data JSON cannot hold (a channel, a func, NaN) fails locally with
// codes.InvalidArgument, as does whatever the server rejects: an empty or
// invalid event name, an invalid channel name, data over its size limit,
// an invalid idempotency key.
//
// Emit retries while the node is unreachable, draining or a passive
// standby (codes.Unavailable), with jittered exponential backoff from
// 50 ms to 2 s, until it succeeds or ctx ends: give ctx a deadline. Every
// attempt carries the same idempotency key (see WithIdempotencyKey), so
// the message is delivered once even when an attempt's answer was lost;
// the browsers' client.js also drops a copy a fail-over delivers twice.
func (c *Client) Emit(ctx context.Context, event string, data any, opts ...EmitOption) (EmitResult, error) {
	var o emitOptions
	for _, opt := range opts {
		opt(&o)
	}
	v, err := toValue(data)
	if err != nil {
		return EmitResult{}, fmt.Errorf("failed to emit: %w", err)
	}
	if o.key == "" {
		o.key = newKey()
	}
	req := &switchboardv1.EmitMessageRequest{Event: event, Data: v, Channel: o.channel, IdempotencyKey: o.key}
	for attempt := 0; ; attempt++ {
		res, err := c.api.EmitMessage(ctx, req)
		if err == nil {
			return EmitResult{ID: res.GetId(), Recipients: res.GetRecipients(), Offset: res.GetOffset(), Duplicate: res.GetDuplicate()}, nil
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil || c.closed() {
			return EmitResult{}, fmt.Errorf("failed to emit: %w", err)
		}
		t := time.NewTimer(emitDelay(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return EmitResult{}, fmt.Errorf("failed to emit: %w (then %w)", err, ctx.Err())
		case <-c.done:
			t.Stop()
			return EmitResult{}, fmt.Errorf("failed to emit: client closed: %w", err)
		}
	}
}

// The bounds of the delay between two attempts of one Emit.
const (
	emitMinDelay = 50 * time.Millisecond
	emitMaxDelay = 2 * time.Second
)

// emitDelay returns the wait after failed attempt n (0-based): doubling
// from emitMinDelay to emitMaxDelay, with equal jitter.
func emitDelay(n int) time.Duration {
	d := emitMaxDelay
	if n < 16 {
		d = min(emitMaxDelay, emitMinDelay<<n)
	}
	return d/2 + rand.N(d/2+1)
}

var keyEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newKey returns a random 128-bit idempotency key in 26 characters.
func newKey() string {
	var b [16]byte
	crand.Read(b[:])
	return keyEncoding.EncodeToString(b[:])
}

// Count returns the number of open browser connections, or the number of
// subscribers of channel when it is not empty.
func (c *Client) Count(ctx context.Context, channel string) (int64, error) {
	o, err := c.Online(ctx, channel)
	return o.Connections, err
}

// Online is a count of browser connections and of the distinct visitors
// behind them: three tabs of one visitor are three connections and one
// visitor.
type Online struct {
	Connections int64
	Visitors    int64
}

// Online returns the open browser connections and the distinct visitors
// among them, or among channel's subscribers when it is not empty.
func (c *Client) Online(ctx context.Context, channel string) (Online, error) {
	res, err := c.api.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{Channel: channel})
	if err != nil {
		return Online{}, fmt.Errorf("failed to count: %w", err)
	}
	return Online{Connections: res.GetConnections(), Visitors: res.GetVisitors()}, nil
}

// Visitor is one visitor online.
type Visitor struct {
	// ID is the subject of the visitor's identity token, or the anonymous
	// id the browser chose (Anonymous).
	ID        string
	Anonymous bool
	// Connections is the visitor's open connections (to the channel, when
	// one was asked for).
	Connections int64
}

// Presence returns one page of the visitors online (of channel, when it
// is not empty), in the order of kind (anonymous first) and id: at most
// pageSize (1 to 1,000; 0 means 100), starting after pageToken ("" for
// the first page). next is the token of the next page, "" after the last.
func (c *Client) Presence(ctx context.Context, channel string, pageSize int, pageToken string) (visitors []Visitor, next string, err error) {
	res, err := c.api.GetPresence(ctx, &switchboardv1.GetPresenceRequest{Channel: channel, PageSize: int32(min(max(pageSize, -1), 1<<20)), PageToken: pageToken})
	if err != nil {
		return nil, "", fmt.Errorf("failed to list visitors: %w", err)
	}
	for _, v := range res.GetVisitors() {
		visitors = append(visitors, Visitor{ID: v.GetId(), Anonymous: v.GetKind() == switchboardv1.Visitor_KIND_ANONYMOUS, Connections: v.GetConnections()})
	}
	return visitors, res.GetNextPageToken(), nil
}

// MintToken returns an identity token for the browser of sub, a signed-in
// user: a JWT signed with HS256 and secret (the nodes'
// SWITCHBOARD_TOKEN_SECRET), valid for ttl. The browser connects with it
// (Switchboard.connect(urls, {token})) and counts as sub on every node;
// sub is 1 to 128 bytes. Keep ttl short, minutes, and mint a new one
// when the page asks.
func MintToken(secret, sub string, ttl time.Duration) (string, error) {
	return identity.Mint([]byte(secret), sub, ttl)
}

// toValue converts data to the protobuf form of a JSON value, by way of
// encoding/json so that struct tags and json.Marshaler apply.
func toValue(data any) (*structpb.Value, error) {
	if v, ok := data.(*structpb.Value); ok {
		return v, nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, &invalidDataError{err}
	}
	v := new(structpb.Value)
	if err := protojson.Unmarshal(b, v); err != nil {
		return nil, &invalidDataError{err}
	}
	return v, nil
}

// invalidDataError is data that cannot be sent. It carries
// codes.InvalidArgument, like the server's own refusals, and unwraps to
// the encoding error (*json.UnsupportedValueError and so on).
type invalidDataError struct{ err error }

func (e *invalidDataError) Error() string { return "invalid data: " + e.err.Error() }
func (e *invalidDataError) Unwrap() error { return e.err }

func (e *invalidDataError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

// bearer is a token sent with every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity allows the token over plaintext, which the
// contract's default deployment (a private Docker network) uses.
func (b bearer) RequireTransportSecurity() bool { return false }

// Package cluster joins Switchboard nodes over NATS: many active nodes
// behind one load balancer, with one message log and exact counts.
//
// The log is a JetStream stream. An emit on any node goes into it (the
// hub's Sequencer): JetStream gives it its offset, its sequence in the
// stream, and de-duplicates retries by message id across the cluster.
// Every node reads the whole stream in order, its own messages included,
// and delivers each message to its browsers (hub.Deliver), so every
// browser in the cluster sees one order, and each node's own log holds
// the newest messages for resumes on any node.
//
// Counts travel on core NATS (the hub's Broker): each member sends the
// changes of its own counts as they happen and a snapshot of them every
// heartbeat; every member adds the others' to its own. A member that
// shuts down says so and leaves at once; one that stops sending is
// dropped after a few heartbeats. See counts.go.
//
// The hub imports nothing of this package, nor of NATS.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// Defaults and bounds of Config.
const (
	DefaultName = "switchboard"
	// minStreamMessages is the fewest messages the stream keeps, whatever
	// the history size: a node that falls a little behind must still find
	// every message it has not delivered yet.
	minStreamMessages = 10_000
)

// Config configures a cluster member.
type Config struct {
	// URLs are the NATS servers, such as nats://nats1:4222. Required.
	URLs []string
	// Name is the cluster's name: members with the same name on one NATS
	// share counts and the log. 1 to 64 letters, digits, '-' or '_'.
	// Default: "switchboard".
	Name string
	// Member names this node in the cluster, stable across its restarts
	// (a restarted member replaces its earlier self at once). Default: the
	// host name.
	Member string
	// CredsFile is a NATS credentials file (a user JWT and its seed), for a
	// NATS that requires them. Default: none.
	CredsFile string
	// CAFile holds the PEM CAs that sign the NATS servers' certificates:
	// the connection then uses TLS. Default: none (or what the URLs'
	// tls:// scheme and the system roots give).
	CAFile string
	// Replicas is the number of NATS servers that hold the stream: 1, or 3
	// for a three-server NATS cluster. Default: 1.
	Replicas int
	// HistorySize and HistoryTTL bound the stream (at least 10,000
	// messages are kept, so members that lag find what they have not
	// delivered). Default: 1,000 and 5 minutes.
	HistorySize int
	HistoryTTL  time.Duration
	// Dedupe is how long the stream remembers message ids, so that a retry
	// within it is a duplicate. Default: 5 minutes, at most HistoryTTL.
	Dedupe time.Duration
	// MaxDataBytes is the largest message data the node takes: NATS must
	// take it too (its max_payload, 1 MiB by default), or the start fails.
	// Default: unchecked.
	MaxDataBytes int
	// Logger receives the member's logs. Default: slog.Default().
	Logger *slog.Logger
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Check reports the first thing wrong with cfg, if any, in words fit for
// an operator.
func (cfg *Config) Check() error {
	if len(cfg.URLs) == 0 {
		return errors.New("no NATS server URL")
	}
	for _, u := range cfg.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" {
			return fmt.Errorf("NATS URL %q: want a URL such as nats://host:4222", u)
		}
		switch p.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("NATS URL %q: scheme %q; want nats://, tls://, ws:// or wss://", u, p.Scheme)
		}
	}
	if cfg.Name != "" && !nameRE.MatchString(cfg.Name) {
		return fmt.Errorf("cluster name %q: want 1 to 64 letters, digits, '-' or '_'", cfg.Name)
	}
	if cfg.Member != "" && strings.ContainsAny(cfg.Member, " \t\r\n.*>") {
		return fmt.Errorf("member name %q: no spaces, '.', '*' or '>'", cfg.Member)
	}
	if cfg.Replicas < 0 || cfg.Replicas > 5 {
		return fmt.Errorf("stream replicas %d: want 1 to 5", cfg.Replicas)
	}
	for what, f := range map[string]string{"credentials file": cfg.CredsFile, "CA file": cfg.CAFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("NATS %s: %w", what, err)
		}
	}
	return nil
}

func (cfg *Config) setDefaults() {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Member == "" {
		cfg.Member, _ = os.Hostname()
		if cfg.Member == "" {
			cfg.Member = "member"
		}
		cfg.Member = strings.NewReplacer(".", "-", " ", "-", "*", "-", ">", "-").Replace(cfg.Member)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.HistorySize == 0 {
		cfg.HistorySize = 1000
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = 5 * time.Minute
	}
	if cfg.Dedupe <= 0 {
		cfg.Dedupe = 5 * time.Minute
	}
	cfg.Dedupe = min(cfg.Dedupe, cfg.HistoryTTL)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
}

// Member is this node's membership of a cluster: the hub's Broker (counts)
// and Sequencer (the log). Create it with Join, give it to the hub's
// Config, then call Start with the hub.
type Member struct {
	cfg     Config
	log     *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string // the stream's name
	subject string // the log's subject
	counts  string // the counts' subject

	mu      sync.Mutex
	state   State
	changed chan struct{} // closed and replaced when state changes
	epoch   string        // the stream's, once read

	exchange *exchange
	consumer *consumer
	stop     context.CancelFunc
	done     sync.WaitGroup
}

var (
	_ hub.Broker    = (*Member)(nil)
	_ hub.Sequencer = (*Member)(nil)
)

// State says whether a member can serve.
type State struct {
	// Connected: the NATS connection is up.
	Connected bool
	// CaughtUp: the member has delivered the log up to where it was when
	// it joined (or rejoined after losing NATS), so that resumes on it
	// find what they missed.
	CaughtUp bool
	// Reason says why the member cannot serve, when it cannot.
	Reason string
}

// Ready reports whether the member serves: connected and caught up.
func (s State) Ready() bool { return s.Connected && s.CaughtUp }

// Join connects to NATS and makes sure the cluster's stream exists with
// cfg's bounds. A NATS that does not answer yet is retried in the
// background (the member is then not ready); a stream that cannot be made
// is an error.
func Join(ctx context.Context, cfg Config) (*Member, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m := &Member{
		cfg:     cfg,
		log:     cfg.Logger,
		stream:  "SB_" + cfg.Name,
		subject: "sb." + cfg.Name + ".log",
		counts:  "sb." + cfg.Name + ".counts",
		changed: make(chan struct{}),
		state:   State{Reason: "connecting to NATS"},
	}
	opts := []nats.Option{
		nats.Name("switchboard " + cfg.Member),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A publish while NATS is away fails at once instead of sitting
		// in a buffer and being stored, unacknowledged, later.
		nats.ReconnectBufSize(-1),
		// A NATS server that vanishes without a reset is noticed within
		// about two seconds.
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(2),
		nats.RetryOnFailedConnect(true),
		// A member's own counts come back to it no more: it would decode
		// each only to drop it.
		nats.NoEcho(),
		nats.ConnectHandler(func(*nats.Conn) { m.connected(true, "") }),
		nats.ReconnectHandler(func(*nats.Conn) { m.connected(true, "") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { m.connected(false, disconnectReason(err)) }),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to NATS: %w", err)
	}
	m.nc = nc
	if nc.IsConnected() {
		m.connected(true, "")
	}
	if m.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("failed to use JetStream: %w", err)
	}
	if nc.IsConnected() {
		if need := int64(cfg.MaxDataBytes) + maxHeaderBytes; cfg.MaxDataBytes > 0 && need > nc.MaxPayload() {
			nc.Close()
			return nil, fmt.Errorf("NATS takes messages of at most %d bytes (its max_payload), less than SWITCHBOARD_MAX_DATA_BYTES (%d) and the headers need: lower it, or raise max_payload", nc.MaxPayload(), cfg.MaxDataBytes)
		}
		// A stream NATS refuses (replicas beyond its servers, JetStream
		// off, a stream of the same name with other subjects) is a
		// setting to fix, not a moment's trouble: fail now.
		if err := m.makeStream(ctx); err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
				nc.Close()
				return nil, err
			}
		}
	}
	return m, nil
}

func disconnectReason(err error) string {
	if err == nil {
		return "NATS connection lost"
	}
	return "NATS connection lost: " + err.Error()
}

// streamConfig is the stream the cluster shares.
func (m *Member) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        m.stream,
		Description: "Switchboard cluster " + m.cfg.Name + ": the message log",
		Subjects:    []string{m.subject},
		Storage:     jetstream.FileStorage,
		Replicas:    m.cfg.Replicas,
		MaxMsgs:     int64(max(m.cfg.HistorySize, minStreamMessages)),
		MaxAge:      m.cfg.HistoryTTL,
		Duplicates:  m.cfg.Dedupe,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	}
}

// streamAttempt bounds one request to create or update the stream.
// JetStream leaves some requests unanswered when several clients make the
// same stream at once (members started together on a new NATS cluster);
// the next attempt finds the stream made.
const streamAttempt = 2 * time.Second

// makeStream creates or updates the stream, attempt after attempt until
// one is answered or ctx ends.
func (m *Member) makeStream(ctx context.Context) error {
	for {
		actx, cancel := context.WithTimeout(ctx, streamAttempt)
		_, err := m.ensureStream(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
}

// streamState is where the log stands: its epoch, and the sequences of
// its first and last messages.
type streamState struct {
	epoch       string
	first, last uint64
}

// ensureStream creates or updates the stream and returns where it stands.
func (m *Member) ensureStream(ctx context.Context) (streamState, error) {
	s, err := m.js.CreateOrUpdateStream(ctx, m.streamConfig())
	if err != nil {
		return streamState{}, fmt.Errorf("failed to create or update stream %s: %w", m.stream, err)
	}
	info := s.CachedInfo()
	return streamState{epochOf(m.cfg.Name, info.Created), info.State.FirstSeq, info.State.LastSeq}, nil
}

// epochOf names the log of a stream created at created: a stream made
// anew (its messages gone) has another epoch.
func epochOf(cluster string, created time.Time) string {
	return cluster + "." + fmt.Sprintf("%x", created.UnixNano())
}

// Start runs the member for h until Close: it delivers the log to h from
// where h's history should begin, and exchanges counts. The hub must have
// been made with this member as its Broker and Sequencer.
func (m *Member) Start(h *hub.Hub) {
	ctx, cancel := context.WithCancel(context.Background())
	c := newConsumer(m, h)
	m.mu.Lock()
	m.stop, m.consumer = cancel, c
	m.mu.Unlock()
	m.done.Add(1)
	go func() {
		defer m.done.Done()
		c.run(ctx)
	}()
}

// Append adds msg to the shared log (the hub's Sequencer).
func (m *Member) Append(ctx context.Context, msg hub.Message) (uint64, bool, error) {
	if !m.nc.IsConnected() {
		return 0, false, errUnavailable
	}
	nm := &nats.Msg{Subject: m.subject, Header: nats.Header{}, Data: msg.Data}
	nm.Header.Set(eventHeader, msg.Event)
	if msg.Channel != "" {
		nm.Header.Set(channelHeader, msg.Channel)
	}
	// One attempt waits at most appendTimeout for JetStream: an
	// acknowledgement lost with a NATS server would otherwise hold the
	// call until the caller's deadline, which it does not retry. Past it
	// the caller gets UNAVAILABLE and retries with the same id, which
	// the stream answers as a duplicate if the first attempt was stored.
	actx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	ack, err := m.js.PublishMsg(actx, nm, jetstream.WithMsgID(msg.ID), jetstream.WithExpectStream(m.stream))
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return 0, false, fmt.Errorf("the cluster's log did not acknowledge the message within %v: retry", appendTimeout)
		}
		return 0, false, fmt.Errorf("failed to add the message to the cluster's log: %w", err)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// appendTimeout bounds one attempt to add a message to the stream.
const appendTimeout = 2 * time.Second

// errUnavailable is what an emit gets while the member has no NATS.
var errUnavailable = errors.New("this node has lost NATS: retry on another node")

// The headers of a log message; its data is the message's data. Event,
// channel and id are at most 128 bytes each: the headers of a message
// take at most maxHeaderBytes.
const (
	eventHeader    = "Sb-Event"
	channelHeader  = "Sb-Channel"
	maxHeaderBytes = 1024
)

// PublishCounts sends this node's counts to the others (the hub's Broker).
func (m *Member) PublishCounts(_ context.Context, c hub.Counts) error {
	return m.exchangeOf().publish(c)
}

// Subscribe starts taking the other members' counts for h (the hub's
// Broker).
func (m *Member) Subscribe(h hub.BrokerHandler) error {
	return m.exchangeOf().start(h)
}

func (m *Member) exchangeOf() *exchange {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.exchange == nil {
		m.exchange = newExchange(m)
	}
	return m.exchange
}

// Close tells the other members this one leaves, stops, and closes the
// NATS connection.
func (m *Member) Close() error {
	m.mu.Lock()
	stop := m.stop
	m.mu.Unlock()
	if stop != nil {
		stop()
	}
	m.exchangeOf().leave()
	m.done.Wait()
	m.nc.Close()
	return nil
}

// State returns the member's state and a channel closed when it next
// changes.
func (m *Member) State() (State, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, m.changed
}

// Epoch returns the log's epoch, once the member has read it.
func (m *Member) Epoch() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epoch
}

// Name returns this member's name in the cluster (Config.Member, or its
// default).
func (m *Member) Name() string { return m.cfg.Member }

// Peers returns the names of the other members this one hears from,
// sorted, idle ones included.
func (m *Member) Peers() []string { return m.exchangeOf().peerNames() }

func (m *Member) setState(fn func(*State)) {
	m.mu.Lock()
	before := m.state
	fn(&m.state)
	switch {
	case !m.state.Connected && m.state.Reason == "":
		m.state.Reason = "NATS connection lost"
	case m.state.Connected && !m.state.CaughtUp && m.state.Reason == "":
		m.state.Reason = "catching up with the cluster's log"
	case m.state.Ready():
		m.state.Reason = ""
	}
	changed := m.state != before
	if changed {
		close(m.changed)
		m.changed = make(chan struct{})
	}
	st := m.state
	m.mu.Unlock()
	if changed {
		if st.Ready() {
			m.log.Info("cluster member ready", "cluster", m.cfg.Name, "member", m.cfg.Member)
		} else {
			m.log.Warn("cluster member not ready", "cluster", m.cfg.Name, "member", m.cfg.Member, "reason", st.Reason)
		}
	}
}

// connected records the NATS connection's state. Losing it also means
// catching up again once it is back.
func (m *Member) connected(up bool, reason string) {
	m.setState(func(s *State) {
		s.Connected = up
		s.Reason = reason
		if !up {
			s.CaughtUp = false
		}
	})
	m.mu.Lock()
	c := m.consumer
	m.mu.Unlock()
	if up && c != nil {
		c.rejoin()
	}
}

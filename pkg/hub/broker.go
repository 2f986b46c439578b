package hub

import "context"

// Message is one emitted event.
type Message struct {
	// ID is unique per message; Emit assigns it.
	ID string
	// Offset is the message's position in the emitting node's log; Emit
	// assigns it.
	Offset uint64
	// Event is the name browsers listen for.
	Event string
	// Channel selects the subscribers; empty means every connection.
	Channel string
	// Data is the payload as valid JSON; empty means null.
	Data []byte
}

// Counts is one node's connection and visitor counts.
type Counts struct {
	// Node identifies the reporting node.
	Node string
	// Total is the number of connections open on the node.
	Total int64
	// Channels holds the subscriber count of every non-empty channel.
	Channels map[string]int64
	// Solo holds, by channel ("" for all of the node's connections), the
	// connections without a visitor key, each a visitor of its own; the
	// channels without any are left out.
	Solo map[string]int64
	// Visitors are the node's visitors whose connections changed since
	// the Counts before, as they are now; with VisitorsFull, every visitor
	// of the node, replacing what it reported before.
	Visitors     []VisitorCount
	VisitorsFull bool
}

// Broker carries counts between the nodes of a cluster; messages travel
// through a Sequencer. Implementations must be safe for concurrent use.
type Broker interface {
	// PublishCounts hands this node's counts to every other node; their
	// Visitors are the changes since the Counts before, never the whole
	// set.
	PublishCounts(ctx context.Context, c Counts) error
	// Subscribe starts delivering other nodes' counts to h.
	Subscribe(h BrokerHandler) error
	// Close stops delivery and releases the broker's resources.
	Close() error
}

// BrokerHandler receives what other nodes publish. The Hub implements it.
type BrokerHandler interface {
	// HandleCounts records another node's counts, which replace the ones
	// it sent before, and applies its visitors (changes, or with
	// VisitorsFull the whole set); a Counts with no connection, channel
	// or visitor removes the node and its visitors.
	HandleCounts(c Counts)
}

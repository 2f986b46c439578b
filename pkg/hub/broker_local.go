package hub

import "context"

// Local is the default Broker: a single node, so there is nobody else to
// reach and nothing outside the process is needed.
type Local struct{}

var _ Broker = Local{}

// PublishCounts does nothing: a single node has no other nodes.
func (Local) PublishCounts(context.Context, Counts) error { return nil }

// Subscribe does nothing: no other node ever publishes.
func (Local) Subscribe(BrokerHandler) error { return nil }

// Close does nothing.
func (Local) Close() error { return nil }

package notify

import "context"

// Publisher publishes messages. Publish validates p (channel and event names,
// data size and JSON), stores it in the channel's history and fans it out to
// every instance subscribed to the channel. It returns the message's ID once
// the message is stored: a successful Publish is never lost while it is
// within the retained history.
type Publisher interface {
	Publish(ctx context.Context, p Publication) (ID, error)
}

// BatchPublisher is the optional ability to publish several messages in one
// round trip. IDs are returned in input order; a failing batch may have
// published a prefix of its messages.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, ps []Publication) ([]ID, error)
}

// Broker moves messages between instances and keeps each channel's recent
// history. The hub is its only caller; a Broker may serve several sinks (for
// example several hubs in one process).
//
// Subscribe returns once the subscription is live: every message published
// after Subscribe returns reaches sink. Messages of a channel reach sink in
// ID order, each once, even across broker reconnects (the broker catches up
// from history after each one). Calls for one channel and one sink are made
// in order and never concurrently.
type Broker interface {
	Publisher
	Subscribe(ctx context.Context, channel string, sink Sink) error
	Unsubscribe(ctx context.Context, channel string, sink Sink) error
	// History returns up to limit messages of channel after position after,
	// oldest first, and the channel's last ID. With limit 0 it returns only
	// the last ID. See History for what the result tells.
	History(ctx context.Context, channel string, after ID, limit int) (History, error)
}

// History is a page of a channel's retained messages.
//
// Gap is set when messages after the requested position are no longer
// retained (trimmed by the history bound, or expired with the channel), so the
// page does not continue exactly from the position. A position after the
// channel's last message is an error (ErrUnknownPosition), not a gap.
type History struct {
	Messages []*Envelope
	Gap      bool
	Last     ID // the channel's last ID (zero if it has none)
}

// IDAdvancer is implemented by brokers that can move a channel's ID
// generator forward. After AdvanceIDs(channel, past), every message the
// channel gets has an ID after past. The hub uses it when a channel ends
// before a position it delivered (Redis lost the last writes: a failover to
// a replica that had not received them): without it, new messages could get
// IDs at or before positions that subscribers keep, and be dropped as
// already seen.
type IDAdvancer interface {
	AdvanceIDs(ctx context.Context, channel string, past ID) error
}

// Sink receives a channel's live messages from a broker. Deliver must not
// block. Brokers call Deliver for one channel from one goroutine at a time.
type Sink interface {
	Deliver(m *Envelope)
	// Lost reports that messages of channel published while the broker was
	// disconnected could not be recovered (they left the retained history).
	Lost(channel string)
}

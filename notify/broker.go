package notify

import "context"

// Publisher publishes messages. Publish validates p (channel and event names,
// data size and JSON) unless it is Normalized already, stores it in the
// channel's history and fans it out to every instance subscribed to the
// channel. It returns the message's ID once the message is stored: a
// successful Publish is never lost while it is within the retained history.
type Publisher interface {
	Publish(ctx context.Context, p Publication) (ID, error)
}

// Broker moves messages between instances and keeps each channel's recent
// history. Its callers are the hub (subscriptions, history, AdvanceIDs), the
// publishers (the REST API, client publish commands) and readiness probes
// (Ping). A Broker may serve several sinks (for example several hubs in one
// process). Decorators embed a Broker and override only what they change.
//
// Subscribe returns once the subscription is live: every message published
// after Subscribe returns reaches sink. Messages of a channel reach sink in
// ID order, each once, even across broker reconnects (the broker catches up
// from history after each one). Calls for one channel and one sink are made
// in order and never concurrently.
type Broker interface {
	Publisher
	// PublishBatch publishes several messages, in one round trip where
	// the broker has round trips. The batch is validated whole first
	// (NormalizeBatch): an invalid message publishes nothing. IDs are
	// returned in input order; a batch that fails after that may have
	// published a prefix of its messages, whose IDs come with the error.
	PublishBatch(ctx context.Context, ps []Publication) ([]ID, error)
	Subscribe(ctx context.Context, channel string, sink Sink) error
	Unsubscribe(ctx context.Context, channel string, sink Sink) error
	// History returns up to limit messages of channel after position after,
	// oldest first, and the channel's last ID. With limit 0 it returns only
	// the last ID. See History for what the result tells.
	History(ctx context.Context, channel string, after ID, limit int) (History, error)
	// AdvanceIDs moves channel's ID generator forward: after it, every
	// message the channel gets has an ID after past (it never moves
	// back). The hub calls it when a channel ends before a position it
	// delivered (Redis lost the last writes: a failover to a replica that
	// had not received them): without it, new messages could get IDs at
	// or before positions that subscribers keep, and be dropped as
	// already seen.
	AdvanceIDs(ctx context.Context, channel string, past ID) error
	// Ping reports whether the broker can serve (nil), or why not (an
	// ErrUnavailable error), for readiness probes.
	Ping(ctx context.Context) error
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

// Sink receives a channel's live messages from a broker. Deliver must not
// block. Brokers call Deliver for one channel from one goroutine at a time.
type Sink interface {
	Deliver(m *Envelope)
	// Lost reports that messages of channel published while the broker was
	// disconnected could not be recovered (they left the retained history).
	Lost(channel string)
}

// Package notify is Herald's core: messages and their IDs, channel names,
// the Broker that carries messages between instances and keeps their
// history, the embedded MemoryBroker, and the Hub that fans messages out to
// an instance's local connections. It imports no transport: a transport
// adapts its connection to a Conn.
//
// # Data flow
//
// A publisher calls Broker.Publish (or PublishBatch). The broker validates
// the publication and compacts its data, unless the publisher already did
// with Publication.Normalize (once per publish, whoever does it), assigns
// the message an ID (strictly increasing per channel), stores it in the
// channel's bounded history and delivers it to every instance subscribed
// to the channel. On each instance the Hub encodes it once (NewMessage)
// and queues the same *Envelope on every local subscriber: a pointer push
// under the subscriber's lock, no allocation, never a wait. Each
// connection's writer drains its queue and writes the batch.
//
// # The Broker interface
//
// Every broker implements all of Broker: publishing (single and batch),
// subscriptions, history, AdvanceIDs (moving a channel's IDs past a
// position the broker lost) and Ping (readiness). Callers use them
// directly, never by type assertion, so a decorator that embeds a Broker
// overrides only the methods it changes and passes the rest through.
//
// # Concurrency contract
//
//   - Hub, Conn, MemoryBroker and the brokers under notify/ are safe for
//     concurrent use.
//   - Dispatch never blocks on a connection. Each Conn has a bounded queue
//     (HubConfig.QueueLength); a connection that overflows is closed with
//     ErrLagged and its Done channel closes. Its client resumes from the last
//     ID it received.
//   - Per channel, a connection receives messages in ID order, each once.
//     A resume (SubscribeRequest.Since) registers the subscription first,
//     holding live messages, reads history after the position, queues it,
//     then releases the held messages that follow the last one sent — no gap
//     and no duplicate at the seam. A position older than the retained
//     history yields a gap notice (TypeGap) before what is retained.
//   - The goroutine that owns a Conn (its transport) must call Close when
//     the connection ends. Conn.Subscribe may block while it replays history
//     into a full queue, so the connection's writer must keep draining
//     meanwhile.
//   - The Hub starts no goroutine per connection or per message. It uses
//     timers for the linger of idle channel subscriptions, one short-lived
//     goroutine to clean up after a lagging connection, and one per channel
//     while it reads the channel's members again after a presence reset.
//     Hub.Close closes every connection and drops every broker
//     subscription; the broker is the caller's to close.
//   - Presence (HubConfig.Presence) is called from the goroutines of
//     Subscribe, Unsubscribe and Close, never with a hub or connection lock
//     held; presence envelopes come back through the hub's Sink like
//     messages, reach only subscriptions made with Presence, and move no
//     position. Per subscription, Join precedes Leave, each once.
//   - Presence implementations (MemoryBroker, the Redis broker): Join and
//     Leave only queue the change under a short lock; one timer per channel
//     with queued changes (none while idle) flushes them every
//     PresenceConfig.Interval and delivers the presence envelopes through
//     Sink.Deliver, under the same per-channel serialization as messages.
//   - Envelopes made by NewMessage are shared between connections and must
//     not be modified.
package notify

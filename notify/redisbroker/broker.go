// Package redisbroker is Herald's Redis broker: each channel's history is a
// Redis Stream, and live messages travel by Redis Pub/Sub between instances.
//
// Publish is one round trip: a Lua script XADDs the message to the channel's
// stream (MAXLEN ~ HistorySize, expiry HistoryTTL) and PUBLISHes its ID and
// payload. Each instance holds one Pub/Sub subscription per channel with
// local subscribers, spread over a few Pub/Sub connections, and after every
// subscribe confirmation — the first and each one after a reconnect — catches
// the channel up from its stream, so a dropped Pub/Sub connection, a Redis
// restart or a pause loses nothing that the stream still holds.
//
// On Redis Cluster (Config.Client a *redis.ClusterClient) the broker uses
// sharded Pub/Sub: the script SPUBLISHes, each Pub/Sub connection holds only
// channels of one node, and a channel whose slot moves (a sunsubscribe push,
// a MOVED reply, a failover) is resubscribed on its new node and caught up
// from its stream like after a reconnect; see cluster.go.
//
// The broker also keeps presence (notify.Presence): per channel a sorted set
// of leases and one of members, changed in batches by one script per
// Config.Presence.Interval that announces the changes on the channel's
// Pub/Sub channel; members of an instance that died leave within Lease +
// Interval. See presence.go.
//
// Redis must persist the streams (AOF) for messages to survive a Redis
// restart; see docs/architecture.md.
package redisbroker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/redis/go-redis/v9"
)

// Config configures a Broker. Zero values are the defaults.
type Config struct {
	// Client is the Redis client: a *redis.Client for one Redis, or a
	// *redis.ClusterClient for Redis Cluster (sharded Pub/Sub). Required;
	// the caller closes it after the broker. Give it MaxRetries -1: a
	// retried publish whose first attempt reached Redis publishes twice.
	Client redis.UniversalClient
	// Prefix starts every key and Pub/Sub channel. Default "herald:".
	Prefix string
	// HistorySize is the approximate number of messages each channel's
	// stream retains (XADD MAXLEN ~). Default 1000.
	HistorySize int64
	// HistoryTTL expires a channel's stream after that long without a
	// publish. Default 24h.
	HistoryTTL time.Duration
	// MaxPayload bounds a message's data. Default notify.DefaultMaxPayload.
	MaxPayload int
	// PubSubConns is the number of Pub/Sub connections channels are spread
	// over (on Redis Cluster: per master node). Default 4.
	PubSubConns int
	// HealthCheck is how often an idle Pub/Sub connection is pinged; one
	// that does not answer within another HealthCheck is replaced.
	// Default 2s.
	HealthCheck time.Duration
	// CanaryInterval is how often a canary is published to each Pub/Sub
	// connection, to check that it still delivers (see canary.go).
	// Negative disables the canary. Default 2s.
	CanaryInterval time.Duration
	// CanaryTimeout: a connection whose newest returned canary was sent
	// longer ago than this is late (CanaryErr). It must exceed
	// CanaryInterval. Default 5×CanaryInterval.
	CanaryTimeout time.Duration
	// Presence configures presence (see presence.go): Interval batches
	// each channel's joins and leaves, Lease bounds how long the members of
	// an instance that died stay present.
	Presence notify.PresenceConfig
	// Logger; nil means silent.
	Logger *slog.Logger
}

// Broker is a notify.Broker on Redis. Close stops its Pub/Sub connections.
type Broker struct {
	cfg     Config
	rdb     redis.UniversalClient
	cluster *redis.ClusterClient // nil unless on Redis Cluster
	publish *redis.Script        // PUBLISH, or SPUBLISH on a cluster
	shards  []*shard             // fixed; on a cluster see routes

	routes routes // cluster mode: shards by node, channel homes

	kick chan struct{} // cluster mode: wakes rebalanceLoop

	ctx          context.Context // cancelled by Close
	cancel       context.CancelFunc
	wg           sync.WaitGroup // the shards' goroutines and catch-ups
	catchUpSlots chan struct{}  // bounds concurrent catch-ups

	stats brokerStats
	// malformedLog rate-limits the log of malformed Pub/Sub messages: a
	// foreign writer on our channels must not flood the log (the count
	// is in Stats).
	malformedLog everyLimiter
	canaries     canaries
	presence     presence
}

var _ notify.Broker = (*Broker)(nil)

// New returns a Broker and starts its Pub/Sub read loops.
func New(cfg Config) (*Broker, error) {
	if cfg.Client == nil {
		return nil, errors.New("redisbroker: Config.Client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "herald:"
	}
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = 1000
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = 24 * time.Hour
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = notify.DefaultMaxPayload
	}
	if cfg.PubSubConns <= 0 {
		cfg.PubSubConns = 4
	}
	if cfg.HealthCheck <= 0 {
		cfg.HealthCheck = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Presence = cfg.Presence.WithDefaults()
	if err := canaryDefaults(&cfg); err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, rdb: cfg.Client, publish: publishScript, catchUpSlots: make(chan struct{}, maxConcurrentCatchUps)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.canaries.init()
	if c, ok := cfg.Client.(*redis.ClusterClient); ok {
		b.cluster, b.publish = c, spublishScript
		b.routes.init()
		b.kick = make(chan struct{}, 1)
	}
	// Load the scripts now so the first publish is one round trip; if Redis
	// is down, run loads them later. On a cluster, ScriptLoad reaches every
	// node.
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	_ = b.publish.Load(ctx, b.rdb).Err()
	_ = historyScript.Load(ctx, b.rdb).Err()
	for _, s := range []*redis.Script{presenceFlushScript, presenceRenewScript, presenceMembersScript} {
		_ = s.Load(ctx, b.rdb).Err()
	}
	cancel()
	b.wg.Add(1)
	go b.renewLoop()
	if b.cluster != nil {
		b.wg.Add(1)
		go b.rebalanceLoop()
		return b, nil
	}
	for range cfg.PubSubConns {
		b.startShard(newShard(b, ""))
	}
	return b, nil
}

// Close stops the Pub/Sub connections and waits for the broker's
// goroutines. Subscriptions end; the Redis client stays open.
func (b *Broker) Close() error {
	b.closePresence()
	b.cancel()
	for _, s := range b.allShards(true) {
		s.close()
	}
	b.wg.Wait()
	return nil
}

// Ping implements notify.Broker: it checks that Redis answers.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return notify.Unavailable("ping", err)
	}
	return nil
}

// streamKey and pubsubChannel share the hash tag {channel}, so on Redis
// Cluster a channel's stream and Pub/Sub channel live in one slot.
func (b *Broker) streamKey(channel string) string {
	return b.cfg.Prefix + "{" + channel + "}:h"
}

func (b *Broker) pubsubChannel(channel string) string {
	return b.cfg.Prefix + "{" + channel + "}"
}

// spublishScript is publishScript for Redis Cluster: SPUBLISH, so that the
// message reaches only the shard (master and replicas) owning the channel's
// slot, which is also the stream's slot.
var spublishScript = redis.NewScript(`
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[3], 'd', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SPUBLISH', ARGV[5], id .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
return id
`)

// publishScript stores the message and publishes "<id>\n<event>\n<data>" in
// one round trip. KEYS[1] stream; ARGV: maxlen, ttl ms, event, data, Pub/Sub
// channel.
var publishScript = redis.NewScript(`
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[3], 'd', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[5], id .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
return id
`)

// Publish implements notify.Publisher.
func (b *Broker) Publish(ctx context.Context, p notify.Publication) (notify.ID, error) {
	p, err := p.Normalize(b.cfg.MaxPayload)
	if err != nil {
		return notify.ID{}, err
	}
	res, err := b.run(ctx, b.publish, []string{b.streamKey(p.Channel)}, b.publishArgs(p)...).Text()
	if err != nil {
		b.stats.errors.Add(1)
		return notify.ID{}, notify.Unavailable("publish", err)
	}
	return notify.ParseID(res)
}

// publishArgs are the publish script's arguments for p, which Normalize
// returned.
func (b *Broker) publishArgs(p notify.Publication) []any {
	return []any{b.cfg.HistorySize, b.cfg.HistoryTTL.Milliseconds(), p.Event, []byte(p.Data), b.pubsubChannel(p.Channel)}
}

// run runs a script by its SHA: one round trip. If Redis lost its script
// cache (a restart), it loads the script and runs it again; go-redis's
// Script.Run would instead send the whole script with EVAL on every call.
func (b *Broker) run(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	if b.cluster != nil {
		return b.runOnSlotOwner(ctx, s, keys, args...)
	}
	return runOn(ctx, b.rdb, s, keys, args...)
}

// runOn runs a script by its SHA on c, loading it there if c lacks it.
func runOn(ctx context.Context, c redis.Scripter, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	cmd := s.EvalSha(ctx, c, keys, args...)
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		if err := s.Load(ctx, c).Err(); err != nil {
			return cmd
		}
		cmd = s.EvalSha(ctx, c, keys, args...)
	}
	return cmd
}

// PublishBatch implements notify.Broker: the whole batch is validated first
// (an invalid message publishes nothing), then sent in one pipeline (on a
// cluster, one per master).
func (b *Broker) PublishBatch(ctx context.Context, ps []notify.Publication) ([]notify.ID, error) {
	ps, err := notify.NormalizeBatch(ps, b.cfg.MaxPayload)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, nil
	}
	if b.cluster != nil {
		return b.publishBatchCluster(ctx, ps)
	}
	// EVALSHA in a pipeline: load the script once if Redis lost it.
	run := func() ([]*redis.Cmd, error) {
		pipe := b.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(ps))
		for i, p := range ps {
			cmds[i] = publishScript.EvalSha(ctx, pipe, []string{b.streamKey(p.Channel)}, b.publishArgs(p)...)
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = publishScript.Load(ctx, b.rdb).Err(); err == nil {
			cmds, err = run()
		}
	}
	ids := make([]notify.ID, 0, len(ps))
	for _, c := range cmds {
		s, cerr := c.Text()
		if cerr != nil {
			break
		}
		id, perr := notify.ParseID(s)
		if perr != nil {
			break
		}
		ids = append(ids, id)
	}
	if err != nil {
		b.stats.errors.Add(1)
		return ids, notify.Unavailable("publish batch", err)
	}
	return ids, nil
}

// historyScript returns {0} for a missing stream, else {1, last-generated-id,
// max-deleted-entry-id, recorded-first-entry-id, trimmed (entries-added minus
// length), entries after ARGV[1] (exclusive), at most ARGV[2] (none for 0)}.
var historyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local f = {}
for i = 1, #info, 2 do f[info[i]] = info[i+1] end
return {1, f['last-generated-id'], f['max-deleted-entry-id'], f['recorded-first-entry-id'],
  f['entries-added'] - f['length'],
  tonumber(ARGV[2]) > 0 and redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2]) or {}}
`)

// advanceScript moves a stream's last-generated-id up to ARGV[1] when it is
// behind it (XSETID; never backwards), so that every ID XADD generates from
// then on is after ARGV[1]. Returns 1 when it moved it.
var advanceScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last
for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i+1] end end
local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
local tms, tseq = string.match(ARGV[1], '^(%d+)-(%d+)$')
lms, lseq, tms, tseq = tonumber(lms), tonumber(lseq), tonumber(tms), tonumber(tseq)
if tms > lms or (tms == lms and tseq > lseq) then
  redis.call('XSETID', KEYS[1], ARGV[1])
  return 1
end
return 0
`)

// AdvanceIDs implements notify.Broker: after it, the channel's stream
// generates IDs after past. Used when Redis lost writes that were delivered
// (see catchUp).
func (b *Broker) AdvanceIDs(ctx context.Context, channel string, past notify.ID) error {
	if err := notify.ValidateChannel(channel); err != nil {
		return err
	}
	if err := b.run(ctx, advanceScript, []string{b.streamKey(channel)}, past.String()).Err(); err != nil {
		b.stats.errors.Add(1)
		return notify.Unavailable("advance ids", err)
	}
	return nil
}

// History implements notify.Broker in one round trip.
func (b *Broker) History(ctx context.Context, channel string, after notify.ID, limit int) (notify.History, error) {
	if err := notify.ValidateChannel(channel); err != nil {
		return notify.History{}, err
	}
	limit = max(limit, 0)
	res, err := b.run(ctx, historyScript, []string{b.streamKey(channel)}, after.String(), limit).Slice()
	if err != nil {
		b.stats.errors.Add(1)
		return notify.History{}, notify.Unavailable("history", err)
	}
	return b.parseHistory(channel, after, res)
}

func (b *Broker) parseHistory(channel string, after notify.ID, res []any) (notify.History, error) {
	if len(res) == 1 {
		// No stream: nothing was published, or the history expired or
		// was lost. Only a client with a position can have missed
		// something.
		return notify.History{Gap: !after.IsZero()}, nil
	}
	if len(res) != 6 {
		return notify.History{}, fmt.Errorf("redisbroker: history reply has %d elements", len(res))
	}
	last, err1 := notify.ParseID(fmt.Sprint(res[1]))
	maxDeleted, err2 := notify.ParseID(fmt.Sprint(res[2]))
	first, err3 := notify.ParseID(fmt.Sprint(res[3]))
	trimmed, _ := res[4].(int64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return notify.History{}, fmt.Errorf("redisbroker: malformed stream info: %w", err)
	}
	if after.After(last) {
		return notify.History{}, &notify.Error{Code: notify.ErrUnknownPosition.Code,
			Message: fmt.Sprintf("position %s is after the last message %s of channel %q", after, last, channel)}
	}
	// MAXLEN trimming removes the oldest entries and does not record their
	// IDs (max-deleted-entry-id counts only XDEL). A position before the
	// first retained entry of a trimmed stream may have missed trimmed
	// entries: report a gap. This is conservative: when the position is
	// itself the last trimmed entry nothing was missed, but Redis keeps no
	// trace that would tell.
	gap := after.Compare(maxDeleted) < 0 || (trimmed > 0 && after.Compare(first) < 0)
	entries, _ := res[5].([]any)
	h := notify.History{Gap: gap, Last: last, Messages: make([]*notify.Envelope, 0, len(entries))}
	for _, e := range entries {
		m, err := parseEntry(channel, e)
		if err != nil {
			return notify.History{}, err
		}
		h.Messages = append(h.Messages, m)
	}
	return h, nil
}

// parseEntry decodes a stream entry {id, {"e", event, "d", data}}.
func parseEntry(channel string, e any) (*notify.Envelope, error) {
	pair, ok := e.([]any)
	if !ok || len(pair) != 2 {
		return nil, fmt.Errorf("redisbroker: malformed stream entry %v", e)
	}
	id, err := notify.ParseID(fmt.Sprint(pair[0]))
	if err != nil {
		return nil, fmt.Errorf("redisbroker: stream entry ID: %w", err)
	}
	fields, _ := pair[1].([]any)
	var event, data string
	for i := 0; i+1 < len(fields); i += 2 {
		v, _ := fields[i+1].(string)
		switch fields[i] {
		case "e":
			event = v
		case "d":
			data = v
		}
	}
	return message(channel, id, event, data)
}

// message makes the envelope of a message read from Redis. Herald stores
// compact JSON, but anything with access to Redis can write a stream entry:
// data with a raw line break would split an envelope on every transport
// (newline-separated WebSocket frames, NDJSON, SSE data lines), so it is
// compacted — or refused if it is not JSON — here, where it enters.
func message(channel string, id notify.ID, event, data string) (*notify.Envelope, error) {
	if strings.ContainsAny(data, "\r\n") {
		var b bytes.Buffer
		if err := json.Compact(&b, []byte(data)); err != nil {
			return nil, fmt.Errorf("redisbroker: message %v on %q: data is not JSON", id, channel)
		}
		data = b.String()
	}
	if notify.ValidateEvent(event) != nil {
		return nil, fmt.Errorf("redisbroker: message %v on %q: invalid event name", id, channel)
	}
	return notify.NewMessage(channel, id, event, []byte(data)), nil
}

// parsePayload decodes a Pub/Sub payload "<id>\n<event>\n<data>".
func parsePayload(channel, payload string) (*notify.Envelope, error) {
	idStr, rest, ok1 := strings.Cut(payload, "\n")
	event, data, ok2 := strings.Cut(rest, "\n")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("redisbroker: malformed payload on %q", channel)
	}
	id, err := notify.ParseID(idStr)
	if err != nil {
		return nil, err
	}
	return message(channel, id, event, data)
}

// lastID returns the ID of the channel's newest stored message (zero if the
// stream does not exist).
func (b *Broker) lastID(ctx context.Context, channel string) (notify.ID, error) {
	msgs, err := b.rdb.XRevRangeN(ctx, b.streamKey(channel), "+", "-", 1).Result()
	if err != nil {
		b.stats.errors.Add(1)
		return notify.ID{}, notify.Unavailable("subscribe", err)
	}
	if len(msgs) == 0 {
		return notify.ID{}, nil
	}
	return notify.ParseID(msgs[0].ID)
}

// Stats are the broker's counters.
type Stats struct {
	Errors     uint64 // failed Redis calls
	Reconnects uint64 // Pub/Sub subscription confirmations after the first
	CatchUps   uint64 // messages recovered from streams after a reconnect
	Lost       uint64 // channels whose catch-up found trimmed history
	Moves      uint64 // cluster: channels resubscribed on another node
	Malformed  uint64 // Pub/Sub messages dropped as malformed (not written by a Herald)
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Errors:     b.stats.errors.Load(),
		Reconnects: b.stats.reconnects.Load(),
		CatchUps:   b.stats.caughtUp.Load(),
		Lost:       b.stats.lost.Load(),
		Moves:      b.stats.moves.Load(),
		Malformed:  b.stats.malformed.Load(),
	}
}

func shardOf(channel string, n int) int {
	var x uint32 = 2166136261
	for i := 0; i < len(channel); i++ {
		x ^= uint32(channel[i])
		x *= 16777619
	}
	return int(x % uint32(n))
}

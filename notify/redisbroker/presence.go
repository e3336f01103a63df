package redisbroker

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/redis/go-redis/v9"
)

// Presence on Redis (see presence_lua.go for the keys and scripts).
//
// Join and Leave only queue the change in the instance's local set of the
// channel (the members this instance joined); the first change of a batch
// arms the channel's timer, which fires after Config.Presence.Interval and
// writes the batch's net changes with the flush script (one round trip per
// MaxPresenceDiff changes, pipelined). The script announces what changed on
// the channel's Pub/Sub channel; every instance's read loop turns the
// payload into a presence envelope for its sinks.
//
// Leases: each member's score is the end of its lease in Redis time. Every
// Lease/3, renewLoop renews the leases of all local members (one pipelined
// script per MaxPresenceDiff members). Members of an instance that stopped
// renewing (kill -9) expire: every flush removes ended leases first, as
// leaves of the same announcement. The channel's timer is re-armed after
// each flush for when the earliest lease ends (the script tells, in Redis
// time, so instance clocks do not matter), at least one Interval later: an
// instance that has local members in a channel, or watches it (it is
// subscribed there and has read its members or received a presence
// announcement), removes ended leases within one Interval of their end. A
// dead instance's members therefore leave within Lease + Interval of its
// last renewal, which is at most Lease + Interval after it died.

// maxExpire bounds the ended leases one script removes (the script runs
// again at once while more remain), so that the expiry of 100,000 members
// does not block Redis in one call.
const maxExpire = notify.MaxPresenceDiff

// presence is the broker's local presence state.
type presence struct {
	mu     sync.Mutex
	chans  map[string]*pchan // guarded by mu
	closed bool              // guarded by mu
}

// pchan is one channel's local presence state.
type pchan struct {
	channel string

	// Guarded by presence.mu.
	set     notify.PresenceSet // the members this instance joined
	timer   *time.Timer        // the next flush (a batch or a sweep), or nil
	due     time.Time          // when timer fires
	token   *armToken          // the token of timer's flush
	watched bool               // sweep while subscribed here (see above)
	// After a failed write: the leaves to send again, and whether to
	// renew every member with the next flush.
	retryLeaves []notify.Member
	resync      bool

	// wmu is held while the channel's changes are written, so that
	// batches reach Redis in order.
	wmu sync.Mutex
}

var _ notify.Presence = (*Broker)(nil)

func (b *Broker) leaseKey(channel string) string   { return b.cfg.Prefix + "{" + channel + "}:pl" }
func (b *Broker) membersKey(channel string) string { return b.cfg.Prefix + "{" + channel + "}:pm" }

func (b *Broker) presenceKeys(channel string) []string {
	return []string{b.leaseKey(channel), b.membersKey(channel)}
}

// presenceArgs are ARGV[1..3] of every presence script.
func (b *Broker) presenceArgs(channel string, n int) []any {
	cmd := "PUBLISH"
	if b.cluster != nil {
		cmd = "SPUBLISH"
	}
	args := make([]any, 0, 3+n)
	return append(args, b.cfg.Presence.Lease.Milliseconds(), cmd, b.pubsubChannel(channel))
}

// memberKey is a member as the scripts store it.
func memberKey(m notify.Member) string { return m.Conn + "\t" + m.User }

// Join implements notify.Presence: it queues the change; the channel's
// next flush, at most Config.Presence.Interval later, writes it.
func (b *Broker) Join(channel string, m notify.Member) { b.queuePresence(channel, m, true) }

// Leave implements notify.Presence, like Join.
func (b *Broker) Leave(channel string, m notify.Member) { b.queuePresence(channel, m, false) }

func (b *Broker) queuePresence(channel string, m notify.Member, join bool) {
	if notify.ValidateChannel(channel) != nil || notify.ValidateMember(m) != nil {
		return
	}
	p := &b.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.chanLocked(channel)
	if pc == nil {
		return
	}
	if pc.set.Queue(m, join) {
		b.armLocked(pc, b.cfg.Presence.Interval)
	}
}

// chanLocked returns channel's state, creating it; nil once closed.
func (p *presence) chanLocked(channel string) *pchan {
	if p.closed {
		return nil
	}
	pc := p.chans[channel]
	if pc == nil {
		if p.chans == nil {
			p.chans = make(map[string]*pchan)
		}
		pc = &pchan{channel: channel}
		p.chans[channel] = pc
	}
	return pc
}

// armLocked makes pc's timer fire within d, unless it fires sooner
// already. Each armed timer holds one count of b.wg until its flush ends
// (or Close stops it).
func (b *Broker) armLocked(pc *pchan, d time.Duration) {
	due := time.Now().Add(d)
	if pc.timer != nil {
		if !due.Before(pc.due) {
			return
		}
		if pc.timer.Stop() {
			pc.timer.Reset(d)
			pc.due = due
			return
		}
		// It fired: its flush runs; arm another.
	}
	b.wg.Add(1)
	// The callback identifies its timer by a token made before it: the
	// timer itself is assigned after AfterFunc returns.
	tok := new(armToken)
	pc.timer, pc.due, pc.token = time.AfterFunc(d, func() { b.flushPresence(pc, tok) }), due, tok
}

// armToken tells a flush whether pc.timer is still its own timer.
type armToken struct{ _ byte }

// flushPresence writes pc's queued changes (none: a sweep of ended leases)
// and arms the next sweep. After a failed write (Redis unreachable) the
// next flush sends the failed leaves again, unless their connection joined
// again meanwhile, and renews every local member, which writes again the
// members Redis lacks (the failed joins).
func (b *Broker) flushPresence(pc *pchan, tok *armToken) {
	defer b.wg.Done()
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	p := &b.presence
	p.mu.Lock()
	if pc.token == tok {
		pc.timer, pc.token = nil, nil
	}
	joins, leaves := pc.set.Flush()
	for _, m := range pc.retryLeaves {
		if !pc.set.Has(m.Conn) {
			leaves = append(leaves, m)
		}
	}
	pc.retryLeaves = nil
	var renew [][]any
	if pc.resync {
		renew, pc.resync = b.renewCallsLocked(pc), false
	}
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	next, err := b.writePresence(ctx, pc.channel, joins, leaves)
	if err == nil && len(renew) > 0 {
		err = b.renew(ctx, pc.channel, renew)
	}
	cancel()
	if err != nil {
		b.stats.errors.Add(1)
		b.cfg.Logger.Debug("presence flush failed; will retry", "channel", pc.channel, "err", err)
		next = b.cfg.Presence.Interval
	}
	subscribed := b.subscribed(pc.channel)

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if err != nil {
		pc.retryLeaves, pc.resync = append(pc.retryLeaves, leaves...), true
	}
	switch {
	case pc.set.Len() > 0 || (pc.watched && subscribed) || err != nil:
		if next < 0 {
			next = b.cfg.Presence.Lease // nobody present: none can expire sooner
		}
		b.armLocked(pc, max(next, b.cfg.Presence.Interval))
	case !pc.set.Pending() && pc.timer == nil:
		delete(p.chans, pc.channel)
	}
}

// writePresence runs the flush script for joins and leaves (one call per
// MaxPresenceDiff changes, pipelined; one call for none), then again while
// ended leases remain, and returns how long until the next lease ends (-1:
// nobody is present).
func (b *Broker) writePresence(ctx context.Context, channel string, joins, leaves []notify.Member) (time.Duration, error) {
	keys := b.presenceKeys(channel)
	var calls [][]any
	for _, d := range notify.SplitPresence(notify.PresenceDiff{Joins: joins, Leaves: leaves}) {
		args := append(b.presenceArgs(channel, 2+len(d.Leaves)+len(d.Joins)), maxExpire, len(d.Leaves))
		for _, m := range d.Leaves {
			args = append(args, memberKey(m))
		}
		for _, m := range d.Joins {
			args = append(args, memberKey(m))
		}
		calls = append(calls, args)
	}
	for {
		cmds := b.runPipelined(ctx, presenceFlushScript, keys, calls)
		res, err := cmds[len(cmds)-1].Int64Slice()
		for _, c := range cmds {
			err = cmp(err, c.Err())
		}
		if err != nil {
			return 0, err
		}
		if len(res) != 3 {
			return 0, fmt.Errorf("redisbroker: presence flush reply %v", res)
		}
		if res[1] == 0 {
			if res[2] < 0 {
				return -1, nil
			}
			return time.Duration(res[2]) * time.Millisecond, nil
		}
		calls = [][]any{append(b.presenceArgs(channel, 2), maxExpire, 0)}
	}
}

// cmp returns the first non-nil error.
func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// pipelineScripts bounds the scripts of one pipeline: go-redis gives a
// pipeline's replies one Client ReadTimeout in all, and a script of
// MaxPresenceDiff changes takes Redis a few milliseconds.
const pipelineScripts = 10

// runPipelined runs s once per argument list on keys' node, pipelined
// (one round trip per pipelineScripts calls); a NOSCRIPT or a redirection
// reply (the call did not run) is run again alone through run, which loads
// the script or follows the slot.
func (b *Broker) runPipelined(ctx context.Context, s *redis.Script, keys []string, calls [][]any) []*redis.Cmd {
	cmds := make([]*redis.Cmd, 0, len(calls))
	for i := 0; i < len(calls); i += pipelineScripts {
		cmds = append(cmds, b.runPipeline(ctx, s, keys, calls[i:min(i+pipelineScripts, len(calls))])...)
	}
	return cmds
}

// runPipeline is runPipelined for one pipeline.
func (b *Broker) runPipeline(ctx context.Context, s *redis.Script, keys []string, calls [][]any) []*redis.Cmd {
	var c interface{ Pipeline() redis.Pipeliner } = b.rdb
	if b.cluster != nil {
		node, err := b.cluster.MasterForKey(ctx, keys[0])
		if err != nil {
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(err)
			return []*redis.Cmd{cmd}
		}
		c = node
	}
	pipe := c.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, args := range calls {
		cmds[i] = s.EvalSha(ctx, pipe, keys, args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		if err := cmd.Err(); redis.HasErrorPrefix(err, "NOSCRIPT") || isRedirect(err) {
			cmds[i] = b.run(ctx, s, keys, calls[i]...)
		}
	}
	return cmds
}

// subscribed reports whether the broker holds a Pub/Sub subscription of
// channel.
func (b *Broker) subscribed(channel string) bool {
	name := b.pubsubChannel(channel)
	if b.cluster != nil {
		return b.routes.home(name) != nil
	}
	return b.shards[shardOf(channel, len(b.shards))].lookup(name) != nil
}

// watch makes the instance sweep channel's ended leases while it is
// subscribed there.
func (b *Broker) watch(channel string) {
	p := &b.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.chanLocked(channel)
	if pc == nil || pc.watched {
		return
	}
	pc.watched = true
	b.armLocked(pc, b.cfg.Presence.Interval)
}

// Members implements notify.Presence in one round trip: the script first
// removes (and announces) ended leases, so the count is of live members.
// The cursor is the hex of the last connection listed; members are paged
// in connection order, so a stable channel is covered exactly once.
func (b *Broker) Members(ctx context.Context, channel string, limit int, cursor string) (notify.PresencePage, error) {
	if err := notify.ValidateChannel(channel); err != nil {
		return notify.PresencePage{}, err
	}
	start, err := parseMembersCursor(cursor)
	if err != nil {
		return notify.PresencePage{}, err
	}
	limit = notify.PresenceLimit(limit)
	fetch := limit
	if limit > 0 {
		fetch++ // one more tells whether a next page exists
	}
	args := append(b.presenceArgs(channel, 3), maxExpire, fetch, start)
	res, err := b.run(ctx, presenceMembersScript, b.presenceKeys(channel), args...).Slice()
	if err != nil {
		b.stats.errors.Add(1)
		return notify.PresencePage{}, notify.Unavailable("presence members", err)
	}
	b.watch(channel)
	return parseMembersReply(res, limit)
}

// parseMembersCursor returns the ZRANGE BYLEX start after cursor.
func parseMembersCursor(cursor string) (string, error) {
	if cursor == "" {
		return "-", nil
	}
	conn, err := hex.DecodeString(cursor)
	if err != nil || notify.ValidateMember(notify.Member{Conn: string(conn)}) != nil {
		return "", notify.Errorf(notify.ErrInvalidCursor, "presence cursor %q is not one a previous page returned", truncate(cursor))
	}
	// After every "conn\tuser" of that connection: user IDs are below
	// 0x7f.
	return "(" + string(conn) + "\t\x7f", nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func parseMembersReply(res []any, limit int) (notify.PresencePage, error) {
	if len(res) != 2 {
		return notify.PresencePage{}, fmt.Errorf("redisbroker: presence members reply has %d elements", len(res))
	}
	count, _ := res[0].(int64)
	list, _ := res[1].([]any)
	page := notify.PresencePage{Count: int(count), Members: make([]notify.Member, 0, min(len(list), limit))}
	for i, v := range list {
		s, _ := v.(string)
		m, err := parseMemberKey(s)
		if err != nil {
			return notify.PresencePage{}, err
		}
		if i == limit {
			page.Next = hex.EncodeToString([]byte(page.Members[limit-1].Conn))
			break
		}
		page.Members = append(page.Members, m)
	}
	return page, nil
}

// parseMemberKey decodes a stored "conn\tuser".
func parseMemberKey(s string) (notify.Member, error) {
	conn, user, ok := strings.Cut(s, "\t")
	m := notify.Member{User: user, Conn: conn}
	if !ok || notify.ValidateMember(m) != nil {
		return notify.Member{}, fmt.Errorf("redisbroker: malformed presence member %q", truncate(s))
	}
	return m, nil
}

// parsePresence decodes a presence payload "p\n<count>\n" followed by
// lines "+conn\tuser" or "-conn\tuser".
func parsePresence(channel, payload string) (*notify.Envelope, error) {
	rest, _ := strings.CutPrefix(payload, presencePrefix)
	countStr, lines, ok := strings.Cut(rest, "\n")
	count, err := strconv.Atoi(countStr)
	if !ok || err != nil || count < 0 {
		return nil, fmt.Errorf("redisbroker: malformed presence payload on %q: bad count", channel)
	}
	d := notify.PresenceDiff{Channel: channel, Count: count}
	for line := range strings.SplitSeq(lines, "\n") {
		if line == "" {
			return nil, fmt.Errorf("redisbroker: malformed presence payload on %q: empty line", channel)
		}
		m, err := parseMemberKey(line[1:])
		if err != nil {
			return nil, err
		}
		switch line[0] {
		case '+':
			d.Joins = append(d.Joins, m)
		case '-':
			d.Leaves = append(d.Leaves, m)
		default:
			return nil, fmt.Errorf("redisbroker: malformed presence payload on %q: change %q", channel, truncate(line))
		}
	}
	return notify.NewPresence(d), nil
}

// presencePrefix starts a presence payload; a message payload starts with
// its ID, a digit.
const presencePrefix = "p\n"

// renewLoop renews the leases of the local members every Lease/3 until the
// broker closes.
func (b *Broker) renewLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Presence.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			b.renewAll(b.ctx)
		}
	}
}

// renewAll renews every local member's lease: per channel one script per
// MaxPresenceDiff members, pipelined.
func (b *Broker) renewAll(ctx context.Context) {
	p := &b.presence
	p.mu.Lock()
	batches := make(map[string][][]any, len(p.chans))
	for ch, pc := range p.chans {
		if calls := b.renewCallsLocked(pc); len(calls) > 0 {
			batches[ch] = calls
		}
	}
	p.mu.Unlock()
	for ch, calls := range batches {
		ctx, cancel := context.WithTimeout(ctx, b.cfg.Presence.Lease/3)
		if err := b.renew(ctx, ch, calls); err != nil {
			b.stats.errors.Add(1)
			b.cfg.Logger.Debug("presence renewal failed", "channel", ch, "err", err)
		}
		cancel()
	}
}

// renewCallsLocked returns the renewal script's arguments for pc's local
// members, MaxPresenceDiff per call. presence.mu must be held.
func (b *Broker) renewCallsLocked(pc *pchan) [][]any {
	var calls [][]any
	ms := pc.set.Members()
	for i := 0; i < len(ms); i += notify.MaxPresenceDiff {
		chunk := ms[i:min(i+notify.MaxPresenceDiff, len(ms))]
		args := b.presenceArgs(pc.channel, len(chunk))
		for _, m := range chunk {
			args = append(args, memberKey(m))
		}
		calls = append(calls, args)
	}
	return calls
}

// renew runs the renewal calls of channel.
func (b *Broker) renew(ctx context.Context, channel string, calls [][]any) error {
	for _, c := range b.runPipelined(ctx, presenceRenewScript, b.presenceKeys(channel), calls) {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}

// closePresence stops the channels' timers and, since this instance is
// going away, makes every member it holds leave at once (its queued leaves
// and its remaining members, one flush per channel, within
// closePresenceTimeout), so that a graceful shutdown or drain does not
// leave members visible for a lease. Members it cannot remove in time
// expire with their lease, as after a kill -9.
func (b *Broker) closePresence() {
	p := &b.presence
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	type final struct {
		pc     *pchan
		leaves []notify.Member
	}
	var finals []final
	for _, pc := range p.chans {
		if pc.timer != nil && pc.timer.Stop() {
			b.wg.Done()
		}
		pc.timer = nil
		_, leaves := pc.set.Flush()
		leaves = append(leaves, pc.retryLeaves...)
		leaves = append(leaves, pc.set.Members()...)
		if len(leaves) > 0 {
			finals = append(finals, final{pc, leaves})
		}
	}
	p.mu.Unlock()
	if len(finals) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, closePresenceTimeout)
	defer cancel()
	for _, f := range finals {
		f.pc.wmu.Lock() // after a flush that is being written
		_, err := b.writePresence(ctx, f.pc.channel, nil, f.leaves)
		f.pc.wmu.Unlock()
		if err != nil {
			b.cfg.Logger.Debug("presence leaves at close failed; the members expire with their lease", "channel", f.pc.channel, "err", err)
			return
		}
	}
}

// closePresenceTimeout bounds the leaves Close writes.
const closePresenceTimeout = 2 * time.Second

// presenceReset tells rc's sinks, if the channel's presence is in use here,
// that announcements published while rc was not subscribed are lost
// (Pub/Sub does not replay): a presence envelope with Reset and the
// current count, read in its own goroutine (the caller is the read loop).
func (b *Broker) presenceReset(rc *rchan) {
	p := &b.presence
	p.mu.Lock()
	pc := p.chans[rc.channel]
	inUse := pc != nil && (pc.watched || pc.set.Len() > 0)
	p.mu.Unlock()
	if !inUse {
		return
	}
	b.wg.Go(func() {
		for failures := 0; ; {
			ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			page, err := b.Members(ctx, rc.channel, 0, "")
			cancel()
			if err == nil {
				rc.deliver(notify.NewPresence(notify.PresenceDiff{Channel: rc.channel, Count: page.Count, Reset: true}))
				return
			}
			failures++
			if !sleepCtx(b.ctx, backoff(failures)) {
				return
			}
		}
	})
}

// deliver hands a presence envelope to rc's sinks, unless rc was removed.
func (rc *rchan) deliver(env *notify.Envelope) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !rc.removed {
		for _, sk := range rc.sinks {
			sk.Deliver(env)
		}
	}
}

// deliverPresence hands a presence payload received on rc to its sinks.
// A presence envelope has no ID and is not in the stream: it is delivered
// at once, even during a catch-up.
func (s *shard) deliverPresence(rc *rchan, payload string) {
	env, err := parsePresence(rc.channel, payload)
	if err != nil {
		s.b.stats.malformed.Add(1)
		s.b.malformedLog.log(s.b.cfg.Logger, rc.channel, err)
		return
	}
	rc.deliver(env)
	s.b.watch(rc.channel)
}

package redisbroker

import "github.com/redis/go-redis/v9"

// The presence scripts. KEYS[1] is a channel's lease ZSET (member
// "conn\tuser", score the lease's end in Redis milliseconds), KEYS[2] its
// member ZSET (the same members, score 0, paged in lexicographic order);
// both carry the channel's hash tag, so on Redis Cluster they share the
// slot of its stream and Pub/Sub channel. Every script reads the clock with
// TIME: leases are written and expired by one clock (the channel's master),
// whatever the clocks of the instances. ARGV[1..3] are always the lease
// (ms), the publish command (PUBLISH or SPUBLISH) and the Pub/Sub channel.
//
// A change is announced as one Pub/Sub payload "p\n<count>\n" followed by
// lines "+conn\tuser" (join) and "-conn\tuser" (leave): a message payload
// starts with its ID, a digit, so the reader tells them apart.
const presenceLuaLib = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function zrem_all(key, list)
  for i = 1, #list, 1000 do
    redis.call('ZREM', key, unpack(list, i, math.min(i + 999, #list)))
  end
end
-- expire removes up to max members whose lease ended, as leaves; it
-- reports whether more remain.
local function expire(now, max, changes)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, max)
  if #gone == 0 then return false end
  zrem_all(KEYS[1], gone)
  zrem_all(KEYS[2], gone)
  for i = 1, #gone do changes[#changes + 1] = '-' .. gone[i] end
  return #gone == max
end
-- announce publishes changes (leaves before joins) in payloads of at most
-- 1000 (notify.MaxPresenceDiff), each with the count after its own
-- changes, and returns the count.
local function announce(changes)
  local count = redis.call('ZCARD', KEYS[1])
  local c = count
  for i = 1, #changes do
    if string.byte(changes[i], 1) == 43 then c = c - 1 else c = c + 1 end
  end
  for i = 1, #changes, 1000 do
    local last = math.min(i + 999, #changes)
    for j = i, last do
      if string.byte(changes[j], 1) == 43 then c = c + 1 else c = c - 1 end
    end
    redis.call(ARGV[2], ARGV[3], 'p\n' .. c .. '\n' .. table.concat(changes, '\n', i, last))
  end
  return count
end
local function keep(lease)
  redis.call('PEXPIRE', KEYS[1], 2 * lease)
  redis.call('PEXPIRE', KEYS[2], 2 * lease)
end
-- next_sweep is how many ms until the earliest lease ends (-1: none).
local function next_sweep(now)
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(tonumber(first[2]) - now, 0)
end
`

// presenceFlushScript applies a batch: it expires ended leases (at most
// ARGV[4]), then applies the leaves ARGV[6 .. 5+ARGV[5]] and the joins
// after them, announces what changed, and returns {count, more expired
// remain (0/1), ms until the next lease ends (-1: none)}. Members that are
// already present (or absent) change nothing but a join's lease: resending
// a batch is safe. Each list costs a few variadic commands (ZMSCORE tells
// which members change), not one call per member.
var presenceFlushScript = redis.NewScript(presenceLuaLib + `
local now, lease = now_ms(), tonumber(ARGV[1])
local changes = {}
local more = expire(now, tonumber(ARGV[4]), changes)
local nl = tonumber(ARGV[5])
if nl > 0 then
  local leaves = {unpack(ARGV, 6, 5 + nl)}
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(leaves))
  local gone = {}
  for i = 1, nl do
    if scores[i] then
      gone[#gone + 1] = leaves[i]
      changes[#changes + 1] = '-' .. leaves[i]
    end
  end
  zrem_all(KEYS[1], gone)
  zrem_all(KEYS[2], gone)
end
if #ARGV > 5 + nl then
  local joins = {unpack(ARGV, 6 + nl)}
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(joins))
  local leased, fresh = {}, {}
  for i = 1, #joins do
    leased[#leased + 1] = now + lease
    leased[#leased + 1] = joins[i]
    if not scores[i] then
      fresh[#fresh + 1] = 0
      fresh[#fresh + 1] = joins[i]
      changes[#changes + 1] = '+' .. joins[i]
    end
  end
  redis.call('ZADD', KEYS[1], unpack(leased))
  if #fresh > 0 then redis.call('ZADD', KEYS[2], unpack(fresh)) end
  keep(lease)
end
return {announce(changes), more and 1 or 0, next_sweep(now)}
`)

// presenceRenewScript renews the leases of the members ARGV[4..] (one
// variadic ZADD XX CH); a member Redis no longer has (its lease ended while
// this instance was paused, or Redis lost it) joins again, announced.
// Returns the number of members that joined again.
var presenceRenewScript = redis.NewScript(presenceLuaLib + `
local now, lease = now_ms(), tonumber(ARGV[1])
local n = #ARGV - 3
if n == 0 then return 0 end
local args = {}
for i = 4, #ARGV do
  args[#args + 1] = now + lease
  args[#args + 1] = ARGV[i]
end
local changes = {}
if redis.call('ZADD', KEYS[1], 'XX', 'CH', unpack(args)) < n then
  for i = 4, #ARGV do
    if redis.call('ZADD', KEYS[1], 'NX', now + lease, ARGV[i]) == 1 then
      redis.call('ZADD', KEYS[2], 0, ARGV[i])
      changes[#changes + 1] = '+' .. ARGV[i]
    end
  end
  announce(changes)
end
keep(lease)
return #changes
`)

// presenceMembersScript expires ended leases (at most ARGV[4], announced),
// then returns {count, up to ARGV[5] members after ARGV[6] (a ZRANGE BYLEX
// start)}. The count is ZCARD, O(1); only while more than ARGV[4] ended
// leases remain is it ZCOUNT of the live ones, O(log N).
var presenceMembersScript = redis.NewScript(presenceLuaLib + `
local now = now_ms()
local changes = {}
local more = expire(now, tonumber(ARGV[4]), changes)
local count = announce(changes)
if more then count = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') end
local limit = tonumber(ARGV[5])
if limit == 0 then return {count, {}} end
return {count, redis.call('ZRANGE', KEYS[2], ARGV[6], '+', 'BYLEX', 'LIMIT', 0, limit)}
`)

package redisbroker_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

const benchMembers = 100_000

// benchPresence is a broker with presence on srv whose client counts
// round trips, and a raw client to watch Redis with.
func benchPresence(b *testing.B, srv *redistest.Server) (*redisbroker.Broker, *roundTrips, *redis.Client) {
	rt := &roundTrips{}
	c := newClient(b, srv)
	c.AddHook(rt)
	// A lease long enough that renewLoop stays out of the measurements.
	br := startBroker(b, redisbroker.Config{Client: c, Presence: notify.PresenceConfig{Lease: time.Hour}})
	return br, rt, newClient(b, srv)
}

func benchMember(i int) notify.Member {
	return notify.Member{User: "u" + strconv.Itoa(i%1000), Conn: fmt.Sprintf("conn-%08d", i)}
}

// waitCard waits until channel's lease ZSET holds n members.
func waitCard(b *testing.B, raw *redis.Client, channel string, n int64) {
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Millisecond) {
		got, err := raw.ZCard(context.Background(), "herald:{"+channel+"}:pl").Result()
		if err == nil && got == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("channel %s holds %d members (err %v); want %d", channel, got, err, n)
		}
	}
}

// BenchmarkPresence100k measures presence at 100,000 members in one channel
// on a real redis-server: joining and leaving them (one batch each, through
// the public API; ns per member and round trips per batch), the count at
// 1,000 and at 100,000 members (O(1): ZCARD), one lease renewal of 100,000
// local members, and Redis's memory per member:
//
//	go test -run '^$' -bench 'Presence100k/(JoinLeave|Renew)' -benchtime=1x ./notify/redisbroker/
//	go test -run '^$' -bench 'Presence100k/Count' -benchtime=5000x ./notify/redisbroker/
func BenchmarkPresence100k(b *testing.B) {
	srv := redistest.Start(b)
	b.Run("JoinLeave", func(b *testing.B) {
		br, rt, raw := benchPresence(b, srv)
		var joinNs, leaveNs, joinRT, leaveRT, joinRedis, leaveRedis float64
		// batch queues one change per member, waits until Redis has
		// them and adds the batch's costs per member.
		batch := func(ch string, change func(string, notify.Member), want int64, ns, rts, redisNs *float64) {
			rt.n.Store(0)
			usec := redisUsec(b, raw)
			start := time.Now()
			for i := range benchMembers {
				change(ch, benchMember(i))
			}
			waitCard(b, raw, ch, want)
			// Includes the batching Interval (200 ms, 2 µs per member).
			*ns += float64(time.Since(start).Nanoseconds()) / benchMembers
			*rts += float64(rt.n.Load())
			*redisNs += float64(redisUsec(b, raw)-usec) * 1000 / benchMembers
		}
		for it := 0; it < b.N; it++ {
			ch := "bench.jl." + strconv.Itoa(it)
			batch(ch, br.Join, benchMembers, &joinNs, &joinRT, &joinRedis)
			batch(ch, br.Leave, 0, &leaveNs, &leaveRT, &leaveRedis)
		}
		n := float64(b.N)
		b.ReportMetric(joinNs/n, "ns/join")
		b.ReportMetric(leaveNs/n, "ns/leave")
		b.ReportMetric(joinRedis/n, "redis-ns/join")
		b.ReportMetric(leaveRedis/n, "redis-ns/leave")
		b.ReportMetric(joinRT/n, "roundtrips/100k-join-batch")
		b.ReportMetric(leaveRT/n, "roundtrips/100k-leave-batch")
		b.ReportMetric(0, "ns/op")
		if e := br.Stats().Errors; e != 0 {
			b.Fatalf("%d failed Redis calls", e)
		}
	})
	for _, size := range []int{1_000, benchMembers} {
		b.Run("Count/"+strconv.Itoa(size), func(b *testing.B) {
			br, _, raw := benchPresence(b, srv)
			ch := "bench.count." + strconv.Itoa(size)
			for i := range size {
				br.Join(ch, benchMember(i))
			}
			waitCard(b, raw, ch, int64(size))
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				page, err := br.Members(ctx, ch, 0, "")
				if err != nil || page.Count != size {
					b.Fatalf("Members = %d, %v; want %d", page.Count, err, size)
				}
			}
		})
	}
	b.Run("Renew", func(b *testing.B) {
		br, rt, raw := benchPresence(b, srv)
		ch := "bench.renew"
		for i := range benchMembers {
			br.Join(ch, benchMember(i))
		}
		waitCard(b, raw, ch, benchMembers)
		ctx := context.Background()
		before := redisUsec(b, raw)
		rt.n.Store(0)
		b.ResetTimer()
		for b.Loop() {
			br.RenewPresence(ctx)
		}
		b.StopTimer()
		n := float64(b.N)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n/benchMembers, "ns/member")
		b.ReportMetric(float64(rt.n.Load())/n, "roundtrips/renewal")
		b.ReportMetric(float64(redisUsec(b, raw)-before)*1000/n/benchMembers, "redis-ns/member")
		mem := int64(0)
		for _, k := range []string{"herald:{" + ch + "}:pl", "herald:{" + ch + "}:pm"} {
			u, err := raw.MemoryUsage(ctx, k, 0).Result()
			if err != nil {
				b.Fatal(err)
			}
			mem += u
		}
		b.ReportMetric(float64(mem)/benchMembers, "redis-bytes/member")
	})
}

// redisUsec is the CPU time Redis spent in scripts so far (INFO
// commandstats, evalsha), in microseconds.
func redisUsec(b *testing.B, raw *redis.Client) int64 {
	info, err := raw.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:"); ok {
			for f := range strings.SplitSeq(rest, ",") {
				if v, ok := strings.CutPrefix(f, "usec="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					return n
				}
			}
		}
	}
	return 0
}

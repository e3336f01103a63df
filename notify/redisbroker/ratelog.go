package redisbroker

import (
	"log/slog"
	"sync"
	"time"
)

// malformedLogEvery is how often at most a malformed Pub/Sub message is
// logged; the ones in between are counted in the next record.
const malformedLogEvery = 10 * time.Second

// everyLimiter lets one log record through per malformedLogEvery and counts
// the ones it holds back. Its zero value is ready.
type everyLimiter struct {
	mu         sync.Mutex
	last       time.Time // guarded by mu
	suppressed int       // guarded by mu
	now        func() time.Time
}

// log logs the malformed message on channel unless one was logged less than
// malformedLogEvery ago.
func (l *everyLimiter) log(logger *slog.Logger, channel string, err error) {
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	l.mu.Lock()
	t := now()
	if !l.last.IsZero() && t.Sub(l.last) < malformedLogEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.last, l.suppressed = t, 0
	l.mu.Unlock()
	logger.Error("dropping malformed pubsub message", "channel", channel, "err", err,
		"also_dropped_since_last_record", suppressed)
}

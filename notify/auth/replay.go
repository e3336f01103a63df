package auth

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// MemoryReplay is a Replay for a single instance.
type MemoryReplay struct {
	mu    sync.Mutex
	used  map[string]time.Time // id → expiry; guarded by mu
	calls int                  // guarded by mu; sweeps every 1024 calls
}

// NewMemoryReplay returns an empty MemoryReplay.
func NewMemoryReplay() *MemoryReplay { return &MemoryReplay{used: make(map[string]time.Time)} }

// Use implements Replay.
func (m *MemoryReplay) Use(_ context.Context, id string, until time.Time) (bool, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.calls++; m.calls%1024 == 0 {
		for k, exp := range m.used {
			if now.After(exp) {
				delete(m.used, k)
			}
		}
	}
	if exp, ok := m.used[id]; ok && now.Before(exp) {
		return false, nil
	}
	m.used[id] = until
	return true, nil
}

// RedisReplay is a Replay shared by every instance on one Redis: SET NX
// with the token's expiry.
type RedisReplay struct {
	Client redis.Cmdable
	Prefix string // default "herald:jti:"
}

// Use implements Replay.
func (r *RedisReplay) Use(ctx context.Context, id string, until time.Time) (bool, error) {
	prefix := r.Prefix
	if prefix == "" {
		prefix = "herald:jti:"
	}
	ttl := time.Until(until)
	if ttl < time.Second {
		ttl = time.Second
	}
	return r.Client.SetNX(ctx, prefix+id, 1, ttl).Result()
}

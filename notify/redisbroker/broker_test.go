package redisbroker_test

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

// newClient returns a client that never retries a command: a retried publish
// whose first attempt reached Redis would publish twice.
func newClient(t testing.TB, srv *redistest.Server) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:         srv.Addr(),
		MaxRetries:   -1,
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newBroker(t testing.TB, srv *redistest.Server, cfg redisbroker.Config) *redisbroker.Broker {
	t.Helper()
	cfg.Client = newClient(t, srv)
	return startBroker(t, cfg)
}

// startBroker starts a broker on cfg.Client with a short health check,
// closed when t ends.
func startBroker(t testing.TB, cfg redisbroker.Config) *redisbroker.Broker {
	t.Helper()
	if cfg.HealthCheck == 0 {
		cfg.HealthCheck = 300 * time.Millisecond
	}
	b, err := redisbroker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func redisBackend(t *testing.T, opts brokertest.Options) func() notify.Broker {
	// Small stream nodes, so that MAXLEN ~ trims at small history sizes.
	srv := redistest.Start(t, redistest.Args("--stream-node-max-entries", "10"))
	return func() notify.Broker {
		return newBroker(t, srv, redisbroker.Config{HistorySize: int64(opts.HistorySize)})
	}
}

func TestRedisBrokerConformance(t *testing.T) {
	brokertest.Run(t, redisBackend)
}

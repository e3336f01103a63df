package redisbroker_test

import (
	"context"
	"testing"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

func redisPresenceBackend(t *testing.T, cfg notify.PresenceConfig) func() brokertest.PresenceBroker {
	srv := redistest.Start(t)
	return func() brokertest.PresenceBroker {
		return newBroker(t, srv, redisbroker.Config{Presence: cfg})
	}
}

func TestRedisBrokerPresence(t *testing.T) {
	brokertest.RunPresence(t, redisPresenceBackend)
}

// TestClusterPresence runs the presence suite on a three-master cluster;
// each scenario starts with empty masters.
func TestClusterPresence(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	admin := c.Client()
	brokertest.RunPresence(t, func(t *testing.T, cfg notify.PresenceConfig) func() brokertest.PresenceBroker {
		err := admin.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			return m.FlushAll(ctx).Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		return func() brokertest.PresenceBroker {
			return newClusterBroker(t, c, redisbroker.Config{Presence: cfg})
		}
	})
}

package notify_test

import (
	"testing"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
)

func memoryBackend(t *testing.T, opts brokertest.Options) func() notify.Broker {
	b := notify.NewMemoryBroker(notify.MemoryConfig{HistorySize: opts.HistorySize})
	t.Cleanup(func() { _ = b.Close() })
	// Instances of one process share the memory broker.
	return func() notify.Broker { return b }
}

func TestMemoryBrokerConformance(t *testing.T) {
	brokertest.Run(t, memoryBackend)
}

func memoryPresenceBackend(t *testing.T, cfg notify.PresenceConfig) func() brokertest.PresenceBroker {
	b := notify.NewMemoryBroker(notify.MemoryConfig{Presence: cfg})
	t.Cleanup(func() { _ = b.Close() })
	return func() brokertest.PresenceBroker { return b }
}

func TestMemoryBrokerPresence(t *testing.T) {
	brokertest.RunPresence(t, memoryPresenceBackend)
}

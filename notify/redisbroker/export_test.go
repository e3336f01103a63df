package redisbroker

import "context"

// RenewPresence runs one lease renewal of every local member now (tests
// and benchmarks).
func (b *Broker) RenewPresence(ctx context.Context) { b.renewAll(ctx) }

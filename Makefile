# The two commands of README.md: `make run` and `make test`.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run test deps fmt vet staticcheck unit bench-quick bench bench-memory

run:
	go run ./cmd/herald serve

test: deps fmt vet staticcheck unit bench-quick

deps:
	@bash .ci/ensure-deps

fmt:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

staticcheck:
	go run $(STATICCHECK) ./...

unit:
	go test -race -timeout 30m ./...

# The benchmark tool's quick run: real Redis and herald instances, every
# transport; it fails if any message is lost, duplicated or reordered.
bench-quick:
	go run ./cmd/herald bench --quick --out "$$(mktemp -d)"

# Micro-benchmarks; figures are quoted in commit messages and docs.
bench:
	go test -run '^$$' -bench 'Dispatch|RedisPublish|WriteBatch' -benchmem ./notify/... ./transports/...
	go test -run '^$$' -bench Broadcast -benchtime 2000x ./transports/ws ./transports/sse ./transports/h3

# Idle memory per connection, 10,000 connections (WebSocket, SSE).
bench-memory:
	go test -run '^$$' -bench IdleMemory -benchtime 1x ./transports/ws ./transports/sse
	go test -run '^$$' -bench IdleMemory -benchtime 1x ./transports/h3 -args -memconns=2000

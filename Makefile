# The two commands of README.md: `make run` and `make test`.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run test deps vet staticcheck unit bench

run:
	go run ./cmd/herald serve

test: deps vet staticcheck unit

deps:
	@bash .ci/ensure-deps

vet:
	go vet ./...

staticcheck:
	go run $(STATICCHECK) ./...

unit:
	go test -race -timeout 30m ./...

# Core benchmarks; figures are quoted in commit messages and docs.
bench:
	go test -run '^$$' -bench . -benchmem ./notify/...

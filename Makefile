# snapgate: see README.md. Every target runs on a fresh machine with Go 1.26.
GO      ?= go
BIN     := bin/snapgate
# Pure Go everywhere: pebble's cgo zstd is replaced by klauspost's (deps.md §3),
# which keeps builds static and the race detector (which needs cgo) usable.
export GOFLAGS := -tags=pebblegozstd
FUZZTIME ?= 30s

.PHONY: build test demo bench bench-full bench-go generate fuzz lint clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/snapgate

demo: build
	./$(BIN) demo

# The one test command (README, .ci/run): static checks, then every test with
# the race detector; edge/netpollx also without it, since netpoll keeps its fd
# operators reachable differently in race builds.
test: lint
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -count=1 ./edge/netpollx

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The SLO harness (docs/bench.md): real ctrl, edge, backends, nginx and
# HAProxy when installed; writes results/<timestamp>/. Quick: under 5 minutes.
bench: build
	./$(BIN) bench

bench-full: build
	./$(BIN) bench --full

# The Go micro-benchmarks of every package.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...

# Regenerates fbs/snapfb from fbs/snapshot.fbs (needs flatc: apt-get install flatbuffers-compiler).
generate:
	$(GO) generate ./fbs/...

# Runs every fuzz target for FUZZTIME each.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin .demo

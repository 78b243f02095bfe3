# Sluice: Proxy-Wasm filters for Caddy, each request in a fresh isolate.
#
#   make demo    build Caddy and the example filter, serve them on localhost
#   make test    install what the tests need, then run every test
#   make bench   Go benchmarks of the isolate lifecycle, memory and loading
#   make load    requests/s behind Wasm filters against native Caddy (wrk)
#
# Debian packages the tests use to build filters from source: WebAssembly
# text (wabt), C (clang, lld, wasi-libc, compiler-rt for wasm32).
DEBIAN_PACKAGES := wabt clang lld wasi-libc libclang-rt-14-dev-wasm32 wrk
GO ?= go
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build demo deps test xcaddy test-xcaddy bench load clean

all: build

## build: Caddy with the standard modules and wasm_filter, in bin/caddy
build:
	$(GO) build -o bin/caddy ./cmd/caddy

## demo: serve the header_rewrite example in front of a demo upstream
demo: build build/header_rewrite.wasm
	@echo "serving on http://localhost:8080 (try: curl -i http://localhost:8080/); Ctrl-C stops"
	./bin/caddy run --config caddyfiles/demo.Caddyfile --adapter caddyfile

build/header_rewrite.wasm: $(wildcard examples/header_rewrite/*.go sdk/*.go sdk/internal/abi/*.go) examples/go.mod
	mkdir -p build
	cd examples && GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o ../$@ ./header_rewrite

## deps: install the Debian packages the tests need (only the missing ones)
deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## test: every test: unit (with -race), the test filters against the SDK's
## emulator, end to end through a real Caddy (with instances restored from
## snapshots into recycled isolates, then into new ones, then started
## fresh), Sluice's SDK and the examples (natively, then built to .wasm in
## the Caddy of `make build`)
test: deps build
	$(GO) vet ./...
	$(GO) test -race -count=1 ./abi/... ./filters/... ./caddymodule/... ./caddyfiles/... ./tests/guestbuild/...
	cd tests/guests && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(GO) test -count=1 ./tests/
	SLUICE_RECYCLE=off $(GO) test -count=1 ./tests/
	SLUICE_SNAPSHOT=off $(GO) test -count=1 ./tests/
	cd sdk && $(GO) vet ./... && GOOS=wasip1 GOARCH=wasm $(GO) vet ./... && \
		SLUICE_CADDY=$(CURDIR)/bin/caddy $(GO) test -race -count=1 ./...
	cd examples && $(GO) vet ./... && SLUICE_CADDY=$(CURDIR)/bin/caddy $(GO) test -race -count=1 ./...

## xcaddy: build Caddy the way operators do, with xcaddy, into build/xcaddy-caddy
xcaddy:
	mkdir -p build
	cd tools/xcaddy && $(GO) build -o ../../build/xcaddy github.com/caddyserver/xcaddy/cmd/xcaddy
	# The explicit zero version keeps go from asking the module proxy for a
	# module that is only on this disk (the proxy refuses unknown paths).
	./build/xcaddy build v2.11.9 \
		--with github.com/sluice-edge/sluice@v0.0.0-00010101000000-000000000000=$(CURDIR) \
		--output build/xcaddy-caddy

## test-xcaddy: run the end-to-end suite against the xcaddy build
test-xcaddy: deps xcaddy
	SLUICE_CADDY=$(CURDIR)/build/xcaddy-caddy $(GO) test -count=1 ./tests/

## bench: Go benchmarks: a fresh isolate's whole lifecycle per filter kind
## and start mode (and shared isolation), latency with pre-warm, resident
## memory, loading, the host's shared state, tracing and metrics overhead
bench: deps
	$(GO) test -run '^$$' -bench 'IsolateLifecycle|IsolateLatency' -benchtime 3000x -count 5 ./filters/
	$(GO) test -run '^$$' -bench 'ResidentPerInstance' -benchtime 3x -count 3 ./filters/
	$(GO) test -run '^$$' -bench 'LoadWarmCache' -benchtime 10x -count 3 ./filters/
	$(GO) test -run '^$$' -bench . -benchtime 200000x -count 3 ./filters/internal/state/
	$(GO) test -run '^$$' -bench 'Tracing' -benchtime 5000x -count 7 ./caddymodule/
	$(GO) test -run '^$$' -bench 'TelemetryHooks' -count 5 ./caddymodule/

## load: requests/s of reverse_proxy behind Wasm filters against native Caddy
load: deps
	tests/load/run.sh

clean:
	rm -rf bin build

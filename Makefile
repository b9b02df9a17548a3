# The two commands of the README: `make run` and `make test`.

GO ?= go
# Caddy keeps its state under XDG dirs; tests get a throwaway one.
TEST_HOME := $(or $(TMPDIR),/tmp)/streamlimit-test-home

.PHONY: run test test-browser deps lint build bench bench-store chaos xcaddy-check

# Runs the demo: the limiter on :8080 in front of the demo origin on :8081.
run:
	$(GO) run ./cmd/caddy run --config Caddyfile

# Installs what is missing, checks formatting and vet, runs every test
# under the race detector. Where Chromium is installed that includes the
# browser test of the demo page (its screenshots land in browser/out).
# A test whose tool is missing (redis-server, ffmpeg, Chromium) skips,
# except with CI=true in the environment, where it fails: .ci/run sets it,
# after ./scripts/deps.sh browser has installed Chromium.
test: deps lint
	mkdir -p $(TEST_HOME)
	XDG_CONFIG_HOME=$(TEST_HOME) XDG_DATA_HOME=$(TEST_HOME) SCREENSHOT_DIR=$(CURDIR)/browser/out \
		$(GO) test -race -count=1 -timeout 9m ./...

# The demo page, and the stock players' matrix (TestPlayers), in headless
# Chromium through Caddy: installs Debian's chromium, playwright-core and the
# players when missing, and fails rather than skips without them.
# Screenshots land in browser/out.
test-browser:
	./scripts/deps.sh browser
	mkdir -p $(TEST_HOME)
	XDG_CONFIG_HOME=$(TEST_HOME) XDG_DATA_HOME=$(TEST_HOME) SCREENSHOT_DIR=$(CURDIR)/browser/out \
	STREAMLIMIT_BROWSER=require $(GO) test -count=1 -run '^(TestDemoPageInBrowser|TestPlayers)$$' -v ./cmd/caddy

deps:
	./scripts/deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Builds the Caddy binary with the module into ./caddy.
build:
	$(GO) build -o caddy ./cmd/caddy

# Store benchmarks against a real redis-server they start; see docs/BENCHMARKS.md.
bench-store: deps
	$(GO) test -run '^$$' -bench . -benchtime 2s ./lease/

# The load benchmark: plain reverse_proxy vs stream_limit (memory, Redis),
# side by side in one run, printed as ratios; see docs/BENCHMARKS.md.
bench: deps
	$(GO) build -o bin/caddy ./cmd/caddy
	$(GO) run ./bench -caddy bin/caddy $(BENCH_FLAGS)

# The chaos run (docs/GUARANTEES.md): 3 Caddy over Redis, faults at times
# drawn from a seed, the origin's log checked against the limit. Each store
# of CHAOS_STORES (redis: standalone behind fault proxies; sentinel;
# cluster, with replicas) gets its own run of CHAOS_DURATION. CHAOS_SEED=0 draws a new seed
# (printed, for replay). make test runs a short one, seed 1, standalone.
CHAOS_DURATION ?= 3m
CHAOS_SEED ?= 0
CHAOS_STORES ?= redis sentinel cluster
chaos: deps
	mkdir -p $(TEST_HOME)
	for store in $(CHAOS_STORES); do \
		XDG_CONFIG_HOME=$(TEST_HOME) XDG_DATA_HOME=$(TEST_HOME) $(GO) test -count=1 -timeout 0 -run '^TestChaos$$' -v ./cmd/caddy \
			-args -chaos.duration=$(CHAOS_DURATION) -chaos.seed=$(CHAOS_SEED) -chaos.store=$$store || exit 1; \
	done

# Builds Caddy with xcaddy from this checkout, as plugin users do, and checks
# the module is listed. CI runs it after make test.
xcaddy-check:
	./scripts/xcaddy-check.sh

# Otherix build and test entry points. `make check` is what CI runs
# (.ci/run); `make dev` runs the API on a throwaway data dir.

# Go lives in /usr/local/go (scripts/install-deps.sh does not install it).
export PATH := /usr/local/go/bin:$(PATH)

# bash with pipefail so `go test | tee` fails when the tests do.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# A repository with no commits yet makes git describe print nothing.
ifeq ($(strip $(VERSION)),)
VERSION := dev
endif

BINARIES := otherix-api otherix-agent otherix
BIN_DIR := bin
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
# SOURCE_DATE_EPOCH, when set, pins the stamped build time (reproducible builds).
BUILD_DATE ?= $(shell date -u $(if $(SOURCE_DATE_EPOCH),-d @$(SOURCE_DATE_EPOCH)) +%Y-%m-%dT%H:%M:%SZ)
# internal/buildinfo holds what the three binaries report as their version.
BUILDINFO := github.com/otherix/otherix/internal/buildinfo
LDFLAGS := -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT) -X $(BUILDINFO).date=$(BUILD_DATE)

# make dev's settings (DEV_DIR, DEV_PORT_BASE, DEV_LISTEN, DEV_AGENT_LISTEN,
# DEV_AGENT_API_LISTEN, DEV_AGENT_FLAGS) reach scripts/dev.sh through the
# environment, from the command line or the shell; it holds their defaults.

BENCHTIME ?= 3s

# FUZZTIME is how long `make fuzz` runs each fuzz target; fuzz-short (part of
# `make check`) gives each FUZZTIME_SHORT, so all of them stay under a minute.
FUZZTIME ?= 60s
FUZZTIME_SHORT ?= 2s

# existing turns dirs into ./dir/... patterns, dropping dirs that do not
# exist yet: go test fails on a pattern whose directory is missing, and the
# tree grows issue by issue.
existing = $(strip $(foreach d,$(1),$(if $(wildcard $(d)),./$(d)/...)))

ETCD_PKGS := $(call existing,persistence actors http cmd config)
BENCH_PKGS := $(call existing,persistence http)

.PHONY: all deps deps-test test-readme web test-web build cross test test-etcd test-netfabric test-e2e vet fmt-check check bench bench-plots dev clean fuzz fuzz-short release image test-release lint-openapi man dev-cluster chaos

all: build

# deps is what building and running need (make dev); deps-test adds the
# tools only the test suites use (a browser, a C compiler for -race).
deps:
	bash scripts/install-deps.sh

deps-test:
	bash scripts/install-deps.sh --test

# web bundles the browser console (web/src, xterm.js from npm) into web/dist,
# which otherix-api embeds (web/embed.go). npm ci runs only when
# package-lock.json is newer than the installed node_modules. Without npm the
# binaries still build, and the console page says how to build the bundle.
web:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "web: npm not found: building without the browser console bundle (make deps installs npm)"; \
		exit 0; \
	fi; \
	cd web; \
	if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
		echo "npm ci (web/)"; \
		npm ci --no-audit --no-fund; \
	fi; \
	echo "npm run build (web/)"; \
	npm run build --silent

# test-web runs the web bundle's unit tests (web/test, node's own runner);
# the browser tests are in test/e2e.
test-web: web
	@if command -v npm >/dev/null 2>&1; then cd web && npm test --silent; else echo "test-web: npm not found"; fi

# man writes the CLI's man pages, generated from its command tree, into
# bin/man (man -l bin/man/otherix-vm-create.1); the otherix package installs
# the same pages.
man:
	go run ./cmd/otherix docs man $(BIN_DIR)/man

# lint-openapi lints both API contracts with Redocly's recommended rules,
# warnings as errors (redocly.yaml); the deliberate exceptions, each with its
# reason, are in .redocly.lint-ignore.yaml. The linter's version is pinned by
# scripts/openapi-lint/package-lock.json.
lint-openapi:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "lint-openapi: npm not found: make deps-test installs nodejs and npm"; \
		exit 1; \
	fi; \
	cd scripts/openapi-lint; \
	if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
		echo "npm ci (scripts/openapi-lint/)"; \
		npm ci --no-audit --no-fund --silent; \
	fi
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true scripts/openapi-lint/node_modules/.bin/redocly lint api/openapi/control-plane.yaml api/openapi/agent.yaml

# GOARCH/GOOS from the environment pass through to go build, so
# `GOARCH=arm64 make build` cross-compiles. CGO is off so that works
# without a cross C toolchain and the binaries are static.
build: web
	@mkdir -p $(BIN_DIR)
	@for b in $(BINARIES); do \
		echo "go build -o $(BIN_DIR)/$$b ./cmd/$$b"; \
		CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN_DIR)/$$b ./cmd/$$b; \
	done

test:
	go test -race -count=1 ./...

test-etcd:
	go test -race -count=1 -timeout 15m -tags etcd $(ETCD_PKGS)

# The packages with namespace tests (build tag netfabric; root).
NETFABRIC_PKGS = ./nodeagent/netfabric/... ./nodeagent/overlay/... ./nodeagent/dnsfwd/... ./nodeagent/dhcpd/... ./nodeagent/wgtun/...

test-netfabric:
	@if [ -d nodeagent/netfabric ]; then \
		echo "go test -count=1 -tags netfabric $(NETFABRIC_PKGS)"; \
		go test -count=1 -tags netfabric $(NETFABRIC_PKGS); \
	else \
		echo "test-netfabric: no netfabric tests exist yet (no nodeagent/netfabric/ directory)"; \
	fi

test-e2e: build
	@if [ -d test/e2e ]; then \
		echo "go test -count=1 -tags e2e -timeout 20m ./test/guest/... ./test/e2e/..."; \
		go test -count=1 -tags e2e -timeout 20m ./test/guest/... ./test/e2e/...; \
	else \
		echo "test-e2e: no end-to-end tests exist yet (no test/e2e/ directory)"; \
	fi

# chaos runs the three-replica fault tests (test/e2e: linearizability under
# SIGKILLs, kill -9 during idempotent creates, and the rolling restart that
# make check leaves out while a rare failure of it is open) with the
# linearizability load lasting CHAOS_DURATION instead of CI's 60 s. A
# failing check prints the path of porcupine's visualization (HTML).
CHAOS_DURATION ?= 10m

chaos: build
	OTHERIX_CHAOS_DURATION=$(CHAOS_DURATION) go test -count=1 -tags e2e -timeout 0 -v \
		-run 'TestLinearizableUnderKills|TestKill9DuringIdempotentCreates|TestRollingRestartUnderWrites' ./test/e2e/ 2>&1 | grep -v '^\s*{'

# test-readme follows README.md's offline quick start in a fresh clone of
# HEAD: make dev, a VM from the test guest, its console, Ctrl-C and a second
# make dev that re-adopts the VM (test/readme). It builds in the clone and,
# as root, runs in a network namespace of its own so that the agent's data
# plane (on, as make dev's defaults have it) never touches the host.
test-readme:
	go test -count=1 -tags readme -timeout 20m -v ./test/readme/ 2>&1 | grep -v '^{'

# fuzz runs every native Go fuzz target (func FuzzX in a _test.go file) for
# FUZZTIME each. go test -fuzz takes one target in one package per run,
# hence the loop. A crasher is written to the package's testdata/fuzz/,
# where plain `go test` then replays it as a regression test: fix the code,
# keep the file.
fuzz:
	@FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

fuzz-short:
	@FUZZTIME=$(FUZZTIME_SHORT) bash scripts/fuzz.sh

vet:
	go vet ./...
	go vet -tags etcd,e2e,netfabric,readme,release ./...

# gofmt -l over every Go file, build tags or not; node_modules can hold Go
# files that are not ours.
fmt-check:
	@files=$$(find . -name '*.go' -not -path './web/node_modules/*' -not -path './.dev/*' -print | xargs -r gofmt -l); \
	if [ -n "$$files" ]; then \
		echo "fmt-check: these files need gofmt -w:"; echo "$$files"; exit 1; \
	fi

# The suites run one after another even under make -j: two etcd-heavy
# suites at once on a small machine turn timing into flakes.
check:
	$(MAKE) deps-test
	$(MAKE) vet
	$(MAKE) lint-openapi
	$(MAKE) fmt-check
	$(MAKE) cross
	$(MAKE) test
	$(MAKE) test-web
	$(MAKE) test-release
	$(MAKE) fuzz-short
	$(MAKE) test-etcd
	$(MAKE) test-netfabric
	$(MAKE) test-e2e
	$(MAKE) test-readme

# The binaries must keep building for arm64 hosts.
cross:
	CGO_ENABLED=0 GOARCH=arm64 go build -o /dev/null ./cmd/...

# bench builds first: the VM benchmark (issue #5) runs the real binaries.
# Its output, bench.out, starts with the commit and the host; BENCHMARKS.md
# says how each figure is read from it.
bench: build
	@{ echo "make bench: $$(date -u +%FT%TZ), commit $(VERSION), $$(nproc) CPUs, load $$(cut -d' ' -f1-3 /proc/loadavg)"; \
	   if [ -c /dev/kvm ]; then echo "make bench: /dev/kvm present (each benchmark that runs QEMU prints the accelerator it used)"; \
	   else echo "make bench: no /dev/kvm: benchmarks that run QEMU need -accel tcg"; fi; } | tee bench.out
	@echo "make bench: the Go benchmarks below run no QEMU (accelerator: none)" | tee -a bench.out
	@if [ -n "$(BENCH_PKGS)" ]; then \
		echo "go test -run '^$$' -bench . -skip 'GetVMs|Login' -benchtime=$(BENCHTIME) -tags etcd $(BENCH_PKGS)" | tee -a bench.out; \
		go test -run '^$$' -bench . -skip 'GetVMs|Login' -benchtime=$(BENCHTIME) -tags etcd $(BENCH_PKGS) 2>&1 | tee -a bench.out; \
	fi
	@# Authentication overhead (issue #3): jwt, apitoken and the no-auth
	@# baseline in one run; the baseline's fixed principal lives in
	@# http/server/bench_etcd_test.go, never in a build of the server.
	@if [ -d http/server ]; then \
		echo "go test -run '^$$' -bench 'GetVMs|Login' -benchtime=$(BENCHTIME) -tags etcd ./http/server/" | tee -a bench.out; \
		go test -run '^$$' -bench 'GetVMs|Login' -benchtime=$(BENCHTIME) -tags etcd ./http/server/ 2>&1 | tee -a bench.out; \
	fi
	@# The write path (issue #2) and heartbeat CPU against fleet size
	@# (issue #4), with their curves in docs/bench/.
	@$(MAKE) --no-print-directory bench-plots
	@# VM create→running (issue #5): the floor, libvirt and Otherix side by
	@# side on real QEMU, then memory per VM actor. The script skips libvirt,
	@# saying so, when not root.
	@if [ -d test/bench/vm ]; then \
		echo "BIN_DIR=$(BIN_DIR) bash scripts/bench-vm.sh -n 20 -rounds 3" | tee -a bench.out; \
		BIN_DIR=$(BIN_DIR) bash scripts/bench-vm.sh -n 20 -rounds 3 2>&1 | tee -a bench.out; \
		echo "go test -count=1 -tags etcd -run TestMemory -v ./test/bench/vm/" | tee -a bench.out; \
		go test -count=1 -tags etcd -run TestMemory -v ./test/bench/vm/ 2>&1 | grep -v '^{' | tee -a bench.out; \
	fi
	@echo "go run ./test/bench/console -bin $(BIN_DIR)" | tee -a bench.out; go run ./test/bench/console -bin $(BIN_DIR) 2>&1 | tee -a bench.out
	@# Leader SIGKILL to the first CLI write through failover (issue #15).
	@echo "go run ./test/bench/failover -bin $(BIN_DIR) -kills 10" | tee -a bench.out; go run ./test/bench/failover -bin $(BIN_DIR) -kills 10 2>&1 | grep -v '^{' | tee -a bench.out
	@# Overlay throughput, latency and reconcile time (issue #7); needs root,
	@# says so and skips otherwise.
	@echo "go run ./test/bench/overlay" | tee -a bench.out; go run ./test/bench/overlay 2>&1 | tee -a bench.out
	@# Volume drivers on loop-mounted ext4, xfs and btrfs (issue #16): pool
	@# scan of 10,000 volumes, clone against a full copy, raw vs qcow2 on
	@# btrfs; needs root, skips otherwise.
	@echo "go test -run '^$$' -bench 'PoolScan10k|Clone|BtrfsFormat' -benchtime 5x ./nodeagent/volumes/" | tee -a bench.out; \
		go test -run '^$$' -bench 'PoolScan10k|Clone|BtrfsFormat' -benchtime 5x ./nodeagent/volumes/ 2>&1 | tee -a bench.out
	@echo "bench: results in bench.out"

# bench-plots runs the two benchmarks whose figure is a curve and writes the
# curves to docs/bench/ as SVG (committed): write-path throughput against
# concurrent clients, interleaved in rounds, and the control plane's CPU
# against fleet size, one server process per size, each node beating every
# 30 s (10,000 nodes = 333 heartbeats/s, the target of issue #4).
# It appends to bench.out (make bench empties it first). -tags plot builds
# the drawing (gonum's plot), which make check never compiles.
bench-plots:
	@mkdir -p docs/bench
	@if [ -d test/bench ]; then \
		echo "go run -tags plot ./test/bench -c 1,8,32,64 -rounds 3 -d 3s -plot docs/bench/write-path-throughput.svg" | tee -a bench.out; \
		go run -tags plot ./test/bench -c 1,8,32,64 -rounds 3 -d 3s -plot docs/bench/write-path-throughput.svg 2>&1 | grep -v '^{' | tee -a bench.out; \
	fi
	@if [ -d test/sim ]; then \
		echo "go run -tags plot ./test/sim -role sweep -sweep-nodes 1000,2500,5000,10000 -interval 30s -modes unchanged,change -d 20s -plot docs/bench/heartbeat-cpu-vs-nodes.svg" | tee -a bench.out; \
		go run -tags plot ./test/sim -role sweep -sweep-nodes 1000,2500,5000,10000 -interval 30s -modes unchanged,change -d 20s -plot docs/bench/heartbeat-cpu-vs-nodes.svg 2>&1 | grep -v '^{' | tee -a bench.out; \
	fi

# scripts/dev.sh runs the API on DEV_DIR (default .dev; admin@localhost,
# password in DEV_DIR/admin-password), enrolls this host as a node and runs its agent;
# Ctrl-C stops both. exec so a SIGTERM to make reaches the script's trap.
dev: deps build
	BIN_DIR=$(BIN_DIR) exec bash scripts/dev.sh

# dev-cluster is make dev with three otherix-api replicas forming one etcd
# Raft cluster on loopback (DEV_DIR default .dev-cluster, ports from
# DEV_PORT_BASE, default 7180); it prints the members and how to kill one.
dev-cluster: deps build
	BIN_DIR=$(BIN_DIR) exec bash scripts/dev.sh --replicas 3

# release builds dist/ (internal/release, run by scripts/release): the three
# binaries for linux/amd64 and linux/arm64, a .deb of each, an OCI image of
# otherix-api per architecture, a CycloneDX SBOM and SHA256SUMS. It takes
# VERSION=x.y.z from the command line: a git describe is no package version.
# It is not part of make check (a few minutes on two cores); the builder's
# tests (go test ./internal/release) build one architecture.
release: web
	@if [ "$(origin VERSION)" != "command line" ] && [ "$(origin VERSION)" != "environment" ]; then \
		echo "release: give the version: make release VERSION=x.y.z"; exit 1; \
	fi
	go run ./scripts/release -version $(VERSION) -commit $(COMMIT) -date $(BUILD_DATE) -out dist

# test-release runs the release builder end to end for this machine's
# architecture (build tag release): three real go builds, the packages, the
# image, the SBOM and SHA256SUMS, read back and checked; as root, the
# packages' install, upgrade, remove and purge with dpkg in a throwaway
# overlay of /; with a reachable Docker daemon, the image run up to
# /healthz. About a minute and a half on a warm build cache.
test-release:
	go test -count=1 -tags release -timeout 20m ./internal/release/

# image writes dist/otherix-api_<VERSION>_linux_<IMAGE_ARCH>.oci.tar without a
# Docker daemon: docker load -i FILE (or podman load) to run it.
IMAGE_ARCH ?= $(shell go env GOARCH)
image: web
	go run ./scripts/release -image -arch $(IMAGE_ARCH) -version $(VERSION) -commit $(COMMIT) -date $(BUILD_DATE) -out dist

# clean leaves DEV_DIR (.dev) alone: it holds the dev cluster's etcd data.
clean:
	rm -rf $(BIN_DIR) bench.out dist

# bootchain: make test | make demo | make run
SHELL := /bin/bash
GO ?= go
# Count-based (Nx): Go 1.26's fuzz coordinator can fail a time-based run with a spurious
# "context deadline exceeded" at the deadline (go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME ?= 5000x
DATA_DIR ?= ./var
PKGS := ./...

.PHONY: all build deps proto lint gen-check test unit fuzz deploy-check e2e e2e-installer e2e-installer-image installer-image demo run bench clean jaeger

all: build

build:
	$(GO) build ./...

# Debian packages the tests, benchmarks and demo use (idempotent; apt only when
# something is missing). Go tools are pinned as `tool` lines in go.mod.
deps:
	@if [ -x scripts/install-deps.sh ]; then scripts/install-deps.sh; fi

proto:
	$(GO) tool buf generate

lint:
	$(GO) tool buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v -e '^pkg/gen/' -e '^third_party/') 2>/dev/null); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Regenerate into a scratch folder and fail when it differs from what is committed.
gen-check:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	  $(GO) tool buf generate -o $$tmp && \
	  diff -r $$tmp/pkg/gen pkg/gen && echo "generated code is up to date"

# jaeger: test/e2e's TestChainJaeger needs the binary (built once per machine).
unit: jaeger
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

# Every Fuzz target, briefly.
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

# deploy/ against this tree's binaries: systemd units (systemd-analyze), their env
# files, an OCI image built from scratch and run, the kustomize overlays.
deploy-check:
	@scripts/deploy-check.sh

test: deps lint gen-check unit fuzz deploy-check

# Build only the launcher (Go's cache makes a rebuild take a second or two) and start
# it; flags pass through: make run ARGS='--advertise 192.0.2.10 --dhcpd-interface eth1'.
ARGS ?=
run:
	$(GO) build -o bin/bootchain ./tools/bootchain
	exec bin/bootchain up --data-dir $(DATA_DIR) $(ARGS)

clean:
	rm -rf ./var

GRPCURL := $(GO) -C tools/grpcurl tool grpcurl

.PHONY: grpcurl-list
grpcurl-list:
	$(GRPCURL) -cacert $(abspath $(DATA_DIR))/pki/ca.crt -cert $(abspath $(DATA_DIR))/pki/admin.crt \
	  -key $(abspath $(DATA_DIR))/pki/admin.key localhost:9080 list

# The whole chain for real (root, QEMU under TCG): a lab namespace, `bootchain up`
# inside it, VMs PXE-booting BIOS and UEFI through authoritative and proxy DHCP,
# one OTLP trace per boot, a failed boot; and test/e2e/fleet, two sites of
# per-service processes on a 3-member etcd cluster booting at once under kill -9,
# and a site booting with its WAN link down.
# Also part of `make unit` (go test ./...).
e2e: deps jaeger
	$(GO) test -count=1 -timeout 30m -v ./test/e2e/...

# Debian's own network installer booted through the chain in a VM, fetching its
# preseed from bootapi and reporting through the callbacks up to the package
# mirror it cannot reach; then an image install followed to the installed
# system's first boot (docs/installer.md). Minutes under TCG: not in make test.
e2e-installer: deps installer-image
	BOOTCHAIN_E2E_INSTALLER=1 $(GO) test -count=1 -timeout 50m -v -run '^TestInstaller(Debian|Image)$$' ./test/e2e/

# The image install alone.
e2e-installer-image: deps installer-image
	BOOTCHAIN_E2E_INSTALLER=1 $(GO) test -count=1 -timeout 30m -v -run '^TestInstallerImage$$' ./test/e2e/

# The Debian disk image TestInstallerImage installs (scripts/installer-image.sh),
# built once per machine into ~/.cache/bootchain/installer-image: about 6 minutes
# the first time, then instant. Prints its directory.
installer-image: deps
	@scripts/installer-image.sh

# One VM booted through the chain in a private lab, its trace timeline, cleanup.
# DEMO_FLAGS=-uefi boots UEFI; DEMO_FLAGS=-keep keeps the logs; DEMO_FLAGS=-jaeger
# exports the boot's trace to Jaeger and prints its query URL.
DEMO_FLAGS ?=
demo: deps
	$(GO) run ./test/e2e/cmd/demo $(DEMO_FLAGS)

# Jaeger all-in-one (tools/jaeger), built once per machine into ~/.cache/bootchain:
# about 10 CPU-minutes the first time, then instant. Prints the binary's path.
jaeger:
	@scripts/jaeger.sh

# Makefile for the aks-mlops plugins. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

MODULE   := github.com/aks-mlops/mlplugins
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE     ?= $(shell git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)
LDFLAGS  := -s -w -X $(MODULE)/pkg/shared/version.version=$(VERSION) -X $(MODULE)/pkg/shared/version.commit=$(COMMIT) -X $(MODULE)/pkg/shared/version.date=$(DATE)
PLUGINS  := kubectl-mlrollout kubectl-mlhealth helm-acrpush
BIN      := $(CURDIR)/bin
PLATFORM := $(BIN)/platform
GOLANGCI_VERSION := v2.15.0
# Unit-test packages: everything in the root module except the platform-backed suites.
UNIT_PKGS = $$(go list ./... | grep -v -e /test/e2e -e /test/bench)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the three plugins and the platform launcher into bin/
	@mkdir -p $(BIN)
	@for p in $(PLUGINS); do CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$p ./plugins/$$p; done
	@cd test/platform && CGO_ENABLED=0 go build -trimpath -o $(PLATFORM) .

.PHONY: tools
tools: ## Build (once, cached outside git) the platform's upstream binaries
	@bash test/platform/tools.sh >/dev/null

.PHONY: unit
unit: ## Unit tests, with the race detector (no platform needed)
	go test -race -count=1 $(UNIT_PKGS)
	cd test/platform && go test -count=1 ./...

.PHONY: e2e
e2e: build tools ## End-to-end tests against the local platform (brings it up if needed)
	go test -count=1 -timeout 60m ./test/e2e/...

.PHONY: test
test: unit e2e ## Every test: unit + e2e (what CI runs)

.PHONY: lint
lint: ## gofmt, go vet, and golangci-lint (pinned; installed through the Go module proxy)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	cd test/platform && go vet ./...
	@test -x $(BIN)/golangci-lint || GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	$(BIN)/golangci-lint run ./...
	cd test/platform && $(BIN)/golangci-lint run --config ../../.golangci.yml ./...

.PHONY: platform-up
platform-up: build tools ## Start the local platform (writes .platform/env)
	$(PLATFORM) up

.PHONY: platform-down
platform-down: ## Stop every platform process
	@if [ -x $(PLATFORM) ]; then $(PLATFORM) down; else go -C test/platform run . down; fi

.PHONY: platform-status
platform-status: ## Show the platform's components
	$(PLATFORM) status

.PHONY: demo
demo: build tools ## The whole release story on the local platform
	bash hack/demo/demo.sh

.PHONY: demo-down
demo-down: ## Remove what the demo left and stop the platform
	bash hack/demo/demo.sh down

.PHONY: bench
bench: build tools ## Side-by-side benchmarks; writes docs/benchmarks.md
	go test -tags bench -count=1 -v -timeout 60m ./test/bench/...

.PHONY: dist
dist: ## Release archives, SHA256SUMS and Krew manifests: make dist VERSION=vX.Y.Z [PLATFORMS=linux/amd64,...]
	go run ./hack/dist -version $(VERSION) -out dist $(if $(PLATFORMS),-platforms $(PLATFORMS))

.PHONY: clean
clean: ## Remove build outputs (not the platform's cached binaries)
	rm -rf $(BIN) dist

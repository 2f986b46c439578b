# Switchboard: common tasks. `make help` lists them.
GO      ?= go
GOBIN   := $(shell $(GO) env GOPATH)/bin
BUF     ?= $(shell command -v buf 2>/dev/null || echo $(GOBIN)/buf)
export PATH := $(GOBIN):$(PATH)

.PHONY: help demo run build test test-go test-express test-node test-web test-short lint generate check-generated breaking compare bench fuzz smoke tools

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# demo and run build, then exec the program in place of the recipe's
# shell, so that Ctrl-C reaches it alone and a clean exit is make's.
DEMO_BIN   ?= bin/demo
DEMO_FLAGS ?=

demo: ## run Switchboard and two example web servers on localhost; prints their URLs
	$(GO) build -o $(DEMO_BIN) ./examples/demo
	exec $(DEMO_BIN) $(DEMO_FLAGS)

run: build ## run one node with in-memory defaults (HTTP :8080, gRPC 127.0.0.1:9090)
	exec bin/switchboard

build: ## build bin/switchboard
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/switchboard ./cmd/switchboard

test: test-go test-express test-node test-web ## run every test: Go (race detector on, benchmarks once), the express example, the Node client, client.js's package

# The test targets install Chromium, nginx and Node.js when missing (root
# on Debian) or say what to run, and no test may skip for want of them.
test-go test-express test-node test-web: export SWITCHBOARD_REQUIRE_TEST_TOOLS = 1

test-go: ## run the Go tests with the race detector (Chromium, nginx, nats-server and Node.js included), and the benchmarks once
	bash scripts/test-deps.sh chromium nginx node
	bash scripts/install-tools.sh nats-server grpcurl
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -run '^$$' -bench . -benchtime=1x ./...

test-express: ## run the express example's tests against a real node (its page in headless Chromium)
	bash scripts/test-deps.sh chromium node
	cd examples/express && npm ci --no-audit --no-fund && npm test

test-node: ## run the Node client's tests (clients/node) against a real node
	bash scripts/test-deps.sh node
	cd clients/node && npm ci --no-audit --no-fund && npm test

test-web: ## check client.js's package (web/): its TypeScript declarations with tsc, what npm packs
	bash scripts/test-deps.sh node
	cd web && npm ci --no-audit --no-fund && npm test

test-short: ## run the tests without the race detector
	$(GO) test -count=1 ./...

lint: check-generated ## gofmt, go vet, buf lint and format, generated code in sync
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BUF) lint
	$(BUF) format -d --exit-code

generate: ## regenerate gen/ from proto/, and the copy of the .proto the Node client ships
	$(BUF) generate
	cp proto/switchboard/v1/switchboard.proto clients/node/proto/switchboard/v1/switchboard.proto

check-generated: generate ## fail when gen/ or clients/node/proto differs from what proto/ generates
	@git diff --exit-code -- gen/ clients/node/proto/ || { echo "gen/ or clients/node/proto/ is out of date: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/ clients/node/proto/)" || { git status --porcelain -- gen/ clients/node/proto/; echo "gen/ or clients/node/proto/ has untracked files: run 'make generate' and commit"; exit 1; }

breaking: ## fail on a breaking change to the API since the previous commit
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then \
	  $(BUF) breaking --against '.git#ref=HEAD~1'; else echo "no previous commit to compare with"; fi

compare: ## run the same load against Switchboard and the socket.io setup it replaces; prints a table
	bash bench/compare.sh

bench: ## run the benchmarks properly
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz: ## fuzz the frame decoder and the /ws query parser for 30 s each
	$(GO) test -run '^$$' -fuzz=FuzzDecode -fuzztime=30s ./pkg/frame/
	$(GO) test -run '^$$' -fuzz=FuzzParseConnect -fuzztime=30s ./pkg/frame/

smoke: build ## run the README's grpcurl examples against a real node
	bash scripts/smoke.sh bin/switchboard

tools: ## install buf, protoc plugins and grpcurl at pinned versions
	bash scripts/install-tools.sh

# Every habit is a target; CI calls the same ones. `make run` and `make test` install and start
# what they need on a fresh machine, every time, idempotently.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3.11
UV          := $(PYTHON) -m uv
VENV        := .venv
BIN         := $(VENV)/bin
export STACK_DIR ?= $(CURDIR)/.stack
export UV_PYTHON ?= $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

# The local stack (deploy/local/*.sh) and the settings the processes read (CONTRACT.md).
export PGPORT_LOCAL            ?= 15432
export KAFKA_PORT              ?= 19092
export SIMULATOR_PORT          ?= 18080
export API_PORT                ?= 8080
export DATABASE_URL            ?= postgresql://conference:conference@127.0.0.1:$(PGPORT_LOCAL)/conference
export TEST_DATABASE_URL       ?= postgresql://conference:conference@127.0.0.1:$(PGPORT_LOCAL)/conference_test
export KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:$(KAFKA_PORT)
export TOTALVOICE_BASE_URL     ?= http://127.0.0.1:$(SIMULATOR_PORT)
export TOTALVOICE_ACCESS_TOKEN ?= sim-token
export SIMULATOR_TOKENS        ?= $(TOTALVOICE_ACCESS_TOKEN)
export API_TOKENS              ?= demo:demo-token
export WEBHOOK_SECRET          ?= dev-webhook-secret
export LOG_FORMAT              ?= console

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: deps
deps: $(VENV)/.synced ## install the locked Python dependencies into .venv

$(VENV)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen --quiet
	@touch $@

.PHONY: stack-up
stack-up: deps ## start (or keep) the local Postgres and Kafka
	deploy/local/postgres.sh start
	deploy/local/kafka.sh start

.PHONY: stack-down
stack-down: ## stop the local Postgres and Kafka
	-deploy/local/kafka.sh stop
	-deploy/local/postgres.sh stop

.PHONY: topics
topics: ## create the Kafka topics on the configured broker
	deploy/local/kafka.sh topics

.PHONY: migrate
migrate: stack-up ## apply the migrations to DATABASE_URL
	$(BIN)/python -m service migrate

.PHONY: run
run: migrate ## install, start the stack, migrate, and run simulator + api + worker
	@echo ""
	@echo "  API:        http://127.0.0.1:$(API_PORT)   (OpenAPI at /openapi.json)"
	@echo "  Simulator:  $(TOTALVOICE_BASE_URL)   (ledger at /_simulator/ledger)"
	@echo "  Create a conference:"
	@echo "    curl -si -X POST http://127.0.0.1:$(API_PORT)/v1/conferences \\"
	@echo "      -H 'Authorization: Bearer demo-token' -H 'Content-Type: application/json' \\"
	@echo "      -H \"Idempotency-Key: demo-\$$(date +%s)\" \\"
	@echo "      -d '{\"participants\":[{\"number\":\"4832830151\"},{\"number\":\"+5548999990000\"}],\"reference\":\"demo\"}'"
	@echo "  Then: curl -s -H 'Authorization: Bearer demo-token' http://127.0.0.1:$(API_PORT)/v1/conferences/<id>"
	@echo "  Watch the events: KAFKA_BOOTSTRAP_SERVERS=$(KAFKA_BOOTSTRAP_SERVERS) $(BIN)/python -m service events --follow"
	@echo ""
	$(BIN)/python -m service dev

.PHONY: test
test: stack-up ## install, start the stack, and run the whole suite
	$(BIN)/pytest -q

.PHONY: chaos
chaos: stack-up ## the chaos suite with every kill three times (make test runs it once)
	CHAOS_REPEAT=3 $(BIN)/pytest -q -s tests/chaos

.PHONY: bench
bench: stack-up ## benchmark ingress, pipeline and poll schedule; writes bench/results/ and BENCHMARKS.md (not part of test)
	$(BIN)/python -m bench

.PHONY: image
image: ## build the image with podman (a stand-in base from Debian packages where the official one cannot be pulled)
	deploy/image/build.sh

.PHONY: image-test
image-test: stack-up image ## run the image's containers (migrate, simulator, api, worker) against the local stack
	$(BIN)/pytest -q -s -m image tests/deploy/test_image.py

.PHONY: k8s-tools
k8s-tools: ## build (or reuse) the pinned Kubernetes binaries from the Go module proxy (cached outside the clone)
	deploy/k8s/test/tools.sh

.PHONY: k8s-test
k8s-test: deps ## check both overlays on a real kube-apiserver + etcd with kwok nodes (started here, stopped after)
	@deploy/k8s/test/cluster.sh start && $(BIN)/pytest -q -s -m kubernetes tests/deploy/test_kubernetes.py; \
	status=$$?; deploy/k8s/test/cluster.sh stop; exit $$status

.PHONY: unit
unit: deps ## the fast tier only (no stack)
	$(BIN)/pytest -q tests/unit tests/simulator

.PHONY: lint
lint: deps lint-deploy lint-asyncapi audit ## format check, lint, types, import contracts, manifests, AsyncAPI, dependency audit
	$(BIN)/ruff format --check service tests migrations
	$(BIN)/ruff check service tests migrations
	$(BIN)/mypy service
	$(BIN)/lint-imports

.PHONY: audit
audit: deps ## audit the locked dependencies for known vulnerabilities (PyPI's advisory feed)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(UV) export --frozen --no-emit-project --no-hashes --format requirements-txt --quiet > "$$tmp/all.txt" && \
	$(UV) export --frozen --no-emit-project --no-hashes --no-dev --format requirements-txt --quiet > "$$tmp/runtime.txt" && \
	$(BIN)/python deploy/audit_dependencies.py "$$tmp/all.txt" --runtime "$$tmp/runtime.txt"

.PHONY: lint-asyncapi
lint-asyncapi: deps ## validate the AsyncAPI document (/asyncapi.json) against the vendored 3.0.0 schema, offline
	$(BIN)/python deploy/lint_asyncapi.py

.PHONY: lint-deploy
lint-deploy: deps ## render the k8s overlays, validate them offline, hadolint the Dockerfile
	deploy/lint.sh

.PHONY: fmt
fmt: deps ## format the code
	$(BIN)/ruff format service tests migrations
	$(BIN)/ruff check --fix service tests migrations

.PHONY: clean
clean: stack-down ## stop the stack and remove its data and the venv
	rm -rf $(STACK_DIR) $(VENV)

# The two commands of the README: `make demo` (see it work) and `make test` (pass the tests).
# Both install what they need: a virtualenv with the project, Debian's redis-server when missing,
# and (for the examples) npm packages and Chromium.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test lint test-python test-unit test-examples examples-build rabbitmq soak bench bench-quick system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,workers]'
	touch $(STAMP)

## Install Debian packages the tests and the demo need, when they are missing (we run as root in CI);
## redis-sentinel and openssl are for the fault suite's Sentinel failover and TLS scenarios.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## The Node examples the demo serves: Express and the built React page (skipped without npm).
examples-build:
	@if command -v npm >/dev/null; then \
	  (cd examples/react-client && [ -f dist/index.html ] || { npm ci --no-audit --no-fund --loglevel=error && npm run build --silent; }) && \
	  (cd examples/express-dispatch && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error --omit=dev); \
	else echo "npm not found: the demo runs without the web page"; fi

demo: $(STAMP) system-deps examples-build
	$(BIN)/pushserver demo

test: $(STAMP) lint system-deps rabbitmq test-examples test-python

## Lint and types, as pyproject.toml's [tool.ruff] and [tool.mypy] say: ruff's rules (import order
## included), ruff's formatting (checked, never rewritten here), then mypy over pushserver/.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## RabbitMQ for the fault suite's broker tests: started (and installed from Debian) when missing.
rabbitmq:
	tests/faults/ensure_rabbitmq.sh

test-python: $(STAMP)
	PUSHSERVER_REQUIRE_RABBITMQ=1 $(BIN)/pytest -p no:cacheprovider

## The long runs: 100 000-event soak and a worker death with no restart (~4 min).
soak: $(STAMP) system-deps rabbitmq
	PUSHSERVER_SOAK_EVENTS=100000 PUSHSERVER_FAULTS_LONG=1 PUSHSERVER_REQUIRE_RABBITMQ=1 \
	  $(BIN)/pytest -p no:cacheprovider tests/faults -m soak

test-unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/unit

test-examples:
	@if [ -x examples/run-tests.sh ]; then examples/run-tests.sh; fi

## The benchmarks (docs/benchmarks.md): every suite, 5 runs (~30 min), or 3 short ones (< 2 min).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,workers,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) system-deps
	$(BIN)/python bench/run.py

bench-quick: $(BENCH_STAMP) system-deps
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info

# The two commands of the README: `make demo` (see it work) and `make test` (pass the tests).
# Both install what they need: a virtualenv with the project, Debian's redis-server when missing,
# and (for the examples) npm packages and Chromium.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test lint test-python test-unit test-celery-versions test-examples examples-build rabbitmq soak bench bench-quick system-deps clean

# The package accepts Celery 5.3 to 5.7; this virtualenv, where the whole suite runs, has the Celery
# of constraints/celery56.txt. test-celery-versions tests the oldest and newest in their own.
$(STAMP): pyproject.toml constraints/celery56.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints/celery56.txt -e '.[dev,workers]'
	touch $(STAMP)

## Install Debian packages the tests and the demo need, when they are missing (we run as root in CI):
## redis-server; redis-sentinel and openssl for the Sentinel failover and TLS scenarios (fault suite, Node suites);
## prometheus (with promtool) for deploy/prometheus/ and the observability test.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## The Node examples the demo serves: Express and the built React page (skipped without npm).
## They install the packages of clients/js, which are built first.
examples-build:
	@if command -v npm >/dev/null; then \
	  (cd clients/js && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && \
	    for pkg in client react node; do [ ! -f $$pkg/package.json ] || [ -f $$pkg/dist/index.js ] || (cd $$pkg && npm run build --silent) || exit 1; done) && \
	  (cd examples/react-client && [ -f dist/index.html ] || { npm ci --no-audit --no-fund --loglevel=error && npm run build --silent; }) && \
	  (cd examples/express-dispatch && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error --omit=dev); \
	else echo "npm not found: the demo runs without the web page"; fi

## The demo runs from the checkout (dev/ is not part of the installed package); DEMO_ARGS=--once for one round.
demo: $(STAMP) system-deps examples-build
	$(BIN)/python -m dev.demo $(DEMO_ARGS)

# test-python last: pytest's summary of the whole suite is the last line `make test` prints.
test: $(STAMP) lint system-deps rabbitmq test-examples test-celery-versions test-python

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

## pushserver.worker in real workers and the server receiving their events, under the oldest and the
## newest Celery supported (constraints/celery53.txt, celery57.txt), each in a virtualenv of its own.
CELERY_VENVS := .venv-celery53 .venv-celery57

.venv-celery%/.installed: pyproject.toml constraints/celery%.txt
	$(PYTHON) -m venv .venv-celery$*
	.venv-celery$*/bin/pip install --quiet --upgrade pip
	.venv-celery$*/bin/pip install --quiet -c constraints/celery$*.txt -e '.[dev]'
	touch $@

test-celery-versions: system-deps $(addsuffix /.installed,$(CELERY_VENVS))
	@for venv in $(CELERY_VENVS); do \
	  $$venv/bin/python -c 'import celery, kombu; print("== Celery", celery.__version__, "kombu", kombu.__version__)' && \
	  $$venv/bin/pytest -p no:cacheprovider tests/unit/test_worker_api.py tests/integration/test_worker_package.py \
	  || exit 1; \
	done

test-unit: $(STAMP) system-deps
	$(BIN)/pytest -p no:cacheprovider tests/unit

test-examples:
	@if [ -x examples/run-tests.sh ]; then examples/run-tests.sh; fi

## The benchmarks (docs/benchmarks.md): every suite, 5 runs (~30 min), or 3 short ones (~2 min).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints/celery56.txt -e '.[dev,workers,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) system-deps
	$(BIN)/python -m bench.run

bench-quick: $(BENCH_STAMP) system-deps
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) $(CELERY_VENVS) .pytest_cache .hypothesis build *.egg-info

#!/usr/bin/env bash
# Install, build and test the JavaScript packages and the Node examples: the
# packages in clients/js (@celery-pushserver/client, /react, /node: vitest unit
# tests, and the client's integration tests against a real pushserver), the
# React client (vitest), the Express dispatch app (node --test against Redis, nx-27017 +
# a Celery worker) and the browser end-to-end test (node --test +
# playwright-core + Debian's Chromium).
#
# Works on a fresh clone: installs with `npm ci` from the committed lockfiles,
# builds the packages (the examples install them from clients/js, as a user
# would) and the React app, and installs chromium / redis-server /
# redis-sentinel (the Sentinel suites of clients/js/node and express-dispatch)
# with apt when missing (run as root). Needs the Python venv at ../.venv (`make` creates it).
# Every suite runs even when an earlier one fails; the exit code is non-zero
# if any install, build or test failed.
set -uo pipefail

EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$EXAMPLES")"
REPORTS="$(mktemp -d "${TMPDIR:-/tmp}/examples-tests.XXXXXX")"
trap 'rm -rf "$REPORTS"' EXIT

export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

failures=0
total_passed=0
total_failed=0
summary=()

step() { printf '\n==> %s\n' "$*"; }

fail() {
  echo "ERROR: $*" >&2
  failures=$((failures + 1))
}

record() { # record SUITE PASSED FAILED EXIT_CODE
  local suite=$1 passed=${2:-0} failed=${3:-0} code=$4
  # A runner that crashed before counting still counts as a failure.
  if [ "$code" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  summary+=("$suite: $passed passed, $failed failed")
  echo "$suite: $passed passed, $failed failed"
  [ "$code" -eq 0 ] || failures=$((failures + 1))
}

apt_install() { # apt_install PACKAGE...
  if [ "$(id -u)" -ne 0 ]; then
    fail "missing $*: install with 'apt-get install -y $*' (needs root)"
    return 1
  fi
  step "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { fail "apt-get install $* failed"; return 1; }
}

# --- system prerequisites -------------------------------------------------
missing=()
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"

for tool in celery pushserver nx-27017; do
  [ -x "$REPO/.venv/bin/$tool" ] || echo "WARNING: $REPO/.venv/bin/$tool is missing; the suites that need it will fail (create the venv: make install)" >&2
done

# --- install and build ----------------------------------------------------
CLIENTS="$REPO/clients/js"
PACKAGES=()
for pkg in client react node; do
  [ -f "$CLIENTS/$pkg/package.json" ] && PACKAGES+=("$pkg")
done

step "npm ci in clients/js (workspace: ${PACKAGES[*]})"
(cd "$CLIENTS" && npm ci --no-progress) || fail "npm ci failed in clients/js"
for pkg in "${PACKAGES[@]}"; do
  step "build clients/js/$pkg"
  (cd "$CLIENTS/$pkg" && npm run build) || fail "build failed in clients/js/$pkg"
  if (cd "$CLIENTS/$pkg" && npm pkg get scripts.typecheck | grep -q tsc); then
    step "typecheck clients/js/$pkg (sources and tests)"
    (cd "$CLIENTS/$pkg" && npm run typecheck) || fail "typecheck failed in clients/js/$pkg"
  fi
done

for pkg in react-client express-dispatch e2e; do
  step "npm ci in examples/$pkg"
  (cd "$EXAMPLES/$pkg" && npm ci --no-progress) || fail "npm ci failed in examples/$pkg"
done

step "build the React client"
(cd "$EXAMPLES/react-client" && npm run build) || fail "vite build failed"

# --- suites ---------------------------------------------------------------
count_tap() { # count_tap FILE → "PASSED FAILED" from node's TAP summary
  local pass fail_count
  pass=$(grep -E '^# pass [0-9]+' "$1" 2>/dev/null | tail -1 | awk '{print $3}')
  fail_count=$(grep -E '^# fail [0-9]+' "$1" 2>/dev/null | tail -1 | awk '{print $3}')
  echo "${pass:-0} ${fail_count:-0}"
}

run_node_suite() { # run_node_suite NAME DIR GLOB
  local name=$1 dir=$2 glob=$3 code
  step "$name (node --test)"
  (cd "$dir" && node --test --test-concurrency=1 \
      --test-reporter=spec --test-reporter-destination=stdout \
      --test-reporter=tap --test-reporter-destination="$REPORTS/$name.tap" \
      $glob)
  code=$?
  read -r passed failed < <(count_tap "$REPORTS/$name.tap")
  record "$name" "$passed" "$failed" "$code"
}

run_vitest() { # run_vitest NAME DIR [VITEST ARGS...]
  local name=$1 dir=$2 code passed failed
  shift 2
  step "$name (vitest)"
  (cd "$dir" && npx --no-install vitest run "$@" \
      --reporter=default --reporter=json --outputFile.json="$REPORTS/${name//[^A-Za-z0-9]/_}.json")
  code=$?
  read -r passed failed < <(node -e '
    try {
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      console.log(r.numPassedTests, r.numFailedTests);
    } catch { console.log(0, 0); }' "$REPORTS/${name//[^A-Za-z0-9]/_}.json")
  record "$name" "$passed" "$failed" "$code"
}

for pkg in "${PACKAGES[@]}"; do
  # A package without tests yet is reported, not counted as passing.
  if [ -d "$CLIENTS/$pkg/test" ]; then run_vitest "clients/js/$pkg" "$CLIENTS/$pkg"; else echo "WARNING: clients/js/$pkg has no test/ folder" >&2; fi
done
run_vitest "clients/js/client integration" "$CLIENTS/client" --config vitest.integration.config.ts
run_node_suite js-node-integration "$CLIENTS/node" 'test/integration/*.test.mjs'
run_vitest react-client "$EXAMPLES/react-client"

run_node_suite express-dispatch "$EXAMPLES/express-dispatch" 'test/*.test.js'
run_node_suite e2e "$EXAMPLES/e2e" 'tests/*.test.js'

# --- summary --------------------------------------------------------------
step "summary"
printf '  %s\n' "${summary[@]}"
if [ "$failures" -ne 0 ]; then
  echo "$failures step(s) failed" >&2
  [ "$total_failed" -gt 0 ] || total_failed=$failures
fi
echo "examples: $total_passed passed, $total_failed failed"
[ "$failures" -eq 0 ]

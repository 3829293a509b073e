#!/usr/bin/env bash
# The console in a real browser: playwright-core drives Debian's Chromium (headless) against a
# real `bulklink serve` — the whole console on the embedded backend, then one pass on
# `serve --backend aws` on moto. Installs Chromium (apt) and the npm packages when missing.
# The npm packages go to target/console-npm/ (as pinned in scripts/console/package-lock.json);
# screenshots land in target/console/.
#
# usage: scripts/console.sh [BULKLINK_BINARY]   (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-${CARGO_TARGET_DIR:-$PWD/target}/debug/bulklink}"
SHOTS="${CARGO_TARGET_DIR:-$PWD/target}/console"
NPM_DIR="${CARGO_TARGET_DIR:-$PWD/target}/console-npm"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
PY=.venv/bin/python

if [ ! -x "$CHROMIUM" ]; then
  echo "== installing Chromium (Debian's package)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! cmp -s scripts/console/package-lock.json "$NPM_DIR/node_modules/.installed-lock.json"; then
  echo "== installing playwright-core and axe-core (npm ci into $NPM_DIR)"
  mkdir -p "$NPM_DIR"
  cp scripts/console/package.json scripts/console/package-lock.json "$NPM_DIR/"
  (cd "$NPM_DIR" && npm ci --no-audit --no-fund --silent &&
    cp package-lock.json node_modules/.installed-lock.json)
fi

work=$(mktemp -d)
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
mkdir -p "$SHOTS"
uuid() { "$PY" -c 'import uuid; print(uuid.uuid4())'; }

# Runs the browser tests with the given environment (API, MODE, tokens…); on a failure, the
# tail of the server's log (the first argument) follows.
browser_tests() {
  local log=$1
  shift
  if ! env SHOTS="$SHOTS" CHROMIUM="$CHROMIUM" NODE_MODULES="$NPM_DIR/node_modules" "$@" \
    node scripts/console/console.test.mjs; then
    echo "-- the server's log:" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

# --- embedded: the whole console ------------------------------------------------------------
fail_id=$(uuid)
port=$(free_port)
api="http://127.0.0.1:$port"
# A write budget that keeps a 1,000-location job running for seconds (long enough to press
# cancel and pause on it); chunks of 50 redelivered quickly, so the chunk that holds the
# failing location is given up within seconds.
(cd "$work" && exec env RUST_LOG=warn CHUNK_SIZE=50 VISIBILITY_TIMEOUT_SECS=3 MAX_RECEIVE_COUNT=2 \
  WRITE_BUDGET_REFRESH_SECS=1 \
  "$BIN" serve --db "$work/console.db" --listen "127.0.0.1:$port" \
  --token-key "$work/bulklink.key" --webhook-allow-cidr 127.0.0.0/8 --webhook-resolver none \
  --write-budget 200 --workers 2 --brand-rate-per-sec 200 --brand-rate-burst 200 \
  --fail-links-to "$fail_id" >"$work/serve.log" 2>&1) &
pids+=($!)
wait_ready "$api" || { tail -n 20 "$work/serve.log" >&2; exit 1; }
token() { "$BIN" token --token-key "$work/bulklink.key" "$@"; }
echo "== console: the whole console on the embedded backend ($api)"
browser_tests "$work/serve.log" API="$api" MODE=full FAIL_ID="$fail_id" \
  TOKEN_A="$(token --brand "$(uuid)")" TOKEN_B="$(token --brand "$(uuid)")" \
  TOKEN_C="$(token --brand "$(uuid)")" TOKEN_D="$(token --brand "$(uuid)")" \
  TOKEN_ADMIN="$(token --admin)"

# --- aws on moto: one pass ------------------------------------------------------------------
start_moto
eval "$("$BIN" bootstrap --endpoint-url "http://127.0.0.1:$moto_port" --prefix console)"
aws_port=$(free_port)
aws_api="http://127.0.0.1:$aws_port"
(cd "$work" && RUST_LOG=warn exec "$BIN" serve --backend aws --listen "127.0.0.1:$aws_port" \
  --token-key "$work/bulklink.key" --webhook-resolver none >"$work/serve-aws.log" 2>&1) &
pids+=($!)
wait_ready "$aws_api" || { tail -n 20 "$work/serve-aws.log" >&2; exit 1; }
echo "== console: one pass on serve --backend aws (moto)"
browser_tests "$work/serve-aws.log" API="$aws_api" MODE=smoke TOKEN_A="$(token --brand "$(uuid)")"

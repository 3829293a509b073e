#!/usr/bin/env bash
# Holds the HTTP API to its OpenAPI document: validates the document (openapi-spec-validator)
# and runs schemathesis against a real `bulklink serve` seeded with a brand, an offer,
# locations and a finished job — as that brand and as an administrator, then (with a smaller
# budget) against `serve --backend aws` on moto. JUnit reports land in target/schemathesis/.
#
# usage: scripts/contract.sh [BULKLINK_BINARY]   (default: the debug build)
# env:   CONTRACT_EXAMPLES (per-operation budget, embedded), CONTRACT_AWS_EXAMPLES, CONTRACT_SEED
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-${CARGO_TARGET_DIR:-$PWD/target}/debug/bulklink}"
EXAMPLES="${CONTRACT_EXAMPLES:-50}"
AWS_EXAMPLES="${CONTRACT_AWS_EXAMPLES:-5}"
SEED="${CONTRACT_SEED:-20261201}"
REPORTS="${CARGO_TARGET_DIR:-$PWD/target}/schemathesis"
PY=.venv/bin/python
mkdir -p "$REPORTS"

work=$(mktemp -d)
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# A brand's offer, 50 locations and a finished job, through the API.
seed() {
  local api=$1 token=$2
  BULKLINK_TOKEN=$token "$BIN" seed --api "$api" --locations 50 >"$work/seed.json"
  local offer job
  offer=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["offerId"])' "$work/seed.json")
  job=$(BULKLINK_TOKEN=$token "$BIN" job create --api "$api" --offer "$offer" |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  BULKLINK_TOKEN=$token "$BIN" job watch --api "$api" "$job" >/dev/null
}

run_schemathesis() {
  local name=$1 role=$2 api=$3 token=$4 examples=$5 timeout=${6:-10}
  echo "== schemathesis: $name ($examples examples per operation, seed $SEED)"
  local started=$SECONDS
  cat scripts/schemathesis.toml "scripts/schemathesis-$role.toml" >"$work/schemathesis-$role.toml"
  .venv/bin/schemathesis --config-file "$work/schemathesis-$role.toml" --no-color \
    run "$api/openapi.json" \
    --header "Authorization: Bearer $token" \
    --phases examples,coverage,fuzzing,stateful \
    --checks all \
    --exclude-checks ensure_resource_availability \
    --seed "$SEED" \
    --max-examples "$examples" \
    --request-timeout "$timeout" \
    --max-response-time "$timeout" \
    --report junit --report-dir "$REPORTS/$name"
  echo "== schemathesis: $name took $((SECONDS - started)) s"
}

echo "== openapi-spec-validator docs/openapi.json"
"$PY" -m openapi_spec_validator docs/openapi.json

# --- embedded -------------------------------------------------------------------------------
port=$(free_port)
api="http://127.0.0.1:$port"
(cd "$work" && exec "$BIN" serve --db "$work/contract.db" --listen "127.0.0.1:$port" \
  --token-key "$work/bulklink.key" --webhook-resolver none \
  --brand-rate-per-sec 100000 --brand-rate-burst 100000 >"$work/serve.log" 2>&1) &
pids+=($!)
wait_ready "$api"
brand_token=$("$BIN" token --token-key "$work/bulklink.key" --brand "$("$PY" -c 'import uuid; print(uuid.uuid4())')")
admin_token=$("$BIN" token --token-key "$work/bulklink.key" --admin)
seed "$api" "$brand_token"
curl -fsS "$api/openapi.json" >"$work/served.json"
"$PY" -m openapi_spec_validator "$work/served.json"
run_schemathesis embedded-brand brand "$api" "$brand_token" "$EXAMPLES"
run_schemathesis embedded-admin admin "$api" "$admin_token" "$EXAMPLES"

# --- aws on moto ----------------------------------------------------------------------------
start_moto
eval "$("$BIN" bootstrap --endpoint-url "http://127.0.0.1:$moto_port" --prefix contract)"
aws_port=$(free_port)
aws_api="http://127.0.0.1:$aws_port"
(cd "$work" && exec "$BIN" serve --backend aws --listen "127.0.0.1:$aws_port" \
  --token-key "$work/bulklink.key" --webhook-resolver none --request-timeout 60 \
  --brand-rate-per-sec 100000 --brand-rate-burst 100000 >"$work/serve-aws.log" 2>&1) &
pids+=($!)
wait_ready "$aws_api"
seed "$aws_api" "$brand_token"
# moto copies a table for every transaction: with the jobs the run's scheduled offers start
# (a past `startsAt` starts a link-all at once) a transaction can take seconds, and a
# report, a dry run or an offer's drift reads every location the fuzzing made (hundreds)
# from it, so a request gets 60 s here (the server too) instead of 10. Five examples an
# operation (the embedded runs take 50): at ten, one run here took 16 minutes and the
# emulator's load made a request outlast 30 s.
run_schemathesis aws-brand brand "$aws_api" "$brand_token" "$AWS_EXAMPLES" 60

#!/usr/bin/env bash
# The one test command: formatting, lints, every test of every crate on both backends
# (embedded SQLite, and AWS through a moto emulator that this script installs in .venv),
# the operator console in a real Chromium (Debian's package and playwright-core from npm,
# installed when missing), the tests that keep time run again a year ahead (faketime), and
# the static checks of the Terraform deployment.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import moto.server, werkzeug, standardwebhooks, schemathesis, openapi_spec_validator" >/dev/null 2>&1; then
  echo "== installing the AWS emulator (moto), standardwebhooks and schemathesis into .venv"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi

if ! cargo machete --version >/dev/null 2>&1; then
  echo "== installing cargo-machete"
  cargo install --quiet --locked cargo-machete@0.9.2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo machete (no dependency declared but unused)"
cargo machete
echo "== the Lambda functions build without SQLite"
lambdas=(bulklink-job-api bulklink-status bulklink-fanout bulklink-worker bulklink-webhooks)
for pkg in "${lambdas[@]}"; do
  if cargo tree --locked -e normal -p "$pkg" | grep -E "rusqlite|libsqlite3"; then
    echo "$pkg links SQLite (bulklink-sqlite)" >&2
    exit 1
  fi
done
echo "== the fanout and worker functions link only what they use (no HTTP edge, no emulator)"
# Each package alone, as its Lambda zip is built: its normal dependencies, by name.
for pkg in bulklink-fanout bulklink-worker; do
  if cargo tree --locked -e normal -p "$pkg" --prefix none | awk '{print $1}' | sort -u \
    | grep -xE "axum|utoipa|jsonwebtoken|reqwest|rusqlite|libsqlite3-sys|bulklink-http|bulklink-sqlite"; then
    echo "$pkg depends on the crates above; the fanout and worker functions must not" >&2
    exit 1
  fi
  if cargo tree --locked -e normal,features -p "$pkg" -i bulklink-aws --prefix none | grep 'feature "emulator"'; then
    echo "$pkg builds bulklink-aws with the emulator launcher and bootstrap" >&2
    exit 1
  fi
done
echo "== no production build enables the test-only fault switches"
if cargo tree --locked -e normal,features -p bulklink -p bulklink-job-api -p bulklink-status \
  -p bulklink-fanout -p bulklink-worker -p bulklink-webhooks -i bulklink-sqlite | grep 'feature "faults"'; then
  echo "a production build enables bulklink-sqlite's faults feature" >&2
  exit 1
fi
echo "== cargo build (the Lambda function binaries some tests run)"
cargo build --workspace --bins --locked
echo "== cargo test"
cargo test --workspace --locked
echo "== the time-keeping tests again, a year ahead (faketime)"
bash scripts/year-ahead.sh
echo "== API contract (openapi-spec-validator, schemathesis)"
bash scripts/contract.sh
echo "== console in Chromium (playwright-core; installs Chromium and the npm packages if missing)"
bash scripts/console.sh
echo "== terraform (checkov, wiring tests)"
# The wiring tests hold the rehearsal's calls (written by cargo test above) against the roles.
BULKLINK_REHEARSAL_CALLS_REQUIRED=1 bash scripts/check-terraform.sh

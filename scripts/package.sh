#!/usr/bin/env bash
# Builds one Lambda artifact per function (target/lambda/<bin>/bootstrap.zip) with
# cargo-lambda, installed from PyPI into .venv; prints each zip's size and fails if one is
# over 10 MiB. x86_64 with a glibc 2.26 floor, which every current Lambda runtime meets.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LAMBDA_VERSION=1.9.2
BINS=(bulklink-job-api bulklink-status bulklink-fanout bulklink-worker bulklink-sweeper bulklink-webhooks bulklink-estate)
LIMIT=$((10 * 1024 * 1024))

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/cargo-lambda --version >/dev/null 2>&1; then
  echo "== installing cargo-lambda into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "cargo-lambda==${CARGO_LAMBDA_VERSION}"
fi
export PATH="$PWD/.venv/bin:$PATH"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

args=()
for bin in "${BINS[@]}"; do args+=(--bin "$bin"); done
cargo lambda build --release --output-format zip --target x86_64-unknown-linux-gnu.2.26 "${args[@]}"

status=0
for bin in "${BINS[@]}"; do
  zip="$target_dir/lambda/$bin/bootstrap.zip"
  size=$(stat -c %s "$zip")
  printf '%-20s %8.2f MiB  %s\n' "$bin" "$(echo "$size / 1048576" | bc -l)" "$zip"
  if [ "$size" -gt "$LIMIT" ]; then
    echo "  over the 10 MiB limit" >&2
    status=1
  fi
done
exit "$status"

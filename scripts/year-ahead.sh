#!/usr/bin/env bash
# Time is an input: the tests that touch stored times, fixtures, tokens and webhook
# timestamps run a second time with the whole process a year ahead (Debian's faketime,
# installed when missing). A test that was true only on the day it was written fails here.
# Called by scripts/test.sh after `cargo test`, which has built the test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v faketime >/dev/null 2>&1; then
  echo "== installing faketime (Debian package)"
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq faketime >/dev/null
fi

# The test binaries `cargo test` built, by target name.
bins=$(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["manifest_path"].rsplit("/", 2)[-2], m["target"]["kind"][0], m["target"]["name"], m["executable"])
')
bin_of() { # crate folder, target kind, target name
  awk -v p="$1" -v k="$2" -v t="$3" '$1 == p && $2 == k && $3 == t { print $4 }' <<<"$bins"
}
core_lib=$(bin_of core lib bulklink_core)
http_lib=$(bin_of http lib bulklink_http)
egress_lib=$(bin_of egress lib bulklink_egress)
contract=$(bin_of contract test main)
e2e=$(bin_of cli test e2e)
for b in "$core_lib" "$http_lib" "$egress_lib" "$contract" "$e2e"; do
  [ -x "$b" ] || { echo "a test binary is missing: '$b'" >&2; exit 1; }
done

ahead=${BULKLINK_TIME_AHEAD:-+365d}
today=$(date -u +%F)
later=$(faketime -f "$ahead" date -u +%F)
if [ "$today" = "$later" ]; then
  echo "faketime did not move the clock ($today)" >&2
  exit 1
fi
echo "== the same tests on $later, UTC+14 (today is $today UTC)"
# ... and in a time zone fourteen hours east of UTC (POSIX TZ: no tzdata needed), where
# "today" is already tomorrow for most of the day.
year_ahead() {
  TZ=BLK-14 FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f "$ahead" "$@"
}
# Unit tests of the core (the clock, signatures, retention), the HTTP edge (callers) and
# egress (Retry-After dates).
year_ahead "$core_lib" --quiet
year_ahead "$http_lib" --quiet
year_ahead "$egress_lib" --quiet
# The store's own times (idempotency, deliveries' retention) on the embedded backend.
year_ahead "$contract" --quiet embedded::
# Fixtures of earlier releases, Lambda fixture events, tokens and their expiry, webhooks
# and their signatures (the standardwebhooks receiver runs under the same clock). On the
# embedded backend: the AWS adapters read the same Clock, and moto under faketime is slowed
# by it past what the AWS tests' delivery deadlines allow.
year_ahead "$e2e" --quiet --skip aws migration:: lambda_fixtures:: access:: tokens:: webhooks:: egress::

#!/usr/bin/env bash
# Static checks of the Terraform deployment in terraform/: checkov (no failed checks
# allowed; skips are inline with reasons) and the wiring tests in terraform/tests.
# Needs no terraform binary, no AWS credentials and no network beyond PyPI (for the first
# install of the tools, pinned in scripts/requirements-terraform.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

REQ=scripts/requirements-terraform.txt
pin() { grep -E "^$1==" "$REQ"; }
version() { pin "$1" | cut -d= -f3; }

# Exits 0 when every given "dist==version" is installed in the venv whose python is $1.
has_pins() {
  "$1" - "${@:2}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    assert version(name) == want, spec
PY
}

# --- .venv: python-hcl2 and pytest for the wiring tests -------------------------------------
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The import check also catches an hcl2 package overwritten by checkov's bc-python-hcl2.
if ! has_pins .venv/bin/python "$(pin python-hcl2)" "$(pin pytest)" ||
   ! .venv/bin/python -c "import hcl2, sys; sys.exit(hcl2.__version__ != '$(version python-hcl2)')" 2>/dev/null; then
  echo "== installing python-hcl2 and pytest into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$(pin python-hcl2)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$(pin python-hcl2)" "$(pin pytest)"
fi

# --- .venv-checkov: checkov on its own ---------------------------------------------------------
if [ ! -x .venv-checkov/bin/python ]; then
  python3 -m venv .venv-checkov
fi
if ! has_pins .venv-checkov/bin/python "$(pin checkov)"; then
  echo "== installing checkov into .venv-checkov"
  .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check "$(pin checkov)"
fi

status=0

echo "== checkov -d terraform"
# --skip-download: no calls to the Prisma Cloud API (guidelines, severities).
.venv-checkov/bin/checkov -d terraform --quiet --compact --skip-download || status=1

echo "== pytest terraform/tests"
PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -q -p no:cacheprovider terraform/tests || status=1

exit "$status"

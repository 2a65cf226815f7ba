#!/usr/bin/env bash
# Dependencies for the browser tests of the web console (tests/browser/).
#
# Installs:
#   1. Debian's `chromium` package (apt-get, with sudo when not root), only when
#      /usr/bin/chromium is missing, without Recommends (they pull a printing/desktop
#      stack) but with fonts-liberation and fonts-dejavu-core so pages render the same
#      text metrics on every machine. apt cannot pin chromium beyond the distribution
#      (bookworm / bookworm-security), so the installed version is printed instead.
#   2. The Python packages pinned in scripts/requirements-browser.txt (Playwright and
#      pytest) into the project venv .venv, created with `python3 -m venv .venv` if missing.
#
# Why: the tests launch the system browser with
#   p.chromium.launch(executable_path="/usr/bin/chromium")
# so `playwright install` (which downloads Playwright's own browser builds) is never run.
# The playwright wheel bundles its Node driver: no Node.js is needed.
# Playwright 1.65 targets a newer Chromium than Debian ships; the pair works for what the
# tests use, but keep both pinned and check again when either changes.
#
# Idempotent: safe to run any number of times. Usage: scripts/browser-deps.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
CHROMIUM=/usr/bin/chromium
REQS=scripts/requirements-browser.txt

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "browser-deps: installing Debian chromium" >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-liberation fonts-dejavu-core
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "browser-deps: $CHROMIUM still missing after apt-get install chromium" >&2
    exit 1
fi
echo "browser-deps: chromium package $(dpkg-query -W -f='${Version}' chromium 2>/dev/null || echo '?')"
# The Debian wrapper script prints harmless noise on stderr; keep only the version line.
echo "browser-deps: $("$CHROMIUM" --version 2>/dev/null | head -n 1)"

if [ ! -x "$VENV/bin/python" ]; then
    echo "browser-deps: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
print(f"browser-deps: playwright {version('playwright')}, pytest {version('pytest')}")
PY

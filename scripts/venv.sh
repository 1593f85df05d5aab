#!/usr/bin/env bash
# Create (if absent) and update the project's .venv; the README's two commands start with this.
# Re-running is cheap: pip is skipped while pyproject.toml and the constraints are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="${SPECTRAL_RAY_CONSTRAINTS:-constraints/cpu.txt}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.spectral-ray-installed
want=$(cat pyproject.toml "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" -e ".[test]"
    echo "$want" > "$stamp"
fi

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
    # torch's x86_64 wheels bring CUDA libraries: the venv takes ≈ 6.5 GB. Say so before pip
    # fails half-way with "No space left on device".
    need_gb="${SPECTRAL_RAY_MIN_FREE_GB:-8}"
    free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
    if [ -n "$free_gb" ] && [ "$free_gb" -lt "$need_gb" ]; then
        echo "scripts/venv.sh: installing into $(pwd)/.venv needs about ${need_gb} GB free; df reports ${free_gb} GB." >&2
        echo "  Free some space (old clones, caches under \${SPECTRAL_RAY_CACHE:-~/.cache/spectral-ray}) and rerun;" >&2
        echo "  set SPECTRAL_RAY_MIN_FREE_GB=0 to try anyway." >&2
        exit 1
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" -e ".[test]"
    echo "$want" > "$stamp"
fi

# Sourced by demo.sh and test.sh: create or reuse .venv at the repository root and make sure
# the package (with the extras named in SATCLIP_EXTRAS) is installed for the current pyproject.toml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
extras="${SATCLIP_EXTRAS:-eval}"
stamp=".venv/.satclip-installed-${extras//,/_}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[satclip] installing the package and its dependencies into .venv (first run takes a few minutes)"
    .venv/bin/python -m pip install -q -e ".[${extras}]"
    echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export WANDB_MODE="${WANDB_MODE:-offline}"

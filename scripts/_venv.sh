# Sourced by demo.sh and test.sh: create or reuse .venv at the repository root and make sure the
# package (with the extras named in SATCLIP_EXTRAS, default train) is installed at the tested pins
# of constraints.txt, for the current pyproject.toml and constraints.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
extras="${SATCLIP_EXTRAS:-train}"
stamp=".venv/.satclip-installed-${extras//,/_}"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[satclip] installing the package and its dependencies into .venv (first run takes a few minutes)"
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[${extras}]"
    echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export WANDB_MODE="${WANDB_MODE:-offline}"

#!/usr/bin/env bash
# Lint and types, as CI runs them before the tests: creates or reuses .venv (satclip[test], the
# pinned ruff and mypy of constraints.txt), then mypy (configured in pyproject.toml).
set -euo pipefail
SATCLIP_EXTRAS=test source "$(dirname "$0")/_venv.sh"
echo "[satclip] mypy satclip"
python -m mypy satclip

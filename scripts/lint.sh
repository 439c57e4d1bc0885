#!/usr/bin/env bash
# Lint, types and docs, as CI runs them before the tests: creates or reuses .venv (satclip[test], the
# pinned ruff, mypy and mkdocs of constraints.txt), then ruff check, ruff format --check, mypy,
# lint-imports (the import-layer contract) and mkdocs build --strict (settings in pyproject.toml and mkdocs.yml).
set -euo pipefail
SATCLIP_EXTRAS=test source "$(dirname "$0")/_venv.sh"
echo "[satclip] ruff check"
python -m ruff check satclip tests scripts
echo "[satclip] ruff format --check"
python -m ruff format --check satclip tests scripts
echo "[satclip] mypy satclip"
python -m mypy satclip
echo "[satclip] lint-imports (the floors of docs/architecture.md, pyproject.toml [tool.importlinter])"
lint-imports --no-cache
echo "[satclip] mkdocs build --strict"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
python -m mkdocs build --strict --quiet --site-dir "$site"

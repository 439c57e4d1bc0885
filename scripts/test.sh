#!/usr/bin/env bash
# The test suite: creates or reuses .venv, installs satclip[test], runs pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k harmonics).
set -euo pipefail
SATCLIP_EXTRAS=test source "$(dirname "$0")/_venv.sh"
python -m pytest -q "$@"

#!/usr/bin/env bash
# The project's one test command (README step 2; .ci/run calls it): install what the tests need,
# then lint, type-check and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"  # CPU build; unpinned pulls CUDA
python3 -m pip install -q --disable-pip-version-check -e ".[train,dev,mic]"

echo "== ruff"
python3 -m ruff check edge_asr train quantize benchmarks tests scripts
echo "== mypy"
python3 -m mypy
python3 -m mypy --strict edge_asr  # the device side, which users import, is held to --strict
echo "== pytest"
python3 -m pytest -q "$@"

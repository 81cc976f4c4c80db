#!/usr/bin/env bash
# The device side at its dependency floors (.ci/run calls it after scripts/test.sh). For each Python
# in FLOORS_PYTHONS (default "3.9 3.11": the oldest that requires-python allows, and the one CI runs),
# a venv with scripts/floors.txt installed as wheels only, the project installed --no-deps, and the
# tests that need no train extra (-m "not slow and not desktop"). Extra arguments go to pytest.
#
# Venvs are kept under $EDGE_ASR_FLOORS_CACHE (default ~/.cache/edge-asr-floors) and rebuilt when
# floors.txt or the interpreter changes. A Python version that is not installed (looked for as
# pythonX.Y on PATH, in pyenv's versions folder, /usr/local/bin, /usr/bin) is reported and skipped;
# the script fails when none ran.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
floors=$root/scripts/floors.txt
cache=${EDGE_ASR_FLOORS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-asr-floors}
pip_flags=(-q --disable-pip-version-check)

find_python() {  # a working interpreter of version $1 (X.Y), or nothing
  local want=$1 candidate
  for candidate in "$(command -v "python$want" || true)" \
    "${PYENV_ROOT:-$HOME/.pyenv}/versions/$want".*/bin/"python$want" \
    "/usr/local/bin/python$want" "/usr/bin/python$want"; do
    # A pyenv shim of a version that is not selected exits non-zero here, as does a missing venv module.
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c \
      "import sys, venv; sys.exit('%d.%d' % sys.version_info[:2] != '$want')" >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
}

run_floors() {  # $1: X.Y; the rest go to pytest
  local want=$1 python venv py stamp lm_import ignore=()
  shift
  python=$(find_python "$want")
  if [ -z "$python" ]; then
    echo "== floors, Python $want: not installed here, skipped (its floors are untested on this machine)"
    skipped+=("$want")
    return 0
  fi
  venv=$cache/py$want
  py=$venv/bin/python
  stamp="$("$python" -c 'import sys; print(sys.version)' | head -1) $(sha256sum "$floors" | cut -c1-16)"
  if [ ! -x "$py" ] || [ "$(cat "$venv/.floors-stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "== floors, Python $want: building $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv" || return 1
    "$py" -m pip install "${pip_flags[@]}" --only-binary=:all: -r "$floors" || return 1
    echo "$stamp" >"$venv/.floors-stamp"
  fi
  # The project itself, from this checkout (re-pointed when the cached venv was made from another).
  if ! (cd / && "$py" -c "import edge_asr, os, sys; sys.exit(os.path.dirname(os.path.realpath(edge_asr.__file__)) != os.path.realpath(sys.argv[1]))" \
    "$root/edge_asr") >/dev/null 2>&1; then
    "$py" -m pip install "${pip_flags[@]}" --no-deps -e "$root" || return 1
  fi
  # quantize.lm (which tests/test_lm.py and test_word_lm.py import to build LMs) imports torch through
  # quantize.convert; leave those two out while it does, and only for that reason.
  lm_import=$("$py" -c "import quantize.lm" 2>&1 || true)
  if grep -q "No module named '\(torch\|transformers\)'" <<<"$lm_import"; then
    echo "note: quantize.lm needs torch to import: tests/test_lm.py and tests/test_word_lm.py left out"
    ignore=(--ignore=tests/test_lm.py --ignore=tests/test_word_lm.py)
  fi
  echo "== floors, Python $want: $("$py" -c 'import numpy, onnxruntime, soundfile, soxr
print("numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__, "soundfile", soundfile.__version__, "soxr", soxr.__version__)')"
  "$py" -m pytest -q -m "not slow and not desktop" ${ignore[@]+"${ignore[@]}"} "$@"
}

# run_floors is called in an || list, where bash ignores set -e: its steps return 1 themselves.
wanted=(${FLOORS_PYTHONS:-3.9 3.11})
failed=()
skipped=()
for want in "${wanted[@]}"; do
  run_floors "$want" "$@" || failed+=("$want")
done
echo "== floors: ${SECONDS}s${skipped[*]:+ (skipped Python ${skipped[*]})}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "floors: failed on Python ${failed[*]}" >&2
  exit 1
fi
if [ ${#skipped[@]} -eq ${#wanted[@]} ]; then
  echo "floors: no Python of FLOORS_PYTHONS (${FLOORS_PYTHONS:-3.9 3.11}) found" >&2
  exit 1
fi

#!/usr/bin/env bash
# Creates the virtualenv and installs the suite. Usage: scripts/setup.sh [run|dev]
#   run: what the benchmark needs; dev: plus tests, tensorflow-datasets, Ray and peer packages.
# TORCH_INDEX_URL=<a PyTorch wheel index> installs a CUDA build of the pinned torch version.
# Re-running is cheap: a stamp keyed on the requirement files skips an unchanged install.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-run}
venv=${VENV:-.venv}
key=$(cat pyproject.toml requirements/*.txt | sha1sum | cut -c1-12)
stamp="$venv/.installed-$profile-$key"
[ -f "$stamp" ] && exit 0

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check -c requirements/constraints.txt)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" --index-url "$TORCH_INDEX_URL" torch
else
    "${pip[@]}" torch
fi
if [ "$profile" = dev ]; then
    "${pip[@]}" -e ".[dev]"
    "${pip[@]}" --no-deps -r requirements/peers.txt
else
    "${pip[@]}" -e .
fi
touch "$stamp"

#!/usr/bin/env bash
# The GPU path on a machine with CUDA, in under 5 minutes:
#   1. every registered method on CUDA against its CPU reference, fp32 and bf16 autocast, the SDPA
#      backends, and one training step of the encoder per method at the loop's default CUDA precision
#      (train.precision=bf16; tests/test_gpu_path.py);
#   2. a short efficiency sweep (one attention layer, forward and forward+backward, CUDA time and
#      max_memory_allocated) at n = 1024, 4096 and 16384.
# Usage: scripts/gpu_check.sh [OUT_DIR [EFFICIENCY FLAGS...]]   (default results/gpu-check;
# PYTHON picks the interpreter, else .venv/bin/python as `make` sets it up, else python)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
OUT="${1:-results/gpu-check}"
[ $# -gt 0 ] && shift  # further arguments go to the efficiency command

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "error: scripts/gpu_check.sh needs a CUDA device (torch.cuda.is_available() is False)" >&2
    exit 2
fi
"$PY" -c 'import torch; print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")'

echo "== 1/2 methods on CUDA vs CPU (pytest -m gpu)"
"$PY" -m pytest -m gpu tests/test_gpu_path.py -q -p no:cacheprovider

echo "== 2/2 efficiency sweep on CUDA -> $OUT"
# Each (method, length) cell is timed with torch.utils.benchmark; cells that run out of memory
# or time are recorded as such, so one slow method cannot stall the check.
"$PY" run_benchmark.py efficiency --device cuda --seq-lens 1024,4096,16384 --out "$OUT" "$@"

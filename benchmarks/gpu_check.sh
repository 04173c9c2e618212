#!/usr/bin/env bash
# vgsn on an NVIDIA GPU: one device call of at most 9 minutes, most important first, every
# figure in $OUT/gpu_check.json as soon as it is measured (benchmarks/gpu_check.py lists the
# stages: device, matmul_precision, agree_max_rel, guided_ms, bit_identical_two_processes,
# paper_run). Exit status 0 when every stage passed, 1 when one failed (or nothing could run).
#
# Installs NOTHING from the network. The lent GPU machine has Python 3.12 with jax for CUDA
# but no PyTensor: benchmarks/gpu_wheels.sh puts every wheel it lacks in .whl/ and MNIST and
# the C reference in data/ beforehand (see there for the device call and what it carries);
# they are installed here into /tmp/site, and vgsn runs from this checkout (PYTHONPATH).
#
#     bash benchmarks/gpu_check.sh [PYTHON]                    # default: python3 on PATH
#     GPU_CHECK_ALLOW_CPU=1 GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # CPU dry run
#     GPU_CHECK_FAIL=agree_max_rel ...                         # a stage fails on purpose
# GPU_CHECK_BUDGET_S: seconds for the stages (default 480: the call's 9 minutes less the
# wheels' install and jax's start); the paper run takes what is left.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
OUT=${OUT:-/tmp/vgsn-gpu-check}
mkdir -p "$OUT"
export VGSN_MODE=JAX PYTHONUNBUFFERED=1
if ! "$PY" -c "import pytensor" 2>/dev/null; then
  if ls .whl/pytensor-*.whl >/dev/null 2>&1; then
    # numpy's wheel only where the machine's numpy is older than PyTensor needs (>= 2).
    wheels=$(ls .whl/*.whl | grep -v '/numpy-')
    "$PY" -c "import numpy, sys; sys.exit(int(numpy.__version__.split('.')[0]) < 2)" \
      || wheels="$wheels $(ls .whl/numpy-*.whl 2>/dev/null)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site $wheels || { echo "gpu_check: could not install .whl/"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "gpu_check: PyTensor is missing: pip install -e .[gpu], or bash benchmarks/gpu_wheels.sh"
    exit 1
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
budget=${GPU_CHECK_BUDGET_S:-480}
[ "${GPU_CHECK_TINY:-0}" = 1 ] && budget=${GPU_CHECK_BUDGET_S:-240}
"$PY" benchmarks/gpu_check.py --out "$OUT" --budget "$budget"
rc=$?
[ -f "$OUT/gpu_check.json" ] && cat "$OUT/gpu_check.json"
exit $rc

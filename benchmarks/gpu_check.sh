#!/usr/bin/env bash
# vgsn on an NVIDIA GPU (issue 13): the JAX back-end's figures where a GPU is at hand.
#
# Installs NOTHING from the network: run it in an environment made beforehand with
#     pip install -e .[gpu]          # jax with its CUDA 12 wheels (Python >= 3.12)
# or on a machine that has jax for CUDA but no PyTensor, with the PyTensor wheel that
# benchmarks/gpu_wheels.sh put in .whl/ (installed into /tmp/site).
# It checks that jax sees a GPU, then runs, with --backend jax (and C beside it on the
# host CPU for the ratio where cheap):
#   1. bench_vae.py   (MNIST-1 / MNIST-2 VAE update)
#   2. bench_chain.py (the guided 6-step update at the 2015 sizes and MNIST-1 sizes)
#   3. bench_eval.py  (the GPDE at the paper's size)
#   4. one short preset end to end (--quick, then the first 2,000 updates of mnist2-ork)
# and prints every figure; the target is the guided update at the 2015 sizes <= 10 ms.
#
#     bash benchmarks/gpu_check.sh [PYTHON]        # default: python3 on PATH
#     GPU_CHECK_FULL=1 bash benchmarks/gpu_check.sh   # also C side by side (slow on CPU)
#     GPU_CHECK_ALLOW_CPU=1 ...      # a dry run of the script itself on a CPU-only jax
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
OUT=${OUT:-/tmp/vgsn-gpu-check}
mkdir -p "$OUT"
export VGSN_MODE=JAX PYTHONUNBUFFERED=1
# The lent GPU machine has jax but no PyTensor and no network: benchmarks/gpu_wheels.sh puts
# the PyTensor wheel in .whl/ beforehand; it is installed here into /tmp/site, and vgsn runs
# from this checkout (PYTHONPATH), with nothing built.
if ! "$PY" -c "import pytensor" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "gpu_check: could not install .whl/"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "gpu_check: PyTensor is missing: pip install -e .[gpu], or bash benchmarks/gpu_wheels.sh"
    exit 1
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # share the GPU politely; figures unchanged

echo "=== devices"
"$PY" - <<'PY' || { echo "gpu_check: jax does not import; pip install -e .[gpu] first"; exit 1; }
import jax
devs = jax.devices()
print("jax", jax.__version__, devs)
import os
if not any(d.platform == "gpu" for d in devs) and os.environ.get("GPU_CHECK_ALLOW_CPU") != "1":
    raise SystemExit("gpu_check: jax sees no GPU (CPU only): check the CUDA 12 wheels / driver")
import vgsn.backend as b
print(b.describe())
PY
[ $? -eq 0 ] || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

backends=jax
[ "${GPU_CHECK_FULL:-0}" = 1 ] && backends=jax,c

echo "=== bench_vae.py --backend $backends"
"$PY" benchmarks/bench_vae.py --backend "$backends" --steps 50 2>&1 | tee "$OUT/bench_vae.txt"

echo "=== bench_chain.py --backend $backends"
"$PY" benchmarks/bench_chain.py --backend "$backends" --updates 30 --skip-cold --no-bare \
    2>&1 | tee "$OUT/bench_chain.txt"

echo "=== bench_chain.py, host noise drawn in place (VGSN_NOISE_AHEAD=0) for comparison"
VGSN_NOISE_AHEAD=0 "$PY" benchmarks/bench_chain.py --backend jax --updates 10 --skip-compile \
    --no-bare --sizes 2015 2>&1 | tee "$OUT/bench_chain_noise_in_place.txt"

echo "=== bench_eval.py (GPDE, $VGSN_MODE)"
"$PY" benchmarks/bench_eval.py --no-float32 2>&1 | tee "$OUT/bench_eval.txt"

echo "=== run_mnist.py --quick --backend jax"
rm -rf "$OUT/quick"
/usr/bin/time -v "$PY" run_mnist.py --quick --backend jax --out "$OUT/quick" --quiet \
    2>&1 | grep -E "Elapsed|Maximum resident|report" | tee "$OUT/quick.txt"

[ -f data/train-images-idx3-ubyte.gz ] || [ -n "${VGSN_DATA:-}" ] \
  || echo "gpu_check: no MNIST in data/ (gpu_wheels.sh copies it there): the next part fails"
echo "=== mnist2-ork, first 2,000 updates (1,000 + 1,000), --backend jax"
rm -rf "$OUT/ork"
start=$(date +%s)
"$PY" run_mnist.py --preset mnist2-ork --updates 2000 --eval-every 0 --no-figures \
    --backend jax --out "$OUT/ork" --quiet 2>&1 | tail -3 | tee "$OUT/ork.txt"
echo "mnist2-ork 2,000 updates + evaluation: $(( $(date +%s) - start )) s wall" | tee -a "$OUT/ork.txt"

echo "=== summary (also in $OUT)"
grep -hE "^RESULT|^RATIO|ms per update|scan \+ stored|GEMM floor|Elapsed" "$OUT"/*.txt

#!/usr/bin/env bash
# Prepare, on a machine WITH pip access, what benchmarks/gpu_check.sh needs on the lent GPU
# machine (Python 3.12 with jax for CUDA, numpy, scipy, numba, h5py, matplotlib, pillow and
# tqdm already there; no PyTensor; no network): the PyTensor wheel for CPython 3.12, in .whl/
# (ignored by git through .git/info/exclude; the device tool carries it with carry=[".whl"]).
#
#     bash benchmarks/gpu_wheels.sh [PYTHON] [MNIST_DIR]
# PYTHON: one with pip (default python3). MNIST_DIR (optional): a folder with the four MNIST
# IDX .gz files, copied into data/ (git-ignored, never committed) for the mnist2-ork part,
# since the GPU machine cannot download them. Then one device call, e.g. (the device tool):
#     run(command="bash benchmarks/gpu_check.sh", timeout_s=540,
#         carry=[".whl", "data/train-images-idx3-ubyte.gz", "data/train-labels-idx1-ubyte.gz",
#                "data/t10k-images-idx3-ubyte.gz", "data/t10k-labels-idx1-ubyte.gz"])
# (it installs .whl/*.whl into /tmp/site; its figures come back under $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
MNIST=${2:-}
if [ -n "$MNIST" ]; then
  for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
           t10k-labels-idx1-ubyte.gz; do
    [ -f "$MNIST/$f" ] || { echo "gpu_wheels: $MNIST/$f is missing"; exit 2; }
    cp "$MNIST/$f" data/
  done
  git check-ignore -q data/train-images-idx3-ubyte.gz || { echo "gpu_wheels: data/ is not ignored"; exit 2; }
fi
VERSION=${PYTENSOR_VERSION:-3.3.8}     # the version this repository's suite last passed on
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "pytensor==$VERSION"
ls -l .whl
du -sh .whl

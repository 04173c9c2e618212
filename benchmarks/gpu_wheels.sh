#!/usr/bin/env bash
# Prepare, on a machine WITH pip access, what benchmarks/gpu_check.sh needs on the lent GPU
# machine (Python 3.12 with jax for CUDA, numpy, scipy, numba, h5py, matplotlib, pillow and
# tqdm already there; no PyTensor; no network): the PyTensor wheel for CPython 3.12, in .whl/
# (ignored by git through .git/info/exclude; the device tool carries it with carry=[".whl"]).
#
#     bash benchmarks/gpu_wheels.sh [PYTHON]     # PYTHON: one with pip (default python3)
# Then, on the device:  bash benchmarks/gpu_check.sh   (it installs .whl/*.whl into /tmp/site)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
VERSION=${PYTENSOR_VERSION:-3.3.8}     # the version this repository's suite last passed on
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "pytensor==$VERSION"
ls -l .whl
du -sh .whl

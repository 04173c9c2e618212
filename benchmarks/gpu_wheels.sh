#!/usr/bin/env bash
# Prepare, on a machine WITH pip access, everything benchmarks/gpu_check.sh needs on the lent
# GPU machine (Python 3.12 with jax for CUDA, scipy, numba, h5py, matplotlib, pillow and tqdm
# there; no PyTensor, no setuptools, no network):
#   .whl/   the wheels for CPython 3.12 it lacks: PyTensor and what PyTensor needs that is
#           missing there (setuptools, filelock, numpy >= 2; gpu_check.sh installs numpy only
#           where the machine's is older), ignored by git through .git/info/exclude;
#   data/   (git-ignored) the four MNIST IDX files for the paper run, from MNIST_DIR, and the
#           C reference of three guided updates at the 2015 sizes (gpu_check_ref.npz, made
#           here in the C mode: a few seconds);
#   data/gpu_check_run/  (optional) the run folder a previous call brought back (its
#           files_at/paper_run), which the next call resumes.
#
#     bash benchmarks/gpu_wheels.sh [PYTHON] [MNIST_DIR]
# PYTHON: one with pip and vgsn's dependencies (default python3). Then ONE device call:
#     run(command="bash benchmarks/gpu_check.sh", timeout_s=540,
#         carry=[".whl", "data/train-images-idx3-ubyte.gz", "data/train-labels-idx1-ubyte.gz",
#                "data/t10k-images-idx3-ubyte.gz", "data/t10k-labels-idx1-ubyte.gz",
#                "data/gpu_check_ref.npz", "data/gpu_check_run"])
# Everything comes back under $OUT: gpu_check.json, paper_run/ and its log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
MNIST=${2:-}
mkdir -p data
if [ -n "$MNIST" ]; then
  for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
           t10k-labels-idx1-ubyte.gz; do
    [ -f "$MNIST/$f" ] || { echo "gpu_wheels: $MNIST/$f is missing"; exit 2; }
    cp "$MNIST/$f" data/
  done
fi
git check-ignore -q data/gpu_check_ref.npz || { echo "gpu_wheels: data/ is not ignored"; exit 2; }
VERSION=${PYTENSOR_VERSION:-3.3.8}     # the version this repository's suite last passed on
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for spec in "pytensor==$VERSION" "setuptools>=59" "filelock>=3.15" "numpy>=2,<2.4"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$spec"
done
VGSN_MODE=C PYTHONPATH=$PWD "$PY" benchmarks/gpu_check.py --make-reference data/gpu_check_ref.npz
ls -l .whl data/gpu_check_ref.npz
du -sh .whl

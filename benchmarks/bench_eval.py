"""Benchmark the GPDE (Gaussian Parzen density estimate) at the paper's size.

10,000 centres (model samples), 10,000 validation rows scored under 10 sigmas
(MNIST_SIGMAS), then 10,000 test rows under the chosen sigma, at 784 dims: the
whole ``vgsn.evaluation.gpde`` call. The SGEMM (and DGEMM) peak of this machine
is measured in the same run, so the rate can be read against it.

Work counted: the 10 sigmas share one distance matrix, so the GEMM work is two
products of 10k x 10k x 784 (validation and test): 2 * 2 * 1e4 * 1e4 * 784 =
0.31 TFLOP, and ``gpde_gflops`` is that divided by the total time. Recomputing
the distances for every sigma (as the 2014 GAN Parzen script did) would be 11
products, 1.7 TFLOP (the issue's "about 3 TFLOP" also counted the test set once
per sigma); the rate that would need is printed too, labelled as such.

Data: uniform random pixels in [0, 1]. Every distance is then close to every
other, the worst case for the exponentials (at large sigmas no term is
negligible); real model samples against MNIST are cheaper.

    python benchmarks/bench_eval.py            # float64 (the default, exact)
    python benchmarks/bench_eval.py --quick    # 2,000 rows each, a smoke test

The last line is ``RESULT gpde_total_s=<s> gpde_gflops=<g> sgemm_peak_gflops=<g>``
for the default (float64) path. ``--backend`` is accepted like the other benchmarks' and
printed with the device; the GPDE itself is numpy on the host CPU in every mode today (a
jax.numpy path for a GPU is issue 13's open part).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vgsn.evaluation import MNIST_SIGMAS, gpde, parzen_gemm_flops  # noqa: E402


def gemm_peak(dtype, n=4096, repeats=5):
    """Best-of-``repeats`` GFLOP/s of an n x n x n numpy matmul."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n)).astype(dtype)
    b = rng.random((n, n)).astype(dtype)
    a @ b  # warm-up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def run_gpde(centres, X_valid, X_test, dtype):
    t = time.perf_counter()
    res = gpde(centres, X_valid, X_test, sigmas=MNIST_SIGMAS, dtype=dtype)
    return time.perf_counter() - t, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10000, help="centres, valid and test rows")
    ap.add_argument("--dims", type=int, default=784)
    ap.add_argument("--quick", action="store_true", help="2,000 rows each")
    ap.add_argument("--no-float32", action="store_true", help="skip the float32 timing")
    ap.add_argument("--backend", default=os.environ.get("VGSN_MODE", "c").lower(),
                    help="c, jax or numba (printed; the GPDE runs in numpy on the CPU)")
    args = ap.parse_args(argv)
    n = 2000 if args.quick else args.rows
    d = args.dims

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, load average {load} "
          "(other processes slow every number below alike), "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}")
    sgemm = gemm_peak(np.float32)
    dgemm = gemm_peak(np.float64)
    print(f"backend {args.backend}; device: cpu (the GPDE is numpy in every mode)")
    print(f"peak: SGEMM {sgemm:.1f} GFLOP/s, DGEMM {dgemm:.1f} GFLOP/s (4096^3, best of 5)")

    rng = np.random.default_rng(1)
    centres = rng.random((n, d), dtype=np.float32)
    X_valid = rng.random((n, d), dtype=np.float32)
    X_test = rng.random((n, d), dtype=np.float32)
    flops = parzen_gemm_flops(n, n, d) * 2  # validation (all sigmas) + test
    nominal = parzen_gemm_flops(n, n, d) * (len(MNIST_SIGMAS) + 1)
    print(f"GPDE: {n} centres, {n} valid rows x {len(MNIST_SIGMAS)} sigmas, {n} test rows, "
          f"{d} dims; GEMM work {flops / 1e12:.3f} TFLOP "
          f"(one product per sigma would be {nominal / 1e12:.2f} TFLOP)")

    results = {}
    for dtype in ([np.float32] if not args.no_float32 else []) + [np.float64]:
        secs, res = run_gpde(centres, X_valid, X_test, dtype)
        name = np.dtype(dtype).name
        peak = sgemm if dtype is np.float32 else dgemm
        results[name] = (secs, flops / secs / 1e9)
        print(f"{name:8s}: {secs:7.2f} s, {flops / secs / 1e9:6.1f} GFLOP/s of GEMM work "
              f"({100 * flops / secs / 1e9 / peak:.0f}% of its GEMM peak; per-sigma-recompute "
              f"equivalent {nominal / secs / 1e9:.0f} GFLOP/s), sigma={res['sigma']:.4f}, "
              f"test {res['test_mean']:.2f} +- {res['test_stderr']:.2f} nats")
    secs, gf = results["float64"]
    print(f"RESULT gpde_total_s={secs:.2f} gpde_gflops={gf:.1f} sgemm_peak_gflops={sgemm:.1f}")


if __name__ == "__main__":
    main()

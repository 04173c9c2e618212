"""GEMM yardsticks shared by the benchmarks: the machine's SGEMM peak, and the
"GEMM floor" of an update (the same matrix products, timed alone).

The peak is the best float32 rate of a large square product (several sizes, best
of a few repeats, numpy's BLAS). On a small machine the products of an update
(500 rows against 1000-1500 units) run well below that peak even when timed
alone, so the benchmarks also print the floor: the seconds the update's own
products take back to back in numpy, with nothing else. ``update / floor`` says
how much of the update is the backend's own overhead (elementwise work,
reductions, copies, scan bookkeeping); ``floor FLOPs / floor s / peak`` says how
far the shapes themselves are from the peak.
"""
import time

import numpy as np


def best_seconds(fn, repeats=5):
    fn()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def sgemm_peak(sizes=(2048, 3000, 4096), repeats=5):
    """Best float32 GFLOP/s of an n x n x n numpy product over ``sizes``."""
    rng = np.random.default_rng(0)
    best = 0.0
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        best = max(best, 2.0 * n ** 3 / best_seconds(lambda: a @ a, repeats) / 1e9)
    return best


def gemm_floor(products, repeats=3):
    """Seconds and GFLOP of a list of products ``(m, k, n, count)`` run alone.

    Each ``m x k @ k x n`` float32 product is timed (best of ``repeats``) and
    counted ``count`` times. Returns (seconds, gflop).
    """
    rng = np.random.default_rng(1)
    seconds = gflop = 0.0
    timed = {}
    for m, k, n, count in products:
        if (m, k, n) not in timed:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            timed[m, k, n] = best_seconds(lambda: a @ b, repeats)
        seconds += count * timed[m, k, n]
        gflop += count * 2.0 * m * k * n / 1e9
    return seconds, gflop


def mlp_products(rows, dims, input_grad_first=False, count=1):
    """Forward and backward products of an MLP with layer sizes ``dims`` (pairs
    (n_in, n_out)) on ``rows`` rows: forward ``rows x n_in @ n_in x n_out``, weight
    gradient ``n_in x rows @ rows x n_out``, input gradient ``rows x n_out @ n_out x
    n_in`` (skipped for the first layer unless ``input_grad_first``)."""
    out = []
    for i, (a, b) in enumerate(dims):
        out.append((rows, a, b, count))
        out.append((a, rows, b, count))
        if i > 0 or input_grad_first:
            out.append((rows, b, a, count))
    return out

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


# ---- the floor that is a floor: the faster of numpy's BLAS and XLA's dot ------------
def blas_kernel():
    """The OpenBLAS core numpy's BLAS runs (``openblas_get_corename``), or '?'."""
    import ctypes
    import glob
    import os
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*.so*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return "?"


def numpy_floor_alone(products, repeats=3):
    """``gemm_floor`` of numpy's BLAS in a fresh process with ``OPENBLAS_CORETYPE`` and
    ``OPENBLAS_L2_SIZE`` unset (a machine's pinned core can run a slower kernel than
    the CPU has): {'seconds': {(m, k, n): s}, 'kernel': the core that ran}."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    code = ("import json, sys; sys.path.insert(0, %r); import _gemm; "
            "print(json.dumps(_gemm._per_product(json.loads(sys.argv[1]), %d)))"
            % (os.path.dirname(os.path.abspath(__file__)), repeats))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(products)], env=env,
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return {"seconds": {tuple(k): s for k, s in got["seconds"]}, "kernel": got["kernel"]}


def _per_product(products, repeats=3):
    rng = np.random.default_rng(1)
    seconds = {}
    for m, k, n, _ in products:
        if (m, k, n) not in seconds:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            seconds[m, k, n] = best_seconds(lambda: a @ b, repeats)
    return {"seconds": [[list(k), s] for k, s in seconds.items()], "kernel": blas_kernel()}


def xla_per_product(products, repeats=5):
    """{(m, k, n): best seconds} of XLA's own float32 dot (full precision) on jax's
    default device, each product waited for (``block_until_ready``)."""
    import jax
    import jax.numpy as jnp
    dot = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
    seconds = {}
    for m, k, n, _ in products:
        if (m, k, n) not in seconds:
            a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
            b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
            seconds[m, k, n] = best_seconds(lambda: dot(a, b).block_until_ready(), repeats)
    return seconds


def floor_from(products, *per_product):
    """(seconds, gflop) of ``products`` taking, for each shape, the fastest of the
    ``per_product`` timings ({(m, k, n): s} each)."""
    seconds = gflop = 0.0
    for m, k, n, count in products:
        seconds += count * min(t[m, k, n] for t in per_product)
        gflop += count * 2.0 * m * k * n / 1e9
    return seconds, gflop


def xla_peak(n=4096, repeats=5):
    """jax's default device's float32 GFLOP/s on an n x n x n product at full
    precision, each product waited for: the yardstick of a GPU (not the host's BLAS)."""
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: jnp.dot(a, a, precision=jax.lax.Precision.HIGHEST))
    return 2.0 * n ** 3 / best_seconds(lambda: f(a).block_until_ready(), repeats) / 1e9

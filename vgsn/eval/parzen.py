"""The Gaussian Parzen log-likelihood: the estimator behind the GPDE and its two engines.

GPDE (Gaussian Parzen density estimate, Breuleux et al. 2011)
    The score the paper reports (MNIST 265 / 220 / 330, TFD 2060 / 2130). Draw
    10,000 samples from the model; the density is the uniform mixture of
    isotropic Gaussians N(x; sample_i, sigma^2 I); the score is a mean
    log-density in nats. It is not a likelihood of the model (it rewards sharp,
    mode-covering samples), but it is what the GSN, GAN and VGSN papers compared
    on. Computed here exactly: every row against every centre, log-sum-exp in
    float64 by default, in blocks so memory stays bounded whatever the sizes.
    The two protocols that choose sigma and report a number are in
    :mod:`vgsn.eval.gpde`.

Two engines compute the same estimator (``engine=`` of every function here):
``'numpy'`` (the default: float64, exact to ~1e-12 nats, on the host CPU) and
``'jax'`` (:mod:`vgsn.eval.parzen_jax`: float32 on jax's device, a GPU when there is one).
``'auto'`` (what a run's evaluation uses, :func:`parzen_engine`) is ``'jax'`` when
the process runs vgsn's JAX mode (``vgsn.backend.MODE == 'jax'``) and jax imports,
so the GPDE runs on the device the model runs on; else ``'numpy'``.

Every function returns log-densities in nats (higher is better). Nothing here prints
or writes files.
"""
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["parzen_log_likelihood", "parzen_gemm_flops", "parzen_engine", "check_sigmas",
           "ENGINES"]

_LOG_2PI = math.log(2.0 * math.pi)

#: The engines of :func:`parzen_log_likelihood` (see :func:`parzen_engine`).
ENGINES = ("auto", "numpy", "jax")
# Whether 'auto' takes jax on a CPU-only jax too (a GPU or TPU always does): yes, the jax
# engine is the faster on a CPU as well (benchmarks/bench_eval.py; docs/benchmarks.md).
_JAX_ON_CPU = True


def _n_threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _as_2d(name, A):
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dims); got shape {A.shape}")
    return A


def check_sigmas(sigmas):
    s = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"sigmas must be positive finite numbers; got {sigmas!r}")
    return s


# Terms more than _CUTOFF nats below a row's largest (which is exp(0) = 1) are
# skipped: together they weigh less than n_centres * exp(-_CUTOFF) (1e-22 for
# 10,000 centres) relative to the sum, far below float64 rounding. Skipping them
# is what keeps small sigmas cheap: most exponents are hugely negative there, and
# libm's exp is slowest on arguments that underflow.
_CUTOFF = 60.0
# Above this fraction of kept terms, exp every term (clamped) instead of gathering.
_DENSE_FRACTION = 0.3


def _lse_accumulate(D, neg_half_inv_var, s_out):
    """``s_out[:, j] += sum_c exp(neg_half_inv_var[j] * D[:, c])`` (float64 sums).

    ``D`` holds non-negative squared distances already shifted by each row's
    minimum, so every exponent is <= 0 and nothing overflows. Terms below
    ``-_CUTOFF`` are dropped (sparse sigmas) or clamped there (dense ones).
    """
    n_rows = D.shape[0]
    limits = _CUTOFF / -np.asarray(neg_half_inv_var)  # keep D < limit
    # Estimate each sigma's kept fraction from a strided sample of D.
    sample = np.sort(D.ravel()[:: max(1, D.size // 20000)])
    frac = np.searchsorted(sample, limits) / max(1, sample.size)
    sparse = frac <= _DENSE_FRACTION
    if np.any(sparse):
        # One gather at the largest sparse limit serves every sparse sigma.
        rows, cols = np.nonzero(D < limits[sparse].max())
        vals = D[rows, cols].astype(np.float64)
        for j in np.flatnonzero(sparse):
            sel = vals < limits[j]
            terms = np.exp(vals[sel] * neg_half_inv_var[j])
            s_out[:, j] += np.bincount(rows[sel], weights=terms, minlength=n_rows)
    buf = None
    for j in np.flatnonzero(~sparse):
        if buf is None:
            buf = np.empty_like(D)
        np.multiply(D, D.dtype.type(neg_half_inv_var[j]), out=buf)
        np.maximum(buf, -_CUTOFF, out=buf)
        np.exp(buf, out=buf)
        s_out[:, j] += buf.sum(axis=1, dtype=np.float64)


def _block_update(H, c_norm, neg_half_inv_var, h_min, sums):
    """Fold one (rows, centres) block of ``(-2x).c`` into the running sums.

    ``H`` is overwritten. ``h_min`` (rows,) holds each row's smallest
    ``h = ||c||^2 - 2 x.c`` so far and ``sums`` (rows, n_sigmas) the sums of
    ``exp(-(h - h_min) / (2 sigma^2))``; both are updated in place.
    """
    H += c_norm[None, :]
    new_min = np.minimum(h_min, H.min(axis=1))
    seen = np.isfinite(h_min)
    if np.any(seen):  # rescale earlier blocks' sums to the new minimum
        sums[seen] *= np.exp(np.outer(h_min[seen] - new_min[seen], neg_half_inv_var))
    h_min[:] = new_min
    # new_min holds values of H's dtype, so this is exact and >= 0.
    H -= new_min.astype(H.dtype)[:, None]
    _lse_accumulate(H, neg_half_inv_var, sums)


def parzen_engine(engine="auto", dtype=None):
    """The engine that ``engine`` names: ``'numpy'`` or ``'jax'``.

    ``'auto'`` is ``'jax'`` when this process runs vgsn's JAX mode
    (``vgsn.backend.MODE == 'jax'``) and jax imports, so the GPDE runs on the device
    the model's functions run on (jax's GPU or TPU; on a CPU-only jax too, where it
    measured faster than numpy); else ``'numpy'``. An explicit ``dtype=float64``
    asks for the exact path, so ``'auto'`` gives ``'numpy'`` then. A process that
    has not imported ``vgsn.backend`` has no model of any mode: ``'numpy'`` (this
    module never imports the symbolic library itself).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")
    if engine != "auto":
        return engine
    if dtype is not None and np.dtype(dtype) == np.float64:
        return "numpy"
    if getattr(sys.modules.get("vgsn.backend"), "MODE", None) != "jax":
        return "numpy"
    try:
        from vgsn.eval import parzen_jax
    except ImportError:
        return "numpy"
    return "jax" if _JAX_ON_CPU or parzen_jax.platform() != "cpu" else "numpy"


def _check_jax_block(jax_block):
    if jax_block is None:
        return None, None
    try:
        rb, cb = (int(v) for v in jax_block)
    except (TypeError, ValueError):
        rb = cb = 0
    if rb < 1 or cb < 1:
        raise ValueError(f"jax_block must be two positive ints (rows, centres); got {jax_block!r}")
    return rb, cb


def parzen_log_likelihood(centres, X, sigma, dtype=None, block_elements=2 ** 23,
                          n_threads=None, engine="numpy", jax_block=None):
    """Log-density of each row of ``X`` under a Gaussian Parzen window (nats).

    ``log p(x) = logsumexp_i(-||x - c_i||^2 / (2 sigma^2)) - log n_centres
    - (dims / 2) log(2 pi sigma^2)``, every row against every centre.

    Parameters
    ----------
    centres : array (n_centres, dims)
        The kernel centres (model samples).
    X : array (rows, dims)
        Points to evaluate.
    sigma : float or sequence of floats
        Kernel standard deviation(s). Several sigmas share one distance matrix,
        so a grid costs little more than a single value.
    dtype : numpy float type, optional
        Precision of the numpy engine's distances (default float64; the jax
        engine computes in float32, and refuses float64). One GEMM per block:
        ``||x||^2 + ||c||^2 - 2 x.c``, on data centred on the centres' mean.
        float64 agrees with a brute-force float64 computation to ~1e-12 nats;
        it runs the paper-size GPDE (10k centres, 10k validation rows x 10
        sigmas, 10k test rows, 784 dims) in tens of seconds on two CPU cores
        (``benchmarks/bench_eval.py``). float32 is about 1.5-2x faster, but the
        cancellation in the expansion costs up to roughly
        ``5e-7 * (||x||^2 + ||c||^2) / (2 sigma^2)`` nats per row (MNIST rows
        against 10k MNIST centres at sigma = 0.1: at most 5e-3, on average 5e-4,
        on the mean score 2.5e-4): irrelevant to a score quoted to the nat, but
        not exact. Log-sum-exp sums are float64 either way.
    block_elements : int
        numpy engine: elements of one (rows x centres) block; the working memory
        is about ``3 * block_elements * 8`` bytes (the default: ~200 MB) beyond a
        centred copy of ``centres``, whatever the sizes.
    n_threads : int, optional
        numpy engine: threads for the element-wise part (the GEMM uses BLAS's
        own threads). Default: the CPUs this process may use.
    engine : {'numpy', 'jax', 'auto'}
        'numpy' (the default): the float64 (or ``dtype``) path above, on the
        host. 'jax': :mod:`vgsn.eval.parzen_jax`, the same estimator in float32 on
        jax's default device, with the float32 error above (measured on real
        MNIST: at most 4.7e-7 * (||x||^2 + max ||c||^2) / (2 sigma^2) nats per
        row, 4.6e-3 at sigma = 0.1, 4e-5 on the mean score). 'auto':
        :func:`parzen_engine` (jax in vgsn's JAX mode). On a CPU the jax engine
        takes about half the time of the float64 numpy path (``benchmarks/bench_eval.py``;
        the figures, with their dates and machines, are in ``docs/benchmarks.md``).
    jax_block : (int, int), optional
        jax engine: the (rows, centres) block (``parzen_jax.block_shape``;
        default per platform). jax compiles once per block shape, dims and
        number of sigmas.

    Returns
    -------
    ll : ndarray float64, (rows,) for a scalar sigma, else (rows, n_sigmas)
    """
    scalar = np.ndim(sigma) == 0
    sig = check_sigmas(sigma)
    centres = _as_2d("centres", centres)
    X = _as_2d("X", X)
    if centres.shape[1] != X.shape[1]:
        raise ValueError(
            f"centres and X must have the same number of dims; got {centres.shape} and {X.shape}")
    if centres.shape[0] == 0:
        raise ValueError("centres is empty: the Parzen window needs at least one centre")
    if dtype is not None and np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64; got {np.dtype(dtype)}")
    if block_elements < 1:
        raise ValueError(f"block_elements must be >= 1; got {block_elements}")
    rb_jax, cb_jax = _check_jax_block(jax_block)
    if parzen_engine(engine, dtype) == "jax":
        if dtype is not None and np.dtype(dtype) == np.float64:
            raise ValueError("engine 'jax' computes the distances in float32; got dtype float64 "
                             "(use engine='numpy' for the float64 path)")
        try:
            from vgsn.eval import parzen_jax
        except ImportError as e:
            raise ImportError(f"engine 'jax' needs jax ({e}), part of the install on Python "
                              ">= 3.12; or use engine='numpy'") from None
        out = parzen_jax.log_likelihood(centres, X, sig, rb_jax, cb_jax)
        return out[:, 0] if scalar else out
    dtype = np.dtype(np.float64 if dtype is None else dtype)
    n, dims = X.shape
    n_c = centres.shape[0]
    n_sig = sig.size
    out = np.empty((n, n_sig), dtype=np.float64)
    if n == 0:
        return out[:, 0] if scalar else out

    # Centring on the centres' mean leaves distances unchanged and shrinks the
    # norms, hence the cancellation error of the expansion.
    shift = centres.mean(axis=0, dtype=np.float64)
    C = (centres - shift).astype(dtype, copy=False)
    c_norm = np.einsum("ij,ij->i", C, C, dtype=np.float64).astype(dtype)
    # ||x - c||^2 = ||x||^2 + h with h = ||c||^2 - 2 x.c. The GEMM gives (-2x).c
    # (scaling by -2 is exact); ||x||^2 is constant along a row, so the row's
    # log-sum-exp needs only h, and ||x||^2 is added back at the end.
    neg_half_inv_var = -0.5 / sig ** 2
    log_norm = -math.log(n_c) - 0.5 * dims * (_LOG_2PI + 2.0 * np.log(sig))

    rb = int(min(n, max(1, min(1024, block_elements))))
    cb_max = max(1, block_elements // rb)
    n_col_blocks = -(-n_c // cb_max)
    cb = -(-n_c // n_col_blocks)  # equal-sized column blocks
    threads = int(n_threads or _n_threads())
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for r0 in range(0, n, rb):
            r1 = min(n, r0 + rb)
            Xb = (X[r0:r1] - shift).astype(dtype, copy=False)
            x_norm = np.einsum("ij,ij->i", Xb, Xb, dtype=np.float64)
            Xb_m2 = Xb * dtype.type(-2)
            h_min = np.full(r1 - r0, np.inf)
            sums = np.zeros((r1 - r0, n_sig))
            for c0 in range(0, n_c, cb):
                c1 = min(n_c, c0 + cb)
                H = Xb_m2 @ C[c0:c1].T  # the GEMM: all the O(dims) work
                args = (c_norm[c0:c1], neg_half_inv_var)
                if pool is None or H.shape[0] < 2 * threads:
                    _block_update(H, *args, h_min, sums)
                else:
                    # The element-wise work, in parallel over row slices.
                    edges = np.linspace(0, H.shape[0], threads + 1).astype(int)
                    jobs = [pool.submit(_block_update, H[i:j], *args, h_min[i:j], sums[i:j])
                            for i, j in zip(edges[:-1], edges[1:])]
                    for job in jobs:
                        job.result()
            # Clip: the expansion can put the nearest centre a rounding error below 0.
            d_min = np.maximum(h_min + x_norm, 0.0)
            out[r0:r1] = np.log(sums) + np.outer(d_min, neg_half_inv_var) + log_norm
    finally:
        if pool is not None:
            pool.shutdown()
    return out[:, 0] if scalar else out


def parzen_gemm_flops(n_centres, rows, dims):
    """Floating-point operations of the distance GEMM for one Parzen evaluation.

    ``2 * rows * n_centres * dims``; a whole sigma grid shares one evaluation.
    """
    return 2.0 * n_centres * rows * dims

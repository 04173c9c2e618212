"""Gaussian Parzen density estimate (GPDE): the estimator, both protocols, the sigma grids.

GPDE (Gaussian Parzen density estimate, Breuleux et al. 2011)
    The score the paper reports (MNIST 265 / 220 / 330, TFD 2060 / 2130). Draw
    10,000 samples from the model; the density is the uniform mixture of
    isotropic Gaussians N(x; sample_i, sigma^2 I); the score is a mean
    log-density in nats. It is not a likelihood of the model (it rewards sharp,
    mode-covering samples), but it is what the GSN, GAN and VGSN papers compared
    on. Computed here exactly: every row against every centre, log-sum-exp in
    float64 by default, in blocks so memory stays bounded whatever the sizes.
    Two protocols (SPEC.md section 10):

    - ``'vgsn'`` (the default, :func:`gpde`): sigma chosen on the validation
      set from a grid (MNIST logspace(-1, 0, 10), as the GAN paper's
      ``parzen_ll.py``), the mean log-density reported on the test set.
    - ``'paper'`` (:func:`gpde_paper`): sigma chosen on the SAME rows it reports,
      from the small grids of the paper-era script (:data:`PAPER_MNIST_SIGMAS`,
      :data:`PAPER_MNIST_VAR_SIGMAS`, :data:`PAPER_TFD_SIGMAS`). This is what
      NN-Python's ``generative_models/WalkoutResults.py`` ran: it calls
      ``cross_validate_sigma(samples, Xva, grid, batch)`` of ``LogPDFs.py`` and
      keeps ``[1]``, the best mean over the grid, on the very rows that chose
      sigma. ``LogPDFs.py`` (in Philip-Bachman/ICML-2015 and NN-Python) is the
      2015 code's estimator: ``theano_parzen(mu, sigma)`` is the exact
      log-mean-exp of ``-||x - mu_i||^2 / (2 sigma^2)`` minus
      ``dims * log(sigma sqrt(2 pi))``, every row against every centre;
      ``cross_validate_sigma`` evaluates each sigma of the grid it is given and
      returns ``[best_sigma, best_mean_ll, best_per_row_lls]``. Choosing sigma on
      the reported rows can only raise the number (optimistic by the selection),
      so the default stays the held-out protocol; :func:`gpde_both` computes both
      for the price of one.

Two engines compute the same estimator (``engine=`` of every function here):
``'numpy'`` (the default: float64, exact to ~1e-12 nats, on the host CPU) and
``'jax'`` (:mod:`vgsn.parzen_jax`: float32 on jax's device, a GPU when there is one).
``'auto'`` (what a run's evaluation uses, :func:`parzen_engine`) is ``'jax'`` when
the process runs vgsn's JAX mode (``vgsn.backend.MODE == 'jax'``) and jax imports,
so the GPDE runs on the device the model runs on; else ``'numpy'``.

Every function returns log-densities in nats (higher is better). The bound and the
importance-weighted estimate are in :mod:`vgsn.evaluation`, which re-exports every
name here. Nothing here prints or writes files.
"""
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = [
    "MNIST_SIGMAS", "TFD_SIGMAS", "PAPER_MNIST_SIGMAS", "PAPER_MNIST_VAR_SIGMAS",
    "PAPER_TFD_SIGMAS", "PAPER_SIGMAS", "GPDE_PROTOCOLS", "parzen_log_likelihood",
    "select_parzen_sigma", "parzen_summary", "gpde", "gpde_paper", "gpde_both", "model_gpde",
    "parzen_gemm_flops", "parzen_engine", "ENGINES",
]

#: Sigma grid for MNIST (pixels in [0, 1], 784 dims): 10 values log-spaced in
#: [0.1, 1], the default grid of the GAN paper's Parzen evaluation script.
MNIST_SIGMAS = np.logspace(-1.0, 0.0, 10)

#: Sigma grid for TFD (48x48 faces in [0, 1], 2304 dims): 20 values log-spaced in
#: [0.01, 1]. It reaches a decade below the MNIST grid, since smooth, strongly
#: correlated face pixels let sharp samples sit closer to test faces per pixel,
#: at twice the density. ``gpde`` reports ``sigma_at_edge`` when the choice is
#: an end of the grid, the sign that a grid was too narrow.
TFD_SIGMAS = np.logspace(-2.0, 0.0, 20)

# The paper-era grids, read from NN-Python generative_models/WalkoutResults.py
# (its last commit b6cf30d, 2015-05-15): the ``cross_validate_sigma`` calls of
# ``check_mnist_walkout`` (one grid for the ORK model, "KLD_PATH", another for
# the VAR model, "VAE_PATH") and of ``check_tfd_walkout`` (both models).

#: MNIST ORK grid of the paper-era script (sigma chosen on the reported rows).
PAPER_MNIST_SIGMAS = np.array([0.1, 0.13, 0.15, 0.18, 0.2])
#: MNIST VAR grid of the same script: note it reaches 0.25.
PAPER_MNIST_VAR_SIGMAS = np.array([0.12, 0.15, 0.18, 0.20, 0.25])
#: TFD grid of the same script (ORK and VAR alike).
PAPER_TFD_SIGMAS = np.array([0.08, 0.09, 0.1, 0.11, 0.12, 0.15, 0.2])
#: Grid per experiment family: 'mnist' (ORK and the KL-weight variants), 'mnist-var', 'tfd'.
PAPER_SIGMAS = {"mnist": PAPER_MNIST_SIGMAS, "mnist-var": PAPER_MNIST_VAR_SIGMAS,
                "tfd": PAPER_TFD_SIGMAS}
#: ``'vgsn'``: sigma on validation rows, reported on test rows; ``'paper'``: both on the same rows.
GPDE_PROTOCOLS = ("vgsn", "paper")

_LOG_2PI = math.log(2.0 * math.pi)

#: The engines of :func:`parzen_log_likelihood` (see :func:`parzen_engine`).
ENGINES = ("auto", "numpy", "jax")
# Whether 'auto' takes jax on a CPU-only jax too (a GPU or TPU always does). Measured
# on this project's 2-core CPU (Python 3.13, jax 0.12; benchmarks/bench_eval.py, the
# figures in parzen_log_likelihood's docstring): the jax engine takes 0.37-0.49x the
# time of numpy's float64 path and 0.65-0.79x its float32 one, so yes.
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


def _check_sigmas(sigmas):
    s = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"sigmas must be positive finite numbers; got {sigmas!r}")
    return s


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


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
        from vgsn import parzen_jax
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
        sigmas, 10k test rows, 784 dims) in about 19 s on a 2-core machine
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
        host. 'jax': :mod:`vgsn.parzen_jax`, the same estimator in float32 on
        jax's default device, with the float32 error above (measured on real
        MNIST: at most 4.7e-7 * (||x||^2 + max ||c||^2) / (2 sigma^2) nats per
        row, 4.6e-3 at sigma = 0.1, 4e-5 on the mean score). 'auto':
        :func:`parzen_engine` (jax in vgsn's JAX mode). Measured on this
        project's 2-core CPU (jax 0.12 on the CPU), the paper-size
        :func:`gpde` (10k centres, 10k rows x 10 sigmas, 10k test rows, 784
        dims; ``benchmarks/bench_eval.py``, engines alternating, load average
        5-7): real MNIST rows, numpy float64 18.9 s, float32 11.8 s, jax 9.3 s
        (0.49x float64); uniform pixels (numpy's worst case), 24.2 s, 13.5 s,
        8.8 s (0.37x). One validation pass alone on MNIST, quieter (load 1.4):
        numpy float64 9.0 s, float32 5.2 s, jax 4.3 s.
    jax_block : (int, int), optional
        jax engine: the (rows, centres) block (``parzen_jax.block_shape``;
        default per platform). jax compiles once per block shape, dims and
        number of sigmas.

    Returns
    -------
    ll : ndarray float64, (rows,) for a scalar sigma, else (rows, n_sigmas)
    """
    scalar = np.ndim(sigma) == 0
    sig = _check_sigmas(sigma)
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
            from vgsn import parzen_jax
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


def select_parzen_sigma(centres, X_valid, sigmas=None, **kwargs):
    """Pick the kernel width with the highest mean validation log-likelihood.

    Parameters
    ----------
    centres : array (n_centres, dims)
    X_valid : array (rows, dims)
    sigmas : sequence of floats, optional
        The grid; default ``MNIST_SIGMAS`` (10 values log-spaced in [0.1, 1]).
    **kwargs
        Passed to :func:`parzen_log_likelihood` (``engine``, ``dtype``, ``block_elements``).

    Returns
    -------
    best_sigma : float
    mean_ll_per_sigma : ndarray (n_sigmas,)
        Mean validation log-likelihood (nats) for each grid value, in grid order.
    """
    sig = _check_sigmas(MNIST_SIGMAS if sigmas is None else sigmas)
    ll = parzen_log_likelihood(centres, X_valid, sig, **kwargs)
    means = ll.mean(axis=0)
    return float(sig[int(np.argmax(means))]), means


def parzen_summary(ll):
    """Mean and standard error of per-row log-likelihoods.

    Parameters
    ----------
    ll : array (rows,)

    Returns
    -------
    mean : float
    stderr : float
        ``std(ll, ddof=1) / sqrt(rows)`` (0 for a single row).
    """
    ll = np.asarray(ll, dtype=np.float64).ravel()
    if ll.size == 0:
        raise ValueError("parzen_summary needs at least one value")
    se = float(ll.std(ddof=1) / math.sqrt(ll.size)) if ll.size > 1 else 0.0
    return float(ll.mean()), se


def _best(sig, means):
    i = int(np.argmax(means))  # the first maximum, as cross_validate_sigma's strict '>'
    return i, float(sig[i]), bool(sig.size > 1 and i in (0, sig.size - 1))


def gpde(centres, X_valid, X_test, sigmas=None, protocol="vgsn", **kwargs):
    """The GPDE of ``X_test`` under one of the two protocols (default: sigma on ``X_valid``).

    Parameters
    ----------
    centres : array (n_centres, dims)
        Model samples (the paper: 10,000, ancestral, x = E[p(x|z)], z ~ N(0, I)).
    X_valid, X_test : arrays (rows, dims)
        ``X_valid`` is not used (may be None) with ``protocol='paper'``.
    sigmas : sequence of floats, optional
        Default ``MNIST_SIGMAS``; use ``TFD_SIGMAS`` for faces, a ``PAPER_*``
        grid with the paper's protocol.
    protocol : {'vgsn', 'paper'}
        'vgsn': sigma with the highest mean log-density of ``X_valid``, reported
        on ``X_test``. 'paper': :func:`gpde_paper` on ``X_test`` (sigma chosen on
        the reported rows themselves, NN-Python ``WalkoutResults.py``).
    **kwargs
        Passed to :func:`parzen_log_likelihood`.

    Returns
    -------
    dict
        ``protocol``, ``sigma`` (chosen), ``sigmas`` (the grid), ``sigma_at_edge``
        (True when the choice is the smallest or largest of the grid: widen the
        grid), ``test_ll`` (per-row, nats), ``test_mean``, ``test_stderr``, and
        the means per grid value that chose sigma: ``valid_ll_per_sigma``
        ('vgsn') or ``test_ll_per_sigma`` ('paper').
    """
    if protocol not in GPDE_PROTOCOLS:
        raise ValueError(f"protocol must be one of {GPDE_PROTOCOLS}; got {protocol!r}")
    if protocol == "paper":
        r = gpde_paper(centres, X_test, sigmas=sigmas, **kwargs)
        return {"protocol": "paper", "sigma": r["sigma"], "sigmas": r["sigmas"],
                "test_ll_per_sigma": r["ll_per_sigma"], "sigma_at_edge": r["sigma_at_edge"],
                "test_ll": r["ll"], "test_mean": r["mean"], "test_stderr": r["stderr"]}
    sig = _check_sigmas(MNIST_SIGMAS if sigmas is None else sigmas)
    best, means = select_parzen_sigma(centres, X_valid, sig, **kwargs)
    test_ll = parzen_log_likelihood(centres, X_test, best, **kwargs)
    mean, se = parzen_summary(test_ll)
    _, _, edge = _best(sig, means)
    return {
        "protocol": "vgsn", "sigma": best, "sigmas": sig, "valid_ll_per_sigma": means,
        "sigma_at_edge": edge, "test_ll": test_ll, "test_mean": mean, "test_stderr": se,
    }


def gpde_paper(centres, X, sigmas=None, **kwargs):
    """The paper-era GPDE: sigma chosen on the same rows ``X`` that it reports.

    What NN-Python's ``generative_models/WalkoutResults.py`` computed with
    ``LogPDFs.cross_validate_sigma(samples, X, grid, batch_size)`` (10,000 prior
    samples as centres): every grid value is evaluated on all of ``X`` (exact
    log-mean-exp, ``LogPDFs.theano_parzen``), the best mean is the score. Since
    sigma is fitted to the reported rows the score is optimistic. The paper's text
    says its table used a sigma selected on the validation set; the script that
    survives (it made Fig. 4b) chose it on the scored rows (README, "Differences
    from the paper").

    Parameters
    ----------
    centres : array (n_centres, dims)
    X : array (rows, dims)
        The rows that both choose sigma and are reported (the script's ``Xva``).
    sigmas : sequence of floats, optional
        Default ``PAPER_MNIST_SIGMAS``; ``PAPER_MNIST_VAR_SIGMAS`` for the VAR
        model, ``PAPER_TFD_SIGMAS`` for faces.
    **kwargs
        Passed to :func:`parzen_log_likelihood`.

    Returns
    -------
    dict
        ``sigma``, ``sigmas``, ``ll_per_sigma`` (mean log-density of ``X`` per
        grid value), ``sigma_at_edge``, ``ll`` (per row at ``sigma``), ``mean``
        (= ``max(ll_per_sigma)``, the script's ``cross_validate_sigma(...)[1]``)
        and ``stderr`` (``std / sqrt(rows)``, ignoring the selection).
    """
    sig = _check_sigmas(PAPER_MNIST_SIGMAS if sigmas is None else sigmas)
    ll = parzen_log_likelihood(centres, X, sig, **kwargs)
    means = ll.mean(axis=0)
    i, best, edge = _best(sig, means)
    mean, se = parzen_summary(ll[:, i])
    return {"sigma": best, "sigmas": sig, "ll_per_sigma": means, "sigma_at_edge": edge,
            "ll": ll[:, i], "mean": mean, "stderr": se}


def gpde_both(centres, X_valid, X_test, sigmas=None, paper_sigmas=None, **kwargs):
    """Both GPDE protocols at once, as flat scalars for a metrics row.

    Costs what :func:`gpde` alone costs: one distance pass over ``X_valid``
    (vgsn's grid and the paper's grid together) and one over ``X_test`` (vgsn's
    chosen sigma and the paper's grid together).

    Parameters
    ----------
    centres : array (n_centres, dims)
    X_valid, X_test : arrays (rows, dims)
    sigmas : sequence of floats, optional
        vgsn's grid (default ``MNIST_SIGMAS``).
    paper_sigmas : sequence of floats, optional
        The paper's grid (default ``PAPER_MNIST_SIGMAS``; see ``PAPER_SIGMAS``).
    **kwargs
        Passed to :func:`parzen_log_likelihood`.

    Returns
    -------
    dict of float / bool
        vgsn's protocol (sigma on validation, reported on test): ``gpde_sigma``,
        ``gpde_sigma_at_edge``, ``gpde_valid`` (best mean validation
        log-density), ``gpde_test``, ``gpde_test_stderr``.
        The paper's protocol on the test rows (sigma chosen on them):
        ``gpde_paper_sigma``, ``gpde_paper_sigma_at_edge``, ``gpde_paper_test``,
        ``gpde_paper_test_stderr``.
        The paper's protocol on the validation rows (what ``WalkoutResults.py``
        ran for its figures: ``Xva`` is mnist.pkl.gz's validation split, TFD's
        fold-'all' valid set): ``gpde_paper_valid``, ``gpde_paper_valid_sigma``.
    """
    sig = _check_sigmas(MNIST_SIGMAS if sigmas is None else sigmas)
    psig = _check_sigmas(PAPER_MNIST_SIGMAS if paper_sigmas is None else paper_sigmas)
    valid = parzen_log_likelihood(centres, X_valid, np.concatenate([sig, psig]), **kwargs)
    v_means = valid.mean(axis=0)
    i, best, edge = _best(sig, v_means[:sig.size])
    j, p_valid_sigma, _ = _best(psig, v_means[sig.size:])
    test = parzen_log_likelihood(centres, X_test, np.concatenate([[best], psig]), **kwargs)
    mean, se = parzen_summary(test[:, 0])
    k, p_sigma, p_edge = _best(psig, test[:, 1:].mean(axis=0))
    p_mean, p_se = parzen_summary(test[:, 1 + k])
    return {"gpde_sigma": best, "gpde_sigma_at_edge": edge, "gpde_valid": float(v_means[i]),
            "gpde_test": mean, "gpde_test_stderr": se,
            "gpde_paper_sigma": p_sigma, "gpde_paper_sigma_at_edge": p_edge,
            "gpde_paper_test": p_mean, "gpde_paper_test_stderr": p_se,
            "gpde_paper_valid": float(v_means[sig.size + j]),
            "gpde_paper_valid_sigma": p_valid_sigma}


def model_gpde(model, X_valid, X_test, n_samples=10000, sigmas=None, rng=None,
               protocol="vgsn", **kwargs):
    """:func:`gpde` on ``n_samples`` prior samples of ``model``.

    The centres are ``model.sample_prior(n_samples)``: x = E[p(x|z)], z ~ N(0, I),
    drawn from ``rng`` (a Generator or seed) or else the model's own generator.
    """
    extra = {} if rng is None else {"rng": _rng(rng)}
    centres = np.asarray(model.sample_prior(int(n_samples), **extra))
    return gpde(centres, X_valid, X_test, sigmas=sigmas, protocol=protocol, **kwargs)

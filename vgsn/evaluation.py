"""Evaluation: Gaussian Parzen density estimate, variational bound, importance weighting.

Three numbers describe how well a model fits held-out data (SPEC.md sections 7-8):

GPDE (Gaussian Parzen density estimate, Breuleux et al. 2011)
    The score the paper reports (MNIST 265 / 330, TFD 2060 / 2130). Draw 10,000
    samples from the model; the density is the uniform mixture of isotropic
    Gaussians N(x; sample_i, sigma^2 I); sigma is chosen on the validation set
    from a grid; the score is the mean test-set log-density in nats. It is not a
    likelihood of the model (it rewards sharp, mode-covering samples), but it is
    what the GSN, GAN and VGSN papers compared on. Computed here exactly: every
    row against every centre, log-sum-exp in float64 by default, in blocks so
    memory stays bounded whatever the sizes.

Variational bound (Eq. 2)
    ``-F(x) = E_q[log p(x|z)] - KL(q(z|x) || p*(z))`` per row, a lower bound on
    log p(x).

Importance-weighted log-likelihood (Burda et al. 2016)
    ``log (1/K) sum_k p(x|z_k) p*(z_k) / q(z_k|x)`` with z_k ~ q(z|x): a lower
    bound on log p(x) in expectation that tightens as K grows and converges to
    log p(x). Unlike the GPDE it is a real likelihood estimate; the paper had none.

Sign convention: every function here returns log-densities (higher is better),
so the bound is returned as ``-F`` and ``bound <= IWLL <= log p(x)`` on average.

Nothing here prints or writes files.
"""
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = [
    "MNIST_SIGMAS", "TFD_SIGMAS", "parzen_log_likelihood", "select_parzen_sigma",
    "parzen_summary", "gpde", "model_gpde", "variational_bound",
    "importance_weighted_ll", "parzen_gemm_flops",
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

_LOG_2PI = math.log(2.0 * math.pi)


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


def parzen_log_likelihood(centres, X, sigma, dtype=np.float64, block_elements=2 ** 23,
                          n_threads=None):
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
    dtype : numpy float type, default float64
        Precision of the distance computation (one GEMM per block:
        ``||x||^2 + ||c||^2 - 2 x.c``, on data centred on the centres' mean).
        float64 agrees with a brute-force float64 computation to ~1e-12 nats;
        it runs the paper-size GPDE (10k centres, 10k validation rows x 10
        sigmas, 10k test rows, 784 dims) in about 19 s on a 2-core machine
        (``benchmarks/bench_eval.py``). float32 is about 1.5-2x faster, but the
        cancellation in the expansion costs up to roughly
        ``1e-7 * (||x||^2 + ||c||^2) / (2 sigma^2)`` nats per row (~1e-4 on
        MNIST at sigma = 0.1): irrelevant to a score quoted to the nat, but
        not exact. Log-sum-exp sums are float64 either way.
    block_elements : int
        Elements of one (rows x centres) block; the working memory is about
        ``3 * block_elements * 8`` bytes (the default: ~200 MB) beyond a
        centred copy of ``centres``, whatever the sizes.
    n_threads : int, optional
        Threads for the element-wise part (the GEMM uses BLAS's own threads).
        Default: the CPUs this process may use.

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
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}")
    if block_elements < 1:
        raise ValueError(f"block_elements must be >= 1; got {block_elements}")
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
        Passed to :func:`parzen_log_likelihood` (``dtype``, ``block_elements``).

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


def gpde(centres, X_valid, X_test, sigmas=None, **kwargs):
    """The GPDE test: sigma chosen on ``X_valid``, mean log-density of ``X_test``.

    Parameters
    ----------
    centres : array (n_centres, dims)
        Model samples (the paper: 10,000, ancestral, x = E[p(x|z)], z ~ N(0, I)).
    X_valid, X_test : arrays (rows, dims)
    sigmas : sequence of floats, optional
        Default ``MNIST_SIGMAS``; use ``TFD_SIGMAS`` for faces.
    **kwargs
        Passed to :func:`parzen_log_likelihood`.

    Returns
    -------
    dict
        ``sigma`` (chosen), ``sigmas`` (the grid), ``valid_ll_per_sigma`` (mean
        validation log-likelihood per grid value), ``sigma_at_edge`` (True when the
        best value is the smallest or largest of the grid: widen the grid),
        ``test_ll`` (per-row, nats), ``test_mean``, ``test_stderr``.
    """
    sig = _check_sigmas(MNIST_SIGMAS if sigmas is None else sigmas)
    best, means = select_parzen_sigma(centres, X_valid, sig, **kwargs)
    test_ll = parzen_log_likelihood(centres, X_test, best, **kwargs)
    mean, se = parzen_summary(test_ll)
    i = int(np.argmax(means))
    return {
        "sigma": best, "sigmas": sig, "valid_ll_per_sigma": means,
        "sigma_at_edge": sig.size > 1 and i in (0, sig.size - 1),
        "test_ll": test_ll, "test_mean": mean, "test_stderr": se,
    }


def model_gpde(model, X_valid, X_test, n_samples=10000, sigmas=None, rng=None, **kwargs):
    """:func:`gpde` on ``n_samples`` prior samples of ``model``.

    The centres are ``model.sample_prior(n_samples)``: x = E[p(x|z)], z ~ N(0, I),
    drawn from ``rng`` (a Generator or seed) or else the model's own generator.
    """
    extra = {} if rng is None else {"rng": _rng(rng)}
    centres = np.asarray(model.sample_prior(int(n_samples), **extra))
    return gpde(centres, X_valid, X_test, sigmas=sigmas, **kwargs)


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def variational_bound(model, X, k=1, rng=None):
    """Variational lower bound on log p(x) (Eq. 2, sign flipped), per row.

    ``-F(x) = -(E_{z~q}[-log p(x|z)] + KL(q(z|x) || N(0, I)))`` with the
    expectation estimated from ``k`` posterior samples and the KL exact, via
    ``model.free_energy_terms(X, n_samples=k)`` (which batches rows itself).

    Parameters
    ----------
    model : object with ``free_energy_terms(X, n_samples, rng=None) -> (nll, kl)``
        per row (``OneStageModel``).
    X : array (rows, x_dim)
    k : int
        Posterior samples per row.
    rng : numpy Generator or seed, optional
        Noise for z; default the model's own generator.

    Returns
    -------
    bound : ndarray float64 (rows,)
        ``-F`` in nats: higher is better, <= log p(x) in expectation.
    """
    X = _as_2d("X", X)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    kwargs = {} if rng is None else {"rng": _rng(rng)}
    nll, kl = model.free_energy_terms(X, n_samples=int(k), **kwargs)
    return -(np.asarray(nll, np.float64) + np.asarray(kl, np.float64))


def importance_weighted_ll(model, X, k, batch_rows=5000, rng=None):
    """Importance-weighted estimate of log p(x) with ``k`` samples from q (Burda et al.).

    ``log (1/k) sum_j w_j``, ``log w_j = log p(x|z_j) + log N(z_j; 0, I)
    - log q(z_j|x)``, ``z_j = mean + exp(logvar / 2) * eps_j``. Its expectation
    is a lower bound on log p(x) that increases with ``k`` (``k = 1`` is the
    variational bound with a sampled KL) and converges to log p(x).

    Parameters
    ----------
    model : object with ``encode(X) -> (mean, logvar)``, ``log_px_given_z(X, Z)``
        and ``z_dim``.
    X : array (rows, x_dim)
    k : int
        Samples per row (Burda et al. used 5000).
    batch_rows : int
        Bound on ``rows * samples`` evaluated in one model call; larger ``k``
        is split over several calls.
    rng : numpy Generator or seed, optional

    Returns
    -------
    ll : ndarray float64 (rows,)
        Per-row estimate in nats.
    """
    X = _as_2d("X", X)
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    batch_rows = max(1, int(batch_rows))
    rng = _rng(rng)
    n = X.shape[0]
    out = np.empty(n, dtype=np.float64)
    rows_per = max(1, batch_rows // k)          # data rows per block
    samples_per = min(k, batch_rows)            # samples per model call
    for r0 in range(0, n, rows_per):
        Xb = X[r0:r0 + rows_per]
        r = Xb.shape[0]
        mean, logvar = model.encode(Xb)
        mean = np.asarray(mean)
        logvar = np.asarray(logvar)
        z_dim = mean.shape[1]
        mu64 = mean.astype(np.float64)
        lv64 = logvar.astype(np.float64)
        sd64 = np.exp(0.5 * lv64)
        log_w = np.empty((r, k), dtype=np.float64)
        for s0 in range(0, k, samples_per):
            s = min(samples_per, k - s0)
            eps = rng.standard_normal((r, s, z_dim))
            Z = (mu64[:, None, :] + sd64[:, None, :] * eps).astype(mean.dtype)
            Zflat = Z.reshape(r * s, z_dim)
            Xrep = np.repeat(Xb, s, axis=0)
            log_px = np.asarray(model.log_px_given_z(Xrep, Zflat), np.float64).reshape(r, s)
            # Densities of the z actually fed to the model (rounded to its dtype).
            z64 = Z.astype(np.float64)
            log_prior = -0.5 * (np.sum(z64 ** 2, axis=2) + z_dim * _LOG_2PI)
            u = (z64 - mu64[:, None, :]) / sd64[:, None, :]
            log_q = -0.5 * (np.sum(u ** 2, axis=2) + np.sum(lv64, axis=1)[:, None]
                            + z_dim * _LOG_2PI)
            log_w[:, s0:s0 + s] = log_px + log_prior - log_q
        m = log_w.max(axis=1)
        out[r0:r0 + r] = m + np.log(np.mean(np.exp(log_w - m[:, None]), axis=1))
    return out

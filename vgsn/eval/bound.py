"""Evaluation: Gaussian Parzen density estimate, variational bound, importance weighting.

Three numbers describe how well a model fits held-out data (SPEC.md sections 7, 8, 10):

GPDE (Gaussian Parzen density estimate, Breuleux et al. 2011)
    The score the paper reports (MNIST 265 / 220 / 330, TFD 2060 / 2130): see
    :mod:`vgsn.eval.gpde` (both protocols, the sigma grids) and
    :mod:`vgsn.eval.parzen` (the estimator).

Variational bound (Eq. 2)
    ``-F(x) = E_q[log p(x|z)] - KL(q(z|x) || p*(z))`` per row.

Importance-weighted estimate (Burda et al. 2016)
    ``log (1/K) sum_k p(x|z_k) p*(z_k) / q(z_k|x)`` with z_k ~ q(z|x). Its
    expectation grows with K. What it estimates depends on the data and the
    pixel model (:func:`iwll_kind` gives the label a report should print):

    - Bernoulli model, binary x: a lower bound on log p(x) that converges to
      log p(x), a log-probability on {0, 1}^D. On DYNAMICALLY BINARISED test
      digits (:func:`binarize`, :func:`binarized_iwll`; x_b ~ Bernoulli(x), drawn
      afresh from a seeded generator) with K = 5000 it is the literature's
      binarised-MNIST number (VAEs of this size: about -85 to -90 nats).
    - Bernoulli model, grey x in [0, 1] (what vgsn trains on, as the 2015 code
      did): the Bernoulli terms ``x log p + (1 - x) log(1 - p)`` are not a
      normalised density on [0, 1]^D, so this is NOT a log-likelihood. It equals
      ``E_b[log p(b|z)]`` over binarisations b ~ Bernoulli(x), and by Jensen's
      inequality (log-mean-exp is convex) its expectation is, for every K, a
      LOWER BOUND ON THE EXPECTED LOG-LIKELIHOOD ``E_b[log p(b)]`` OF A RANDOM
      BINARISATION; as K grows it converges to
      ``log int exp(E_b[log p(b|z)]) p*(z) dz``, which stays below ``E_b[log p(b)]``.
    - Gaussian model: a log-DENSITY on R^D of the grey pixels (it may be
      positive). It is not comparable with binarised-MNIST numbers (those are
      log-probabilities of binary vectors, always <= 0), nor with other
      continuous densities without fixing the pixel scale (rescaling pixels by c
      shifts it by D log c) and the quantisation of 8-bit pixels (a fair
      continuous comparison dequantises, x + u / 256, and reports bits per dim).

Sign convention: every function here returns log-densities (higher is better),
so the bound is returned as ``-F`` and ``bound <= IWLL`` on average.

Nothing here prints or writes files.
"""
import math

import numpy as np

_LOG_2PI = math.log(2.0 * math.pi)

__all__ = ["fold_summary", "variational_bound", "importance_weighted_ll", "binarize",
           "binarized_iwll", "iwll_kind"]


def _as_2d(name, A):
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dims); got shape {A.shape}")
    return A


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def fold_summary(values):
    """Mean over TFD folds, the GAN paper's comparable TFD number.

    Goodfellow et al. (2014) chose sigma on each fold's validation set, scored
    that fold's test set, and reported the mean over the folds with the
    standard error across folds.

    Parameters
    ----------
    values : sequence of float
        One score per fold (e.g. ``gpde_test`` of runs on ``fold=0..4``).

    Returns
    -------
    dict
        ``mean``, ``std`` (across folds, ddof 1), ``stderr`` (``std / sqrt(n)``), ``n``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"fold_summary needs finite values, one per fold; got {values!r}")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "stderr": std / math.sqrt(v.size),
            "n": int(v.size)}


def variational_bound(model, X, k=1, rng=None):
    """Variational bound (Eq. 2, sign flipped), per row.

    ``-F(x) = -(E_{z~q}[-log p(x|z)] + KL(q(z|x) || N(0, I)))`` with the
    expectation estimated from ``k`` posterior samples and the KL exact, via
    ``model.free_energy_terms(X, n_samples=k)`` (which batches rows itself).
    A lower bound on log p(x) for binary rows or a Gaussian model (a density
    on R^D); for grey rows under the Bernoulli model, a lower bound on the
    expected log-likelihood of a random binarisation (module docstring).

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
        ``-F`` in nats: higher is better.
    """
    X = _as_2d("X", X)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    kwargs = {} if rng is None else {"rng": _rng(rng)}
    nll, kl = model.free_energy_terms(X, n_samples=int(k), **kwargs)
    return -(np.asarray(nll, np.float64) + np.asarray(kl, np.float64))


def binarize(X, rng=None):
    """A random binarisation ``x_b = (u < x)``, u ~ U[0, 1) from ``rng``, per pixel.

    Dynamic binarisation of grey digits (x_b ~ Bernoulli(x)), as the
    binarised-MNIST literature evaluates; rows already in {0, 1} come back
    unchanged (u < 1 always, u < 0 never), though the draws are still consumed.

    Parameters
    ----------
    X : array (rows, dims), values in [0, 1]
    rng : numpy Generator or seed, optional

    Returns
    -------
    ndarray (rows, dims) of X's float dtype (float32 for non-float input), 0 or 1
    """
    X = _as_2d("X", X)
    if X.size and (np.nanmin(X) < 0 or np.nanmax(X) > 1 or np.isnan(X).any()):
        raise ValueError(f"binarize needs values in [0, 1]; got range "
                         f"[{np.nanmin(X)}, {np.nanmax(X)}]")
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
    return (_rng(rng).random(X.shape) < X).astype(dtype)


def iwll_kind(x_type, binarized=False):
    """What :func:`importance_weighted_ll` estimates, in words, for a report.

    Parameters
    ----------
    x_type : {'bernoulli', 'gaussian'}
    binarized : bool
        The rows were binarised (:func:`binarize`) before evaluation.
    """
    if x_type == "gaussian":
        if binarized:
            raise ValueError("a binarised IWLL is defined for x_type='bernoulli' only; "
                             "got x_type='gaussian'")
        return ("log-density on R^D of the grey pixels (Gaussian model; not comparable "
                "with binarised-MNIST log-likelihoods)")
    if x_type != "bernoulli":
        raise ValueError(f"x_type must be 'bernoulli' or 'gaussian'; got {x_type!r}")
    if binarized:
        return ("log-likelihood of dynamically binarised rows (comparable with the "
                "binarised-MNIST literature at k = 5000)")
    return ("lower bound on the expected log-likelihood of a random binarisation of the "
            "grey rows (not a log-likelihood of the grey pixels)")


def importance_weighted_ll(model, X, k, batch_rows=5000, rng=None, binarize=False):
    """Importance-weighted estimate with ``k`` samples from q (Burda et al.), per row.

    ``log (1/k) sum_j w_j``, ``log w_j = log p(x|z_j) + log N(z_j; 0, I)
    - log q(z_j|x)``, ``z_j = mean + exp(logvar / 2) * eps_j``. Its expectation
    increases with ``k`` (``k = 1`` is the variational bound with a sampled KL).
    What it estimates (see the module docstring and :func:`iwll_kind`):

    - Bernoulli model, binary rows (or ``binarize=True``): a lower bound on
      log p(x) that converges to log p(x) as k grows.
    - Bernoulli model, grey rows: not a log-likelihood; a lower bound, for every
      k, on the expected log-likelihood ``E_b[log p(b)]`` of a random
      binarisation b ~ Bernoulli(x).
    - Gaussian model: a log-density on R^D (converges to log p(x) as k grows),
      not comparable with binarised-MNIST numbers.

    Parameters
    ----------
    model : object with ``encode(X) -> (mean, logvar)``, ``log_px_given_z(X, Z)``
        and ``z_dim``; with ``binarize``, an ``x_type`` other than 'gaussian'.
    X : array (rows, x_dim)
    k : int
        Samples per row (Burda et al. used 5000).
    batch_rows : int
        Bound on ``rows * samples`` evaluated in one model call; larger ``k``
        is split over several calls.
    rng : numpy Generator or seed, optional
    binarize : bool
        First replace ``X`` by :func:`binarize` ``(X, rng)`` (drawn from ``rng``
        before any z noise), so the estimate is the log-likelihood of dynamically
        binarised rows. Bernoulli models only.

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
    if binarize:
        if getattr(model, "x_type", "bernoulli") == "gaussian":
            raise ValueError("binarize=True needs a Bernoulli model; got x_type='gaussian' "
                             "(a Gaussian density at binary points means nothing)")
        X = _binarize(X, rng)
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


_binarize = binarize  # importance_weighted_ll's argument of the same name shadows it


def binarized_iwll(model, X, k=5000, rng=None, batch_rows=5000):
    """The literature's binarised-MNIST number: :func:`importance_weighted_ll` with
    ``k`` (5000) samples on :func:`binarize` ``(X, rng)`` (per row, nats)."""
    return importance_weighted_ll(model, X, k, batch_rows=batch_rows, rng=rng, binarize=True)

"""Tests of vgsn.eval.bound against independent computations.

GPDE: brute-force scipy logsumexp over explicit differences; the Gaussian limit;
both protocols (vgsn's held-out sigma, the paper-era same-rows sigma).
Importance weighting: log p(x) by quadrature over a 1- or 2-dimensional z, on
binary, grey and dynamically binarised rows.
"""
import math
import tracemalloc

import numpy as np
import pytest
from scipy.special import expit, logsumexp

from vgsn.eval import bound as ev
from vgsn.eval import gpde as gp
from vgsn.eval import parzen as pz


def brute_parzen(centres, X, sigmas):
    """(rows, n_sigmas) log-densities from explicit differences, all float64."""
    C = np.asarray(centres, np.float64)
    X = np.asarray(X, np.float64)
    d2 = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    sig = np.asarray(sigmas, np.float64)
    dims = X.shape[1]
    return (logsumexp(-d2[:, :, None] / (2 * sig ** 2), axis=1) - math.log(C.shape[0])
            - 0.5 * dims * np.log(2 * math.pi * sig ** 2))


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    return rng.random((300, 20)), rng.random((77, 20))


def test_parzen_matches_brute_force(small):
    C, X = small
    sigmas = [0.03, 0.1, 0.2, 0.5, 1.0, 3.0]
    ref = brute_parzen(C, X, sigmas)
    got = pz.parzen_log_likelihood(C, X, sigmas)
    assert got.shape == (77, 6)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    # A scalar sigma gives one value per row.
    one = pz.parzen_log_likelihood(C, X, 0.2)
    assert one.shape == (77,)
    np.testing.assert_allclose(one, ref[:, 2], rtol=0, atol=1e-6)


def test_parzen_float32_inputs_and_float32_path(small):
    C, X = small
    C32, X32 = C.astype(np.float32), X.astype(np.float32)
    ref = brute_parzen(C32, X32, [0.1, 0.5])
    # float32 inputs are evaluated exactly on the default float64 path ...
    np.testing.assert_allclose(pz.parzen_log_likelihood(C32, X32, [0.1, 0.5]), ref, atol=1e-6)
    # ... and approximately (float32 GEMM) on the fast path.
    fast = pz.parzen_log_likelihood(C32, X32, [0.1, 0.5], dtype=np.float32)
    np.testing.assert_allclose(fast, ref, atol=2e-3)


@pytest.mark.parametrize("block_elements,n_threads", [(1, 1), (7, 2), (450, 2), (5000, 1)])
def test_batching_does_not_change_the_answer(small, block_elements, n_threads):
    C, X = small
    if block_elements < 10:
        X = X[:12]  # one centre (or a few) per block: keep the loop count small
    sigmas = [0.05, 0.3, 1.0]
    full = pz.parzen_log_likelihood(C, X, sigmas)
    got = pz.parzen_log_likelihood(C, X, sigmas, block_elements=block_elements,
                                   n_threads=n_threads)
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-9)


def test_far_rows_and_exact_hits():
    """Rows far from every centre (huge exponents) and rows equal to a centre."""
    rng = np.random.default_rng(3)
    C = rng.standard_normal((50, 8))
    X = np.vstack([C[:5], C[:5] + 40.0, rng.standard_normal((5, 8))])
    sigmas = [0.01, 0.1, 1.0]
    got = pz.parzen_log_likelihood(C, X, sigmas)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, brute_parzen(C, X, sigmas), rtol=1e-12, atol=1e-6)


def test_memory_stays_bounded():
    """Blocks bound the working memory: far below the full distance matrix."""
    rng = np.random.default_rng(1)
    C = rng.random((3000, 50))
    X = rng.random((2000, 50))
    full_matrix = 3000 * 2000 * 8  # 48 MB
    tracemalloc.start()
    try:
        pz.parzen_log_likelihood(C, X, gp.MNIST_SIGMAS, block_elements=2 ** 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    inputs = C.nbytes  # the centred copy of the centres
    assert peak < inputs + 0.15 * full_matrix, peak  # measured: ~0.07


def test_gaussian_limit():
    """N(0, I) data, many N(0, I) centres: the estimate nears the true log-density."""
    rng = np.random.default_rng(2)
    d = 2
    C = rng.standard_normal((20000, d))
    X_valid = rng.standard_normal((1000, d))
    X_test = rng.standard_normal((2000, d))
    res = gp.gpde(C, X_valid, X_test, sigmas=np.logspace(-1.5, 0, 7))
    true_ll = -0.5 * (X_test ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi)
    # Same test rows on both sides: only the estimator's bias is left.
    assert abs(res["test_mean"] - true_ll.mean()) < 0.02
    assert 0.05 < res["sigma"] < 0.5 and not res["sigma_at_edge"]
    # Expected value of log N(x; 0, I) is -d/2 (log 2 pi + 1).
    assert abs(res["test_mean"] + 0.5 * d * (math.log(2 * math.pi) + 1)) < 5 * res["test_stderr"] + 0.02


def test_sigma_selection_matches_brute_force():
    rng = np.random.default_rng(4)
    # Clustered data so the optimum is interior and well separated.
    means = rng.random((6, 10))
    C = means[rng.integers(0, 6, 400)] + 0.15 * rng.standard_normal((400, 10))
    X_valid = means[rng.integers(0, 6, 150)] + 0.15 * rng.standard_normal((150, 10))
    grid = gp.MNIST_SIGMAS
    ref_means = brute_parzen(C, X_valid, grid).mean(0)
    best, means_got = gp.select_parzen_sigma(C, X_valid, grid)
    np.testing.assert_allclose(means_got, ref_means, atol=1e-8)
    assert best == grid[int(np.argmax(ref_means))]
    assert 0 < int(np.argmax(ref_means)) < len(grid) - 1


def test_gpde_summary_and_edge_flag(small):
    C, X = small
    res = gp.gpde(C, X[:40], X[40:], sigmas=[0.001, 0.002])  # far too narrow: edge
    assert res["sigma"] == 0.002 and res["sigma_at_edge"]
    ref = brute_parzen(C, X[40:], [0.002])[:, 0]
    np.testing.assert_allclose(res["test_ll"], ref, atol=1e-6)
    assert res["test_mean"] == pytest.approx(ref.mean(), abs=1e-6)
    assert res["test_stderr"] == pytest.approx(ref.std(ddof=1) / math.sqrt(ref.size), rel=1e-9)
    assert gp.parzen_summary([1.0, 3.0]) == (2.0, 1.0)


def test_bad_inputs_raise(small):
    C, X = small
    with pytest.raises(ValueError, match="same number of dims"):
        pz.parzen_log_likelihood(C, X[:, :5], 0.1)
    with pytest.raises(ValueError, match="positive"):
        pz.parzen_log_likelihood(C, X, [0.1, 0.0])
    with pytest.raises(ValueError, match="float32 or float64"):
        pz.parzen_log_likelihood(C, X, 0.1, dtype=np.int32)
    with pytest.raises(ValueError, match="2-D"):
        pz.parzen_log_likelihood(C[0], X, 0.1)


def logpdfs_parzen(centres, X, sigma):
    """Per-row log-density written as LogPDFs.theano_parzen defines it (numpy, float64):
    log-mean-exp of -0.5 ||(x - mu) / sigma||^2 minus dims * log(sigma sqrt(2 pi))."""
    a = (np.asarray(X, np.float64)[:, None, :] - np.asarray(centres, np.float64)[None]) / sigma
    e = -0.5 * (a ** 2).sum(2)
    m = e.max(1)
    return m + np.log(np.exp(e - m[:, None]).mean(1)) - X.shape[1] * np.log(sigma * np.sqrt(2 * np.pi))


@pytest.fixture(scope="module")
def two_spreads():
    """Centres and validation rows tight around 5 means, test rows looser: the
    two protocols choose different sigmas."""
    rng = np.random.default_rng(8)
    means = rng.random((5, 12))
    C = means[rng.integers(0, 5, 500)] + 0.08 * rng.standard_normal((500, 12))
    X_valid = means[rng.integers(0, 5, 120)] + 0.08 * rng.standard_normal((120, 12))
    X_test = means[rng.integers(0, 5, 90)] + 0.2 * rng.standard_normal((90, 12))
    return C, X_valid, X_test


def test_both_protocols_match_brute_force(two_spreads):
    C, X_valid, X_test = two_spreads
    grid = np.array([0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3])
    pgrid = np.array([0.05, 0.1, 0.15, 0.2, 0.25])
    # Brute force of each definition, sigma by sigma.
    v_means = [logpdfs_parzen(C, X_valid, s).mean() for s in grid]
    s_vgsn = grid[int(np.argmax(v_means))]
    test_at = logpdfs_parzen(C, X_test, s_vgsn)
    p_means = [logpdfs_parzen(C, X_test, s).mean() for s in pgrid]
    s_paper = pgrid[int(np.argmax(p_means))]
    pv_means = [logpdfs_parzen(C, X_valid, s).mean() for s in pgrid]
    assert s_vgsn != s_paper  # the case tells the protocols apart
    assert 0 < int(np.argmax(v_means)) < grid.size - 1

    vg = gp.gpde(C, X_valid, X_test, sigmas=grid)
    assert vg["protocol"] == "vgsn" and vg["sigma"] == s_vgsn
    assert vg["test_mean"] == pytest.approx(test_at.mean(), abs=1e-8)
    pa = gp.gpde_paper(C, X_test, sigmas=pgrid)
    assert pa["sigma"] == s_paper and pa["mean"] == pytest.approx(max(p_means), abs=1e-8)
    np.testing.assert_allclose(pa["ll_per_sigma"], p_means, atol=1e-8)
    best = logpdfs_parzen(C, X_test, s_paper)
    assert pa["stderr"] == pytest.approx(best.std(ddof=1) / math.sqrt(best.size), rel=1e-8)
    same = gp.gpde(C, None, X_test, sigmas=pgrid, protocol="paper")  # X_valid unused
    assert same["protocol"] == "paper" and same["sigma"] == s_paper
    assert same["test_mean"] == pytest.approx(max(p_means), abs=1e-8)

    both = gp.gpde_both(C, X_valid, X_test, sigmas=grid, paper_sigmas=pgrid)
    assert both["gpde_sigma"] == s_vgsn and both["gpde_paper_sigma"] == s_paper
    assert both["gpde_valid"] == pytest.approx(max(v_means), abs=1e-8)
    assert both["gpde_test"] == pytest.approx(test_at.mean(), abs=1e-8)
    assert both["gpde_test_stderr"] == pytest.approx(vg["test_stderr"], rel=1e-9)
    assert both["gpde_paper_test"] == pytest.approx(max(p_means), abs=1e-8)
    assert both["gpde_paper_test_stderr"] == pytest.approx(pa["stderr"], rel=1e-9)
    assert both["gpde_paper_valid"] == pytest.approx(max(pv_means), abs=1e-8)
    assert both["gpde_paper_valid_sigma"] == pgrid[int(np.argmax(pv_means))]
    assert both["gpde_sigma_at_edge"] is False and both["gpde_paper_sigma_at_edge"] is False


def test_same_rows_protocol_is_optimistic(two_spreads):
    """On one grid the paper's number is the test maximum, never below vgsn's."""
    C, X_valid, X_test = two_spreads
    grid = gp.PAPER_MNIST_SIGMAS
    both = gp.gpde_both(C, X_valid, X_test, sigmas=grid, paper_sigmas=grid)
    assert both["gpde_paper_test"] >= both["gpde_test"]
    assert both["gpde_paper_test"] == pytest.approx(
        max(logpdfs_parzen(C, X_test, s).mean() for s in grid), abs=1e-8)
    with pytest.raises(ValueError, match="protocol"):
        gp.gpde(C, X_valid, X_test, protocol="best")


def test_fold_summary():
    v = [2010.0, 2071.5, 2043.0, 2102.25, 1998.0]
    got = ev.fold_summary(v)
    assert got["mean"] == pytest.approx(sum(v) / 5)
    sd = math.sqrt(sum((x - sum(v) / 5) ** 2 for x in v) / 4)
    assert got["std"] == pytest.approx(sd) and got["stderr"] == pytest.approx(sd / math.sqrt(5))
    assert got["n"] == 5
    with pytest.raises(ValueError, match="one per fold"):
        ev.fold_summary([])


def test_gemm_flops_count():
    assert pz.parzen_gemm_flops(10000, 10000, 784) == pytest.approx(1.568e11)


# ---------------------------------------------------------------------------
# Importance weighting and the bound, on a model whose log p(x) is known.

class TinyBernoulliModel:
    """p(x|z) = Bernoulli(sigmoid(z W + b)) over 5 binary pixels, z ~ N(0, I_2),
    and a Gaussian q(z|x) centred on the exact posterior mean (by quadrature, for
    each of the 32 possible x) with a fixed standard deviation of 1.1: close
    enough for importance weighting to converge fast, far enough (the true
    posterior is narrower and not Gaussian) for the bound to be visibly loose.
    Implements the OneStageModel numpy API used by vgsn.eval.bound, in float64
    numpy, so nothing here depends on models.py."""

    def __init__(self, seed=0, q_sd=1.1, z_dim=2):
        rng = np.random.default_rng(seed)
        self.x_dim, self.z_dim, self.x_type = 5, int(z_dim), "bernoulli"
        self.W = 1.5 * rng.standard_normal((self.z_dim, self.x_dim))
        self.b = 0.5 * rng.standard_normal(self.x_dim)
        self.rng = np.random.default_rng(seed + 1)
        self.q_logvar = 2 * math.log(q_sd)
        patterns = ((np.arange(32)[:, None] >> np.arange(5)) & 1).astype(np.float64)
        Z = grid_points(self.z_dim, 7.0, 141 if self.z_dim == 2 else 2001)
        log_joint = np.stack([self.log_px_given_z(np.repeat(x[None], len(Z), 0), Z)
                              for x in patterns]) - 0.5 * (Z ** 2).sum(1)
        post = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
        self.post_mean = post @ Z  # (32, z_dim)

    def encode(self, X):
        index = (np.asarray(X) @ (2 ** np.arange(self.x_dim))).round().astype(int)
        mean = self.post_mean[index]
        return mean, np.full_like(mean, self.q_logvar)

    def decode(self, Z):
        return expit(np.asarray(Z, np.float64) @ self.W + self.b)

    def log_px_given_z(self, X, Z):
        logits = np.asarray(Z, np.float64) @ self.W + self.b
        X = np.asarray(X, np.float64)
        return (X * -np.logaddexp(0, -logits) + (1 - X) * -np.logaddexp(0, logits)).sum(1)

    def free_energy_terms(self, X, n_samples=1, rng=None):
        rng = rng or self.rng
        mean, logvar = self.encode(X)
        nll = np.zeros(len(X))
        for _ in range(n_samples):
            Z = mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape)
            nll -= self.log_px_given_z(X, Z)
        kl = 0.5 * (np.exp(logvar) + mean ** 2 - 1 - logvar).sum(1)
        return nll / n_samples, kl


def grid_points(z_dim, half_width, n):
    axis = np.linspace(-half_width, half_width, n)
    return np.stack(np.meshgrid(*([axis] * z_dim), indexing="ij"), -1).reshape(-1, z_dim)


def exact_log_px(log_px_given_z, X, z_dim, half_width=7.0, n=561):
    """log p(x) = log integral p(x|z) N(z; 0, I) dz by a Riemann sum on a grid."""
    step = 2 * half_width / (n - 1)
    Z = grid_points(z_dim, half_width, n)
    log_prior = -0.5 * (Z ** 2).sum(1) - 0.5 * z_dim * math.log(2 * math.pi)
    unique, inverse = np.unique(np.asarray(X), axis=0, return_inverse=True)
    out = []
    for x in unique:
        lp = log_px_given_z(np.repeat(x[None], len(Z), 0), Z)
        out.append(logsumexp(lp + log_prior) + z_dim * math.log(step))
    return np.array(out)[inverse.ravel()]


@pytest.fixture(scope="module")
def tiny():
    model = TinyBernoulliModel()
    rng = np.random.default_rng(5)
    # Data from the model itself.
    Z = rng.standard_normal((200, model.z_dim))
    X = (rng.random((200, model.x_dim)) < model.decode(Z)).astype(np.float64)
    return model, X


def test_iwll_converges_to_quadrature(tiny):
    model, X = tiny
    X = X[:8]
    exact = exact_log_px(model.log_px_given_z, X, model.z_dim)
    # The quadrature itself is converged: a coarser grid agrees.
    coarse = exact_log_px(model.log_px_given_z, X, model.z_dim, n=281)
    np.testing.assert_allclose(exact, coarse, atol=1e-8)
    iw = ev.importance_weighted_ll(model, X, k=200000, batch_rows=500000, rng=0)
    np.testing.assert_allclose(iw, exact, atol=0.01)
    bound = ev.variational_bound(model, X, k=2000, rng=0)
    # q is wider than the (non-Gaussian) posterior, so the bound is visibly loose.
    assert np.all(bound < exact - 0.1)


def test_iwll_grows_with_k_and_beats_the_bound(tiny):
    model, X = tiny
    X = np.tile(X, (5, 1))  # 1000 rows: the means below are steady to ~0.05
    means = [ev.importance_weighted_ll(model, X, k=k, rng=1).mean() for k in (1, 5, 50, 500)]
    assert np.all(np.diff(means) > 0), means
    exact = exact_log_px(model.log_px_given_z, X[:200], model.z_dim, n=281).mean()
    assert means[-1] <= exact + 0.01
    assert exact - means[-1] < 0.1 * (exact - means[0])
    bound = ev.variational_bound(model, X, k=10, rng=1).mean()
    assert bound < means[1] - 0.1
    # k = 1 estimates the same quantity as the bound (sampled vs exact KL).
    assert abs(means[0] - bound) < 0.15


def test_iwll_batching_is_invisible(tiny):
    model, X = tiny
    X = X[:6]
    a = ev.importance_weighted_ll(model, X, k=40, batch_rows=10 ** 6, rng=7)
    b = ev.importance_weighted_ll(model, X, k=40, batch_rows=40, rng=7)
    np.testing.assert_allclose(a, b, rtol=1e-12)  # one row per call, same draws
    c = ev.importance_weighted_ll(model, X, k=40, batch_rows=7, rng=7)  # k split too
    assert c.shape == (6,) and np.all(np.isfinite(c))
    np.testing.assert_allclose(c.mean(), a.mean(), atol=0.5)
    with pytest.raises(ValueError):
        ev.importance_weighted_ll(model, X, k=0)


def test_one_stage_model_against_quadrature():
    """The real OneStageModel (z of dimension 1): IWLL -> exact log p(x) > bound."""
    from vgsn.model.vae import OneStageModel

    model = OneStageModel(x_dim=6, z_dim=1, q_hidden=(8,), p_hidden=(8,),
                          x_type="bernoulli", seed=3)
    # Strengthen p's dependence on z so that log p(x) and the bound differ clearly.
    state = model.get_state()
    model.set_state({k: v * 3.0 if k.startswith("p") and v.ndim == 2 else v
                     for k, v in state.items()})
    rng = np.random.default_rng(0)
    X = (rng.random((5, 6)) < model.sample_prior(5, rng=rng)).astype(np.float32)

    def log_px_from_decode(Xr, Z):  # independent of the model's own likelihood
        xh = np.clip(model.decode(Z.astype(np.float32)).astype(np.float64), 1e-12, 1 - 1e-12)
        return (Xr * np.log(xh) + (1 - Xr) * np.log1p(-xh)).sum(1)

    exact = exact_log_px(log_px_from_decode, X, 1, half_width=8.0, n=4001)
    # The model's compiled likelihood agrees with the one computed from decode.
    Z = rng.standard_normal((5, 1)).astype(np.float32)
    np.testing.assert_allclose(model.log_px_given_z(X, Z), log_px_from_decode(X, Z), atol=1e-4)
    iw = ev.importance_weighted_ll(model, X, k=100000, batch_rows=50000, rng=0)
    np.testing.assert_allclose(iw, exact, atol=0.02)  # sampling error ~0.005
    bound = ev.variational_bound(model, X, k=500, rng=0)
    assert bound.mean() < exact.mean() - 0.3  # q is the untrained encoder: loose
    assert np.all(bound < iw + 0.01)


# ---------------------------------------------------------------------------
# Dynamically binarised rows, and what the IWLL of grey rows is.

class RecordingModel(TinyBernoulliModel):
    """The tiny model, keeping every X it is shown."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = []

    def encode(self, X):
        self.seen.append(np.array(X))
        return super().encode(X)

    def log_px_given_z(self, X, Z):
        if hasattr(self, "seen"):
            self.seen.append(np.array(X))
        return super().log_px_given_z(X, Z)


PATTERNS = ((np.arange(32)[:, None] >> np.arange(5)) & 1).astype(np.float64)


@pytest.fixture(scope="module")
def grey():
    """A 1-d z tiny model and 6 grey rows in (0, 1)."""
    model = RecordingModel(seed=2, z_dim=1)
    X = np.random.default_rng(9).uniform(0.05, 0.95, (6, 5))
    return model, X


def test_binarize_is_bernoulli_of_the_pixels():
    X = np.random.default_rng(0).random((4000, 3)) * [0.1, 0.5, 0.9]
    B = ev.binarize(X, rng=3)
    assert set(np.unique(B)) == {0.0, 1.0} and B.dtype == X.dtype
    np.testing.assert_array_equal(B, np.random.default_rng(3).random(X.shape) < X)
    # Marginals: P(x_b = 1) = x (4000 rows; 5 standard errors).
    assert abs((B - X).mean(0)).max() < 5 * 0.5 / math.sqrt(4000)
    binary = (X > 0.3).astype(np.float32)
    np.testing.assert_array_equal(ev.binarize(binary, rng=1), binary)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.binarize(X + 1.0)


def test_binarized_iwll_sees_only_binary_rows(grey):
    model, X = grey
    model.seen.clear()
    got = ev.binarized_iwll(model, X, k=50, rng=4)
    assert len(model.seen) >= 2
    for A in model.seen:
        assert np.isin(A, (0.0, 1.0)).all()
    # The rows it scored are the seeded binarisation, drawn first from rng.
    Xb = (np.random.default_rng(4).random(X.shape) < X).astype(np.float64)
    g = np.random.default_rng(4)
    g.random(X.shape)
    np.testing.assert_allclose(got, ev.importance_weighted_ll(model, Xb, k=50, rng=g), rtol=1e-12)


def test_binarized_equals_plain_on_binary_rows(tiny):
    model, X = tiny
    X = X[:10]
    g = np.random.default_rng(6)
    g.random(X.shape)  # the draws binarize consumes
    plain = ev.importance_weighted_ll(model, X, k=30, rng=g)
    np.testing.assert_allclose(ev.importance_weighted_ll(model, X, k=30, rng=6, binarize=True),
                               plain, rtol=1e-12)


def test_binarized_iwll_converges_to_log_p_of_the_binarisation(grey):
    model, X = grey
    Xb = (np.random.default_rng(12).random(X.shape) < X).astype(np.float64)
    exact = exact_log_px(model.log_px_given_z, Xb, 1, half_width=8.0, n=4001)
    got = ev.binarized_iwll(model, X, k=100000, rng=12, batch_rows=200000)
    np.testing.assert_allclose(got, exact, atol=0.01)


def test_grey_iwll_bounds_the_expected_binarised_log_likelihood(grey):
    """Grey rows: the IWLL converges to log int exp(E_b log p(b|z)) p(z) dz, which is
    below E_b[log p(b)] (Jensen), and every k stays below it too."""
    model, X = grey
    log_pb = exact_log_px(model.log_px_given_z, PATTERNS, 1, half_width=8.0, n=4001)
    # P(b | x) = prod x^b (1 - x)^(1 - b), for each row and each of the 32 patterns.
    P = np.exp(np.log(X) @ PATTERNS.T + np.log1p(-X) @ (1 - PATTERNS).T)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
    expected = P @ log_pb                                          # E_b log p(b), per row
    limit = exact_log_px(model.log_px_given_z, X, 1, half_width=8.0, n=4001)
    assert np.all(limit < expected - 1e-3), (limit, expected)
    iw = ev.importance_weighted_ll(model, X, k=100000, rng=13, batch_rows=200000)
    np.testing.assert_allclose(iw, limit, atol=0.01)
    for k in (1, 10, 1000):
        mean_k = np.mean([ev.importance_weighted_ll(model, X, k=k, rng=r) for r in range(20)], 0)
        assert np.all(mean_k < expected), k


def test_iwll_kind_and_gaussian_refusal():
    assert "lower bound on the expected log-likelihood" in ev.iwll_kind("bernoulli")
    assert "binarised" in ev.iwll_kind("bernoulli", binarized=True)
    assert "R^D" in ev.iwll_kind("gaussian")
    with pytest.raises(ValueError, match="bernoulli"):
        ev.iwll_kind("gaussian", binarized=True)

    class GaussianStub:
        x_type, z_dim = "gaussian", 1
    with pytest.raises(ValueError, match="Bernoulli model"):
        ev.importance_weighted_ll(GaussianStub(), np.zeros((2, 3)), k=2, binarize=True)

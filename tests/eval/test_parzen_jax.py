"""The jax engine of the GPDE (vgsn.eval.parzen_jax) against the numpy float64 path and a
brute-force float64 formula; 'auto' and what a run's evaluation row records; one
compile per block shape. Skipped where jax is not installed (Python 3.11 / Aesara).

Tolerance. The jax engine computes the distances in float32: ``h = ||c||^2 - 2 x.c``
(data centred on the centres' mean) carries rounding errors of the order of
``u * (||x||^2 + ||c||^2)`` times a growth factor of the GEMM's sum over dims terms
(float32 unit roundoff u = 6e-8; random-sign accumulation grows like sqrt(dims):
28 u at 784 dims), and the log-density is ``h / (2 sigma^2)`` times that. So a row
may differ from the exact value by up to about
``2e-6 * (||x||^2 + max ||c||^2) / (2 sigma^2)`` nats (measured on real MNIST:
at most 4.7e-7 of the same expression, 4.6e-3 nats at sigma = 0.1), plus 1e-5 for
the float32 sums of up to a block of terms each <= 1 (worst case
``(128 + block / 128) u`` relative). A wrong mask, offset or rescaling shows up
as errors of nats, thousands of times larger.
"""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from scipy.special import logsumexp  # noqa: E402

from vgsn.eval import gpde as gp
from vgsn.eval import parzen as pz
from vgsn.eval import parzen_jax as pj  # noqa: E402

from _paths import MNIST_DIR  # noqa: E402


def brute(centres, X, sigmas):
    """(rows, n_sigmas) from explicit differences, all float64."""
    C, X = np.asarray(centres, np.float64), np.asarray(X, np.float64)
    d2 = ((X[:, None, :] - C[None]) ** 2).sum(-1)
    sig = np.asarray(sigmas, np.float64)
    return (logsumexp(-d2[:, :, None] / (2 * sig ** 2), axis=1) - math.log(len(C))
            - 0.5 * X.shape[1] * np.log(2 * math.pi * sig ** 2))


def tolerance(centres, X, sigmas):
    """(rows, n_sigmas) float32 tolerance of the module docstring."""
    m = np.asarray(centres, np.float64).mean(0)
    x2 = ((np.asarray(X, np.float64) - m) ** 2).sum(1)
    c2 = ((np.asarray(centres, np.float64) - m) ** 2).sum(1).max()
    return 2e-6 * (x2[:, None] + c2) / (2 * np.asarray(sigmas) ** 2) + 1e-5


def check(centres, X, sigmas, **kwargs):
    got = pz.parzen_log_likelihood(centres, X, sigmas, engine="jax", **kwargs)
    ref = pz.parzen_log_likelihood(centres, X, sigmas, engine="numpy")
    assert got.dtype == np.float64 and got.shape == ref.shape
    err = np.abs(got - ref)
    tol = tolerance(centres, X, sigmas)
    assert np.all(err <= tol), (err.max(0), tol.min(0))
    return got, err


SIGMAS = [0.05, 0.07, 0.1, 0.2, 0.5, 1.0, 3.0]


@pytest.fixture(scope="module")
def rand():
    rng = np.random.default_rng(0)
    return rng.random((300, 20)), rng.random((77, 20))


def test_tiny_case_matches_brute_force_float64():
    rng = np.random.default_rng(5)
    C, X = rng.random((9, 6)), rng.random((4, 6))
    got = pz.parzen_log_likelihood(C, X, [0.05, 0.3, 2.0], engine="jax")
    ref = brute(C, X, [0.05, 0.3, 2.0])
    np.testing.assert_array_less(np.abs(got - ref), tolerance(C, X, [0.05, 0.3, 2.0]))
    # a scalar sigma gives one value per row, as the numpy path does
    one = pz.parzen_log_likelihood(C, X, 0.3, engine="jax")
    assert one.shape == (4,) and one.dtype == np.float64
    assert abs(one - ref[:, 1]).max() < tolerance(C, X, [0.3]).min()


@pytest.mark.parametrize("block", [None, (8, 128), (16, 200), (8, 1), (128, 4096)])
def test_random_data_and_uneven_blocks(rand, block):
    """77 rows, 300 centres: last row block 5 of 8 rows, last centre block 44 of 128
    centres (the rest padding, masked); one centre per block; rows fewer than a block."""
    C, X = rand
    _, err = check(C, X, SIGMAS, jax_block=block)
    assert err[:, -1].max() < 1e-5   # at sigma 3 the float32 error is far below the tolerance


def test_single_centre_and_one_row(rand):
    C, X = rand
    check(C[:1], X, SIGMAS)                          # one centre: the Gaussian itself
    check(C, X[:1], SIGMAS)                          # one row, padded to a block of 8
    check(C[:1], X[:3], SIGMAS, jax_block=(2, 1))


def test_many_centre_blocks_far_rows_and_exact_hits():
    """Several centre blocks; rows on a centre (distance 0) and far from all (every
    exponent hugely negative: the rescaling must not overflow or lose the row)."""
    rng = np.random.default_rng(3)
    C = rng.standard_normal((700, 8))
    X = np.vstack([C[:5], C[600:605], C[:5] + 40.0, rng.standard_normal((20, 8))])
    got, _ = check(C, X, [0.01, 0.1, 1.0], jax_block=(8, 128))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, brute(C, X, [0.01, 0.1, 1.0]),
                               atol=tolerance(C, X, [0.01]).max())


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="MNIST not in ../shared/data/mnist")
def test_real_mnist_rows():
    from vgsn.data.datasets import read_idx
    img = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz").reshape(-1, 784) / np.float32(255)
    C, X = img[:600], img[5000:5300]                 # 784 dims, the paper's pixel scale
    sig = [0.05, 0.07] + list(gp.MNIST_SIGMAS)
    got, err = check(C, X, sig, jax_block=(128, 256))
    assert np.all(np.isfinite(got))
    # the worst case is the smallest sigma, where the cancellation costs most
    assert err[:, 0].max() >= err[:, -1].max()


def test_gpde_both_same_sigmas_and_numbers(rand):
    rng = np.random.default_rng(7)
    C = rng.random((400, 20))
    X_valid, X_test = rng.random((150, 20)), rng.random((90, 20))
    grid, pgrid = np.logspace(-1.3, 0, 8), [0.1, 0.15, 0.2, 0.3]
    a = gp.gpde_both(C, X_valid, X_test, sigmas=grid, paper_sigmas=pgrid, engine="jax")
    b = gp.gpde_both(C, X_valid, X_test, sigmas=grid, paper_sigmas=pgrid, engine="numpy")
    assert set(a) == set(b)
    for k in ("gpde_sigma", "gpde_paper_sigma", "gpde_paper_valid_sigma",
              "gpde_sigma_at_edge", "gpde_paper_sigma_at_edge"):
        assert a[k] == b[k], k
    tol = tolerance(C, np.vstack([X_valid, X_test]), [min(grid)]).max()
    for k in ("gpde_valid", "gpde_test", "gpde_paper_test", "gpde_paper_valid"):
        assert abs(a[k] - b[k]) < tol, (k, a[k], b[k])
    # the other entry points pass the engine through too
    g = gp.gpde(C, X_valid, X_test, sigmas=grid, engine="jax")
    assert g["sigma"] == b["gpde_sigma"] and abs(g["test_mean"] - b["gpde_test"]) < tol
    p = gp.gpde_paper(C, X_test, sigmas=pgrid, engine="jax")
    assert p["sigma"] == b["gpde_paper_sigma"]


def test_auto_follows_the_mode(monkeypatch):
    from vgsn import backend                           # imported: 'auto' reads its MODE
    if backend.MODE == "c":                            # the suite's mode (tests/conftest.py)
        assert pz.parzen_engine("auto") == "numpy"
    monkeypatch.setattr(backend, "MODE", "jax")
    assert pz.parzen_engine("auto") == "jax"
    assert pz.parzen_engine("auto", dtype=np.float64) == "numpy"   # exact asked for
    assert pz.parzen_engine("auto", dtype=np.float32) == "jax"
    monkeypatch.setattr(backend, "MODE", "c")
    assert pz.parzen_engine("auto") == pz.parzen_engine("numpy") == "numpy"
    assert pz.parzen_engine("jax") == "jax"


def test_bad_engine_dtype_and_block(rand):
    C, X = rand
    with pytest.raises(ValueError, match="engine must be one of"):
        pz.parzen_log_likelihood(C, X, 0.1, engine="cuda")
    with pytest.raises(ValueError, match="float32; got dtype float64"):
        pz.parzen_log_likelihood(C, X, 0.1, engine="jax", dtype=np.float64)
    with pytest.raises(ValueError, match="jax_block must be"):
        pz.parzen_log_likelihood(C, X, 0.1, engine="jax", jax_block=(0, 5))
    with pytest.raises(ValueError, match="too small for the float32 jax engine"):
        pz.parzen_log_likelihood(C, X, [0.1, 1e-20], engine="jax")
    assert pz.parzen_log_likelihood(C, X[:0], [0.1, 0.2], engine="jax").shape == (0, 2)


def test_eval_row_runs_the_gpde_on_the_mode_s_engine(monkeypatch, tmp_path):
    """runeval.eval_row asks 'auto': numpy in the C mode, jax in the JAX mode, and
    says which in ``gpde_engine``; the two rows agree within the float32 tolerance."""
    from vgsn import backend
    from vgsn.run import evaluate as runeval
    rng = np.random.default_rng(2)
    C, V, T = rng.random((200, 12)), rng.random((60, 12)), rng.random((50, 12))
    model = SimpleNamespace(
        sample_prior=lambda n, rng=None: C[:n],
        free_energy_terms=lambda X, n_samples, rng: (np.ones(len(X)), np.zeros(len(X))))
    c = SimpleNamespace(gpde_samples=200, bound_samples=1, score_steps=0)
    sets = SimpleNamespace(gpde_valid=V, gpde_test=T, sigmas=gp.MNIST_SIGMAS,
                           paper_sigmas=gp.PAPER_MNIST_SIGMAS, bound_valid=V[:5],
                           score_starts=T[:0])
    rows = {}
    for mode in ("c", "jax"):
        monkeypatch.setattr(backend, "MODE", mode)
        rows[mode] = runeval.eval_row(c, sets, None, model, "guided", 10, "chain", False,
                                      lambda purpose: np.random.default_rng(purpose), tmp_path)
    assert rows["c"]["gpde_engine"] == "numpy" and rows["jax"]["gpde_engine"] == "jax"
    assert rows["c"]["gpde_sigma"] == rows["jax"]["gpde_sigma"]
    tol = tolerance(C, np.vstack([V, T]), [0.1]).max()
    assert abs(rows["c"]["gpde_test"] - rows["jax"]["gpde_test"]) < tol


def test_one_compile_per_block_shape():
    """Rows 100 and 120 both pad to a block of 128: the second call, with other rows
    and other sigma values (the same number of them), compiles nothing."""
    rng = np.random.default_rng(4)
    C = rng.random((300, 13))            # 13 dims: a shape no other test compiles
    traces, cached = pj.TRACES[0], pj.cache_size()
    a = pz.parzen_log_likelihood(C, rng.random((100, 13)), [0.1, 0.5], engine="jax")
    assert pj.TRACES[0] == traces + 1 and pj.cache_size() == cached + 1
    b = pz.parzen_log_likelihood(C, rng.random((120, 13)), [0.2, 0.9], engine="jax")
    assert pj.TRACES[0] == traces + 1 and pj.cache_size() == cached + 1
    assert a.shape == (100, 2) and b.shape == (120, 2)
    assert pj.block_shape(100, 300, plat="cpu") == (128, 384)
    assert pj.block_shape(120, 300, plat="cpu") == (128, 384)
    # another number of sigmas is another compile
    pz.parzen_log_likelihood(C, rng.random((100, 13)), [0.1, 0.5, 1.0], engine="jax")
    assert pj.TRACES[0] == traces + 2

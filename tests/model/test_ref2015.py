"""Tests of the numpy reference of the 2015 walk phase (``tests/model/ref2015.py``) itself.

- its hand-written BPTT gradients against central finite differences of its own totals
  (float64, tiny nets, Bernoulli and Gaussian p, 3 and 6 steps, nonzero eps);
- the guide losses' minimisers: f = log(D/G)/2 for the 2015 form, log(D/G) for Eq. 6;
- every term of a 1-row case against values worked out by hand with ``math``;
- the layout facts: consecutive repeats, consecutive maxout groups, the 2015 penalty's
  factor ``pool``, the doubled L2 on p's shared log-variance, step weights.
"""
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest


def _load_reference():
    name = "ref2015"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("ref2015.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ref = _load_reference()

X_DIM, Z_DIM, STARTS, REPEAT, DATA_ROWS = 12, 3, 3, 5, 4


def tiny_case(x_type, steps, seed=0):
    """Tiny nets (q/p 2 x 7 hidden, z 3, guide 2 maxout layers of 5 groups of 4, a 10-way
    classifier), 3 starts x 5 repeats, 4 data rows, nonzero eps; the guide's output bias
    puts half the chain rows on each side of f = 0 (the generator loss active)."""
    rng = np.random.default_rng([seed, steps, x_type == "gaussian"])
    params = ref.random_params(rng, X_DIM, Z_DIM, x_type=x_type)
    X0 = rng.uniform(0.05, 0.95, (STARTS, X_DIM))
    X_data = rng.uniform(0.05, 0.95, (DATA_ROWS, X_DIM))
    eps = rng.standard_normal((steps, STARTS * REPEAT, Z_DIM))
    f_gen = ref.walk_terms(params, X0, X_data, eps, {"x_type": x_type})["f_gen"]
    u_gen = np.sort(20.0 * np.arctanh(f_gen / 20.0))
    k = u_gen.size // 2                     # f = 0 halfway between two rows: none on the kink
    params["guide.out.b"] = np.array([-0.5 * (u_gen[k - 1] + u_gen[k])])
    return params, X0, X_data, eps


VARIANTS = {
    # the 2015 MNIST walk phase: only step 0 carries the VAE cost
    "mnist2015": dict(cost_decay=0.0, lam_kld=1.2),
    # every step's VAE cost (walkout: step t's nll also depends on x_t through its target)
    "decay": dict(cost_decay=0.5, lam_kld=1.7, lam_nll=0.8),
    # the other choices of every option
    "other": dict(cost_decay=0.7, chain_type="walkback", guide_loss="paper", gen_loss="abs",
                  act_penalty="vgsn", l2_on="weights", l2_logvar_count=1, lam_l2w=3e-3,
                  dw_dn=3.0, dw_gn=7.0),
}


def directional_check(params, X0, X_data, eps, settings, rng, h=1e-6):
    """Compare each gradient tensor with central differences of the matching total:
    along 2 random directions of the whole tensor and at 2 random single entries.
    Returns the list of mismatches (name, analytic, numeric)."""
    grads = ref.walk_gradients(params, X0, X_data, eps, settings)
    bad = []
    for name, p in params.items():
        total = "guide_cost" if name.startswith("guide.") else "gen_cost"
        p = np.asarray(p, dtype=np.float64)
        g = grads[name]
        assert g.shape == p.shape, name
        directions = [rng.standard_normal(p.shape) for _ in range(2)]
        for i in rng.choice(p.size, size=min(2, p.size), replace=False):
            e = np.zeros(p.size)
            e[i] = 1.0
            directions.append(e.reshape(p.shape))
        for v in directions:
            values = []
            for sign in (1.0, -1.0):
                moved = dict(params)
                moved[name] = p + sign * h * v
                values.append(ref.walk_terms(moved, X0, X_data, eps, settings)[total])
            numeric = (values[0] - values[1]) / (2.0 * h)
            analytic = float(np.sum(g * v))
            scale = float(np.sum(np.abs(g * v))) + 1e-3
            if abs(numeric - analytic) > 1e-6 * scale + 1e-7:
                bad.append((name, analytic, numeric))
    return bad, grads


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("steps", [3, 6])
@pytest.mark.parametrize("x_type", ["bernoulli", "gaussian"])
def test_gradients_match_finite_differences(x_type, steps, variant):
    params, X0, X_data, eps = tiny_case(x_type, steps)
    settings = dict(VARIANTS[variant], x_type=x_type)
    terms = ref.walk_terms(params, X0, X_data, eps, settings)
    # the check is not vacuous: both sides of f = 0, both totals' terms nonzero
    assert 0.2 < np.mean(terms["f_gen"] < 0) < 0.8
    assert terms["gen_loss"] > 0 and terms["act_penalty"] > 0 and terms["l2"] > 0
    bad, grads = directional_check(params, X0, X_data, eps, settings,
                                   np.random.default_rng([1, steps]))
    assert not bad, bad[:5]
    assert set(grads) == set(params)
    for name, g in grads.items():          # every parameter gets a gradient
        if name == "guide.cls.b" and variant == "other":
            continue                       # 'vgsn' penalty: the classifier is unused
        if name.startswith("guide.cls") and variant == "other":
            assert not np.any(g), name
            continue
        assert np.any(g != 0), name


def test_gaussian_logvar_gradient_flows_from_every_weighted_step():
    """With cost_decay > 0, p.logvar_b's gradient sums every step's nll derivative: the
    gradient with decay 0.5 differs from decay 0 (step 0 only)."""
    params, X0, X_data, eps = tiny_case("gaussian", 3)
    g0 = ref.walk_gradients(params, X0, X_data, eps, dict(x_type="gaussian", cost_decay=0.0))
    g5 = ref.walk_gradients(params, X0, X_data, eps, dict(x_type="gaussian", cost_decay=0.5))
    assert abs(float(g0["p.logvar_b"]) - float(g5["p.logvar_b"])) > 1e-6


# ---- the guide losses' minimisers ----------------------------------------------------
def _golden_min(fun, lo, hi, tol=1e-10):
    invphi = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - invphi * (b - a), a + invphi * (b - a)
    while b - a > tol:
        if fun(c) < fun(d):
            b, d = d, c
            c = b - invphi * (b - a)
        else:
            a, c = c, d
            d = a + invphi * (b - a)
    return 0.5 * (a + b)


@pytest.mark.parametrize("form, factor", [("code2015", 0.5), ("paper", 1.0)])
def test_guide_loss_minimiser(form, factor):
    """Two input points A, B; data rows put D(A) = 3/4, chain rows G(A) = 1/4 (so
    D(B) = 1/4, G(B) = 3/4, with 4 data and 8 chain rows). Minimising the loss over the
    guide's values f(A), f(B) numerically gives factor * log(D/G) at each point."""
    n_data = {"A": 3, "B": 1}
    n_gen = {"A": 2, "B": 6}

    def loss(fa, fb):
        f_data = np.array([fa] * n_data["A"] + [fb] * n_data["B"])
        f_gen = np.array([fa] * n_gen["A"] + [fb] * n_gen["B"])
        return ref.guide_loss(f_data, f_gen, form)[0]

    fa, fb = 0.0, 0.0
    for _ in range(3):                      # separable: coordinate minimisation converges
        fa = _golden_min(lambda v, fb=fb: loss(v, fb), -10.0, 10.0)
        fb = _golden_min(lambda v, fa=fa: loss(fa, v), -10.0, 10.0)
    D = {k: n_data[k] / 4.0 for k in n_data}
    G = {k: n_gen[k] / 8.0 for k in n_gen}
    assert fa == pytest.approx(factor * math.log(D["A"] / G["A"]), abs=1e-6)
    assert fb == pytest.approx(factor * math.log(D["B"] / G["B"]), abs=1e-6)
    # and the analytic derivative vanishes there
    f_data = np.array([fa] * 3 + [fb])
    f_gen = np.array([fa] * 2 + [fb] * 6)
    _, gd, gg = ref.guide_loss(f_data, f_gen, form)
    assert abs(gd[:3].sum() + gg[:2].sum()) < 1e-8
    assert abs(gd[3:].sum() + gg[2:].sum()) < 1e-8


def test_guide_loss_forms():
    """The 2015 form is Eq. 6 of 2f, halved: L_code(f) = 0.5 * L_paper(2 f)."""
    rng = np.random.default_rng(3)
    fd, fg = rng.normal(0, 3, 7), rng.normal(0, 3, 11)
    code = ref.guide_loss(fd, fg, "code2015")[0]
    paper2 = ref.guide_loss(2 * fd, 2 * fg, "paper")[0]
    assert code == pytest.approx(0.5 * paper2, rel=1e-12)


# ---- a 1-row case worked out by hand -----------------------------------------------
def _sig(u):
    return 1.0 / (1.0 + math.exp(-u))


def _sp(u):
    return math.log1p(math.exp(u))


def one_row_params(gaussian):
    P = {
        "q.h0.W": [[1.0], [2.0]], "q.h0.b": [0.1],
        "q.mean.W": [[0.5]], "q.mean.b": [0.0],
        "q.logvar.W": [[0.0]], "q.logvar.b": [-0.2],
        "p.h0.W": [[1.0]], "p.h0.b": [0.2],
        "p.mean.W": [[1.0, -1.0]], "p.mean.b": [0.0, 0.1],
        "guide.h0.W": [[1.0, -1.0], [0.5, 2.0]], "guide.h0.b": [0.0, 0.1],   # 1 group of 2
        "guide.h1.W": [[1.0, 0.3]], "guide.h1.b": [-0.2, 0.0],
        "guide.out.W": [[1.5]], "guide.out.b": [-1.1],
        "guide.cls.W": [[1.0, -2.0, 0.5]], "guide.cls.b": [0.0, 0.1, 0.0],
    }
    P = {k: np.array(v, dtype=np.float64) for k, v in P.items()}
    if gaussian:
        P["p.logvar_b"] = np.array(0.9)
    return P


def hand_guide(x1, x2):
    """The guide on one row, by hand: (f, [a0], [a1], [cls])."""
    a0 = [x1 * 1.0 + x2 * 0.5 + 0.0, x1 * -1.0 + x2 * 2.0 + 0.1]
    h0 = max(a0)
    a1 = [h0 * 1.0 - 0.2, h0 * 0.3 + 0.0]
    h1 = max(a1)
    u = 1.5 * h1 - 1.1
    cls = [h1 * 1.0 + 0.0, h1 * -2.0 + 0.1, h1 * 0.5 + 0.0]
    return 20.0 * math.tanh(u / 20.0), a0, a1, cls


@pytest.mark.parametrize("gaussian", [False, True])
def test_one_row_by_hand(gaussian):
    P = one_row_params(gaussian)
    X0, X_data, eps = np.array([[0.5, 0.25]]), np.array([[0.8, 0.1]]), np.array([[[0.3]]])
    st = dict(x_type="gaussian" if gaussian else "bernoulli", batch_repeat=1, guide_pool=2,
              lam_kld=2.0, lam_l2w=1e-4, lam_l2d=0.05, lam_l2a=0.01, dw_dn=25.0, dw_gn=25.0,
              logvar_bound=6.0)
    terms = ref.walk_terms(P, X0, X_data, eps, st)

    # q: a = 0.5*1 + 0.25*2 + 0.1 = 1.1; mu = 0.55; lv = -0.2; z = mu + exp(lv/2) eps
    mu, lv = 0.55, -0.2
    z = mu + math.exp(lv / 2) * 0.3
    hp = max(z + 0.2, 0.0)
    logits = [hp, -hp + 0.1]
    s = [_sig(v) for v in logits]
    x = [0.5, 0.25]
    if gaussian:
        lvx = 6.0 * math.tanh(0.9 / 6.0)
        nll = sum(0.5 * (math.log(2 * math.pi) + lvx + (xi - si) ** 2 * math.exp(-lvx))
                  for xi, si in zip(x, s))
    else:
        nll = -sum(xi * math.log(si) + (1 - xi) * math.log(1 - si) for xi, si in zip(x, s))
    kl = 0.5 * (-lv + math.exp(lv) + mu * mu - 1.0)

    f_d, a0_d, a1_d, c_d = hand_guide(0.8, 0.1)
    f_g, a0_g, a1_g, c_g = hand_guide(*s)
    assert f_d < 0 and f_g < 0                       # the generator loss is active
    lf_code = 0.5 * _sp(-2 * f_d) + 0.5 * _sp(2 * f_g)
    lf_paper = _sp(-f_d) + _sp(f_g)
    n = -f_g
    lg = 0.5 * (n + n * n)
    # act_l2_sum = sum(a^2) / (rows * pooled units): 2 rows, 1 unit; classifier 2 rows x 3
    act = (sum(v * v for v in a0_d + a0_g) / 2.0 + sum(v * v for v in a1_d + a1_g) / 2.0
           + sum(v * v for v in c_d + c_g) / 6.0)
    f_sq = (f_d ** 2 + f_g ** 2) / 2.0
    l2 = sum(float(np.sum(v ** 2)) for k, v in P.items() if k[:2] in ("q.", "p."))
    if gaussian:
        l2 += 0.9 ** 2                               # p.logvar_b counted twice in 2015

    assert terms["states"][0, 0] == pytest.approx(s, rel=1e-12)
    assert terms["f"] == pytest.approx([f_d, f_g], rel=1e-12)
    assert terms["nll"][0, 0] == pytest.approx(nll, rel=1e-12)
    assert terms["kl"][0, 0] == pytest.approx(kl, rel=1e-12)
    assert terms["guide_loss"] == pytest.approx(lf_code, rel=1e-12)
    assert terms["guide_loss_paper"] == pytest.approx(lf_paper, rel=1e-12)
    assert terms["gen_loss"] == pytest.approx(lg, rel=1e-12)
    assert terms["act_penalty"] == pytest.approx(act, rel=1e-12)
    assert terms["f_sq_mean"] == pytest.approx(f_sq, rel=1e-12)
    assert terms["l2"] == pytest.approx(1e-4 * l2, rel=1e-12)
    assert terms["vae_cost"] == pytest.approx(nll + 2.0 * kl, rel=1e-12)
    assert terms["guide_cost"] == pytest.approx(25 * lf_code + 0.01 * act + 0.05 * f_sq,
                                                rel=1e-12)
    assert terms["gen_cost"] == pytest.approx(25 * lg + nll + 2.0 * kl + 1e-4 * l2, rel=1e-12)


# ---- layout facts ------------------------------------------------------------------
def test_consecutive_repeats_and_noise_off():
    """X0 rows repeat consecutively (np.repeat); with eps = 0 the 5 copies of a start stay
    identical at every step, and copies of different starts differ."""
    params, X0, X_data, eps = tiny_case("bernoulli", 3)
    terms = ref.walk_terms(params, X0, X_data, np.zeros_like(eps))
    assert np.array_equal(terms["x0"], np.repeat(X0, REPEAT, axis=0))
    for t in range(3):
        for start in range(STARTS):
            block = terms["states"][t, start * REPEAT:(start + 1) * REPEAT]
            assert np.array_equal(block, np.broadcast_to(block[0], block.shape))
        assert not np.allclose(terms["states"][t, 0], terms["states"][t, REPEAT])
    # the guide's stacked input: data rows first, then x_1, x_2, x_3
    f_again = ref.guide_forward(params, np.concatenate([X_data, terms["states"].reshape(-1, X_DIM)]),
                                4, 20.0)["f"]
    assert np.array_equal(f_again, terms["f"])


def test_maxout_pools_consecutive_columns():
    a = np.array([[1.0, 5.0, 2.0, 0.0, 3.0, -1.0, 4.0, 9.0]])
    h, arg = ref.maxout_forward(a, 4)
    assert h.tolist() == [[5.0, 9.0]] and arg.tolist() == [[1, 3]]
    g = ref.maxout_backward(np.array([[2.0, 3.0]]), arg, 4)
    assert g.tolist() == [[0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]]


def test_code2015_penalty_is_pool_times_mean_square_plus_classifier():
    params, X0, X_data, eps = tiny_case("bernoulli", 3)
    t15 = ref.walk_terms(params, X0, X_data, eps, {"act_penalty": "code2015"})
    tvg = ref.walk_terms(params, X0, X_data, eps, {"act_penalty": "vgsn"})
    stacked = np.concatenate([X_data, t15["states"].reshape(-1, X_DIM)])
    cache = ref.guide_forward(params, stacked, 4, 20.0)
    cls_term = np.mean(cache["cls"] ** 2)
    assert t15["act_penalty"] == pytest.approx(4 * tvg["act_penalty"] + cls_term, rel=1e-12)


def test_l2_counts_the_shared_logvar_twice_in_2015():
    params, X0, X_data, eps = tiny_case("gaussian", 3)
    b = float(params["p.logvar_b"])
    two = ref.walk_terms(params, X0, X_data, eps, {"x_type": "gaussian"})
    one = ref.walk_terms(params, X0, X_data, eps, {"x_type": "gaussian", "l2_logvar_count": 1})
    assert two["l2"] - one["l2"] == pytest.approx(1e-4 * b * b, rel=1e-9)
    weights = ref.walk_terms(params, X0, X_data, eps, {"x_type": "gaussian", "l2_on": "weights"})
    expect = sum(np.sum(v ** 2) for k, v in params.items() if k[:2] in ("q.", "p.")
                 and k.endswith(".W"))
    assert weights["l2"] == pytest.approx(1e-4 * expect, rel=1e-12)


def test_step_weights_and_mnist_vae_cost_is_step_zero():
    assert ref.step_weights(4, 0.0).tolist() == [1.0, 0.0, 0.0, 0.0]
    w = ref.step_weights(3, 0.1)
    assert w == pytest.approx(np.array([1.0, 0.1, 0.01]) / 1.11)
    params, X0, X_data, eps = tiny_case("bernoulli", 3)
    t = ref.walk_terms(params, X0, X_data, eps, {"lam_kld": 1.2})
    assert t["vae_cost"] == pytest.approx(t["nll"][0].mean() + 1.2 * t["kl"][0].mean(), rel=1e-12)


def test_settings_are_checked():
    with pytest.raises(KeyError):
        ref.full_settings({"no_such_key": 1})
    with pytest.raises(ValueError):
        ref.full_settings({"guide_loss": "eq6"})

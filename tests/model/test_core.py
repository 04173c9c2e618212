"""The core: objectives against independent numpy, gradients against finite
differences, the written-out derivatives of the stored-activation BPTT against
autodiff, Eq. 5's gradient, the SGD rule, the bounded log-variance, seeding."""
import importlib

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

from vgsn import backend
from vgsn.model import objectives as obj
from vgsn.backend import T, function, grad, shared, verify_grad
from vgsn.model.layers import orthogonal, relu, relu_grad
from vgsn.model.vae import OneStageModel
from vgsn.model.layers import output_bias_from_mean
from vgsn.model.nets import InfNet, MaxoutGuide
from vgsn.model.updates import HyperParams, l2_penalty, sgd, sum_squares

RNG = np.random.default_rng(1234)


def _f64(*shape):
    return RNG.standard_normal(shape)


# ---- objectives against numpy ------------------------------------------------

def test_bernoulli_log_prob_matches_numpy():
    x, l = T.dmatrix(), T.dmatrix()
    f = function([x, l], obj.bernoulli_log_prob(x, l))
    X = RNG.random((7, 5))                       # grey levels, not only {0, 1}
    L = 4 * _f64(7, 5)
    L[0, 0], L[1, 1] = 40.0, -40.0               # saturated logits stay finite
    log_s, log_1ms = -np.logaddexp(0, -L), -np.logaddexp(0, L)   # log s(L), log(1 - s(L))
    expected = np.sum(X * log_s + (1 - X) * log_1ms, axis=1)
    np.testing.assert_allclose(f(X, L), expected, rtol=1e-10, atol=1e-10)


def test_gaussian_log_prob_matches_scipy_scalar_and_full_logvar():
    x, m, lv = T.dmatrix(), T.dmatrix(), T.dmatrix()
    s = T.dscalar()
    full = function([x, m, lv], obj.gaussian_log_prob(x, m, lv))
    scalar = function([x, m, s], obj.gaussian_log_prob(x, m, s))
    X, M, LV = _f64(6, 4), _f64(6, 4), _f64(6, 4)
    expected = norm.logpdf(X, M, np.exp(0.5 * LV)).sum(axis=1)
    # Python float literals become floatX (float32) constants: ~1e-8 relative
    np.testing.assert_allclose(full(X, M, LV), expected, rtol=1e-7)
    expected = norm.logpdf(X, M, np.exp(0.5 * -1.3)).sum(axis=1)
    np.testing.assert_allclose(scalar(X, M, -1.3), expected, rtol=1e-7)


def test_gaussian_kl_matches_closed_form_and_monte_carlo():
    a, b, c, d = (T.dmatrix() for _ in range(4))
    f = function([a, b, c, d], obj.gaussian_kl(a, b, c, d))
    mq, lq, mp, lp = _f64(3, 4), _f64(3, 4), _f64(3, 4), _f64(3, 4)
    sq, sp = np.exp(0.5 * lq), np.exp(0.5 * lp)
    expected = np.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5
    np.testing.assert_allclose(f(mq, lq, mp, lp), expected, rtol=1e-10)
    # Monte Carlo for one entry: E_q[log q - log p]
    zs = mq[0, 0] + sq[0, 0] * np.random.default_rng(0).standard_normal(400000)
    mc = np.mean(norm.logpdf(zs, mq[0, 0], sq[0, 0]) - norm.logpdf(zs, mp[0, 0], sp[0, 0]))
    assert abs(mc - expected[0, 0]) < 0.02
    # against the prior N(0, I): the defaults
    g = function([a, b], obj.gaussian_kl(a, b))
    np.testing.assert_allclose(g(mq, lq), 0.5 * (mq ** 2 + np.exp(lq) - lq - 1), rtol=1e-10)


def test_guide_and_generator_losses_match_numpy():
    fd, fg = T.dvector(), T.dvector()
    Fd, Fg = 5 * _f64(9), 5 * _f64(13)
    b = lambda u: np.log1p(np.exp(-u))  # noqa: E731  (Eq. 6's b)
    paper = function([fd, fg], obj.guide_loss(fd, fg, "paper"))
    np.testing.assert_allclose(paper(Fd, Fg), b(Fd).mean() + b(-Fg).mean(), rtol=1e-10)
    # the 2015 code's logreg_loss: 0.5 softplus(-+2f), the default
    code = function([fd, fg], obj.guide_loss(fd, fg))
    np.testing.assert_allclose(code(Fd, Fg), 0.5 * (b(2 * Fd).mean() + b(-2 * Fg).mean()),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="guide loss form"):
        obj.guide_loss(fd, fg, "eq6")
    neg = np.maximum(-Fg, 0)
    for kind, expected in (("abs", neg.mean()), ("elastic", (0.5 * (neg + neg ** 2)).mean())):
        g = function([fg], obj.generator_loss(fg, kind))
        np.testing.assert_allclose(g(Fg), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="generator loss kind"):
        obj.generator_loss(fg, "hinge")


def test_moment_matching_matches_numpy_and_vanishes_on_equal_sets():
    a, b = T.dmatrix(), T.dmatrix()
    f = function([a, b], obj.moment_matching(a, b))
    A, B = _f64(50, 3), _f64(40, 3) + 0.5
    expected = (np.sum((A.mean(0) - B.mean(0)) ** 2)
                + np.sum((np.cov(A.T, bias=True) - np.cov(B.T, bias=True)) ** 2))
    np.testing.assert_allclose(f(A, B), expected, rtol=1e-10)
    assert abs(f(A, A[::-1])) < 1e-12


def test_softplus_is_finite_with_finite_gradient_at_extremes():
    u = T.dvector()
    sp = obj.softplus(u)
    f = function([u], [sp, T.grad(T.sum(sp), u)])
    U = np.array([-800.0, -30.0, 0.0, 30.0, 800.0])
    val, g = f(U)
    np.testing.assert_allclose(val, np.logaddexp(0, U), rtol=1e-12)
    np.testing.assert_allclose(g, expit(U), rtol=1e-12)


# ---- gradients against finite differences ------------------------------------

@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "kl", "guide", "abs", "elastic",
                                  "moments", "free_energy"])
def test_objective_gradients_match_finite_differences(name):
    rng = np.random.RandomState(42)
    X = np.random.default_rng(5).random((4, 3))
    # keep f away from the kinks of [.]_+ so finite differences are smooth there
    F = np.array([-2.1, -0.7, 0.9, 1.6, -1.3])
    cases = {
        "bernoulli": (lambda l: T.sum(obj.bernoulli_log_prob(X, l)), [_f64(4, 3)]),
        "gaussian": (lambda m, lv: T.sum(obj.gaussian_log_prob(X, m, lv)), [_f64(4, 3), _f64(4, 3)]),
        "kl": (lambda m, lv, mp, lp: T.sum(obj.gaussian_kl(m, lv, mp, lp)),
               [_f64(2, 3), _f64(2, 3), _f64(2, 3), _f64(2, 3)]),
        "guide": (lambda a, b: obj.guide_loss(a, b), [_f64(5), _f64(6)]),
        "abs": (lambda f: obj.generator_loss(f, "abs"), [F]),
        "elastic": (lambda f: obj.generator_loss(f, "elastic"), [F]),
        "moments": (lambda a: obj.moment_matching(a, X), [_f64(6, 3)]),
        "free_energy": (lambda l, m, lv: T.sum(obj.free_energy(
            -obj.bernoulli_log_prob(X, l), T.sum(obj.gaussian_kl(m, lv), axis=1))),
            [_f64(4, 3), _f64(4, 2), _f64(4, 2)]),
    }
    fun, points = cases[name]
    verify_grad(fun, points, rng=rng, abs_tol=1e-6, rel_tol=1e-6)


# ---- the derivatives vgsn.model.bptt uses, each against autodiff of its formula ------
# Compiled without graph rewrites (Python linker): the graphs are tiny and many.
_PY_MODE = importlib.import_module(backend.NAME + ".compile.mode").Mode(linker="py", optimizer=None)


def _against_autodiff(inputs, values, autodiff, written):
    f = function(inputs, list(autodiff) + list(written), mode=_PY_MODE)
    out = f(*values)
    n = len(autodiff)
    for i, (a, b) in enumerate(zip(out[:n], out[n:])):
        assert np.abs(a).max() > 1e-3, i                # a real check, not 0 == 0
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12, err_msg=f"derivative {i}")


def test_likelihood_and_kl_derivatives_match_autodiff():
    x, m, lv, l = (T.dmatrix() for _ in range(4))
    s = T.dscalar()
    X, M, LV, L = np.random.default_rng(6).random((4, 3)), _f64(4, 3), _f64(4, 3), 3 * _f64(4, 3)
    logp = T.sum(obj.bernoulli_log_prob(x, l))
    _against_autodiff([x, l], [X, L], grad(logp, [x, l]), obj.bernoulli_log_prob_grad(x, l))
    logp = T.sum(obj.gaussian_log_prob(x, m, lv))            # a full log-variance
    _against_autodiff([x, m, lv], [X, M, LV], grad(logp, [x, m, lv]),
                      obj.gaussian_log_prob_grad(x, m, lv))
    logp = T.sum(obj.gaussian_log_prob(x, m, s))             # p's one shared log-variance
    d_x, d_m, d_s = obj.gaussian_log_prob_grad(x, m, s)
    _against_autodiff([x, m, s], [X, M, -0.8], grad(logp, [x, m, s]), [d_x, d_m, T.sum(d_s)])
    kl = T.sum(obj.gaussian_kl(m, lv))
    _against_autodiff([m, lv], [M, LV], grad(kl, [m, lv]), obj.gaussian_kl_grad(m, lv))


def test_reparameterisation_and_relu_derivatives_match_autodiff():
    mu, lv, eps, w, a = (T.dmatrix() for _ in range(5))
    MU, LV, EPS, W = _f64(5, 2), _f64(5, 2), _f64(5, 2), _f64(5, 2)
    cost = T.sum(w * obj.reparameterise(mu, lv, eps))        # so dC/dz = w
    _against_autodiff([mu, lv, eps, w], [MU, LV, EPS, W], grad(cost, [mu, lv]),
                      obj.reparameterise_grad(w, lv, eps))
    A = _f64(5, 2)
    A[np.abs(A) < 0.05] = 0.3                                 # away from the kink
    cost = T.sum(w * relu(a))
    _against_autodiff([a, w], [A, W], grad(cost, [a]), [relu_grad(w, relu(a))])


def test_infnet_backward_and_bounded_logvar_derivative_match_autodiff():
    """``InfNet.backward`` (the heads and ReLU layers, from the stored activations)
    and ``layer_inputs`` give autodiff's gradients for x and every weight and bias;
    ``shared_logvar_grad`` is d(B tanh(b / B))/db."""
    rng = np.random.default_rng(8)
    q = InfNet(4, (6, 5), 3, "q", rng, logvar="head")
    q.logvar_head.W.set_value(rng.standard_normal((5, 3)).astype("float32"))
    p = InfNet(3, (5,), 4, "p", rng, logvar="shared", logvar_bound=2.0)
    p.logvar_param.set_value(np.float32(1.3))
    for net in (q, p):
        x, gm, gl = T.matrix(), T.matrix(), T.matrix()
        out = net.forward(x)
        head = net.logvar_mode == "head"
        cost = T.sum(gm * out.mean) + (T.sum(gl * out.logvar) if head else 0)
        autodiff = grad(cost, [x] + [v for layer in net.dense_layers for v in (layer.W, layer.b)])
        g_x, deltas = net.backward(out.hidden, gm, gl if head else None)
        inputs = net.layer_inputs(x, out.hidden)
        written = [g_x] + [v for h, d in zip(inputs, deltas) for v in (T.dot(h.T, d), T.sum(d, 0))]
        assert len(written) == len(autodiff)
        f = function([x, gm, gl], autodiff + written, mode=_PY_MODE, on_unused_input="ignore")
        shapes = ((7, net.n_in), (7, net.n_out), (7, net.n_out))
        res = f(*(rng.standard_normal(sh).astype("float32") for sh in shapes))
        n = len(autodiff)
        for a, b in zip(res[:n], res[n:]):
            assert np.abs(a).max() > 1e-4
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    b = p.logvar_param
    f = function([], [grad(p.shared_logvar(), b), p.shared_logvar_grad()], mode=_PY_MODE)
    auto, written = f()
    np.testing.assert_allclose(written, auto, rtol=1e-6)
    np.testing.assert_allclose(written, 1 - np.tanh(1.3 / 2.0) ** 2, rtol=1e-6)


def test_over_regularised_kl_value_and_exact_gradient_split():
    """Eq. 5: rows with KL below the batch mean get exactly lambda x the plain KL
    gradient; rows above add 2 gamma (KL - Kbar) x it; Kbar itself passes none."""
    mu, lv = T.dmatrix(), T.dmatrix()
    lam, gamma = 4.0, 0.1
    kl = T.sum(obj.gaussian_kl(mu, lv), axis=1)
    reg = obj.over_regularised_kl(kl, lam, gamma)
    cost = T.mean(reg)
    f = function([mu, lv], [kl, reg, T.grad(cost, mu)])
    M = np.array([[0.1, -0.2], [2.0, 1.5], [0.3, 0.0], [-3.0, 2.5], [0.5, 0.4]])
    LV = np.zeros_like(M)
    k, r, g = f(M, LV)
    kn = 0.5 * np.sum(M ** 2, axis=1)          # KL with unit variance
    kbar = kn.mean()
    np.testing.assert_allclose(k, kn, rtol=1e-12)
    # gamma = 0.1 becomes a float32 constant: ~1e-9 relative
    np.testing.assert_allclose(r, lam * kn + gamma * np.maximum(kn - kbar, 0) ** 2, rtol=1e-7)
    n = M.shape[0]
    below = kn < kbar
    assert below.sum() >= 2 and (~below).sum() >= 2
    # d KL_i / d mu_i = mu_i
    np.testing.assert_allclose(g[below], lam * M[below] / n, rtol=1e-14, atol=0)   # to 1 ulp
    expected_above = (lam + 2 * gamma * (kn[~below] - kbar))[:, None] * M[~below] / n
    np.testing.assert_allclose(g[~below], expected_above, rtol=1e-7)


# ---- SGD ---------------------------------------------------------------------

@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_sgd_matches_hand_computed_numpy_steps(momentum):
    p0 = np.array([[1.0, -2.0], [0.5, 3.0]], dtype="float32")
    c = np.array([[30.0, -40.0], [0.0, 0.0]], dtype="float32")   # ||g|| = 50: clipped to 10
    q0 = np.array([0.3, -0.1], dtype="float32")
    p, q = shared(p0.copy(), name="p"), shared(q0.copy(), name="q")
    hp = HyperParams(lr=0.1)
    cost = T.sum(p * c) + 0.5 * T.sum(T.square(q))                 # grads: c and q
    updates, vel = sgd(cost, [p, q], hp.lr, momentum=momentum, max_norm=10.0)
    step = function([], cost, updates=updates)
    P, Q, mP, mQ = p0.astype(np.float64), q0.astype(np.float64), 0.0, 0.0
    for lr in (0.1, 0.1, 0.05):
        hp.set(lr=lr)
        step()
        gP = c * min(1.0, 10.0 / np.linalg.norm(c))
        gQ = Q * min(1.0, 10.0 / np.linalg.norm(Q))
        mP = momentum * mP + (1 - momentum) * gP
        mQ = momentum * mQ + (1 - momentum) * gQ
        P, Q = P - lr * mP, Q - lr * mQ
    np.testing.assert_allclose(p.get_value(), P, rtol=1e-6, atol=1e-6)   # float32 state
    np.testing.assert_allclose(q.get_value(), Q, rtol=1e-6, atol=1e-6)
    assert len(vel) == (0 if momentum == 0.0 else 2)


def test_sum_squares_and_l2_penalty_against_numpy():
    W = RNG.standard_normal((300, 200)).astype("float32")
    b = RNG.standard_normal(7).astype("float32")
    w, v = shared(W, name="w"), shared(b, name="v")
    np.testing.assert_allclose(function([], sum_squares(w))(), np.sum(W.astype(np.float64) ** 2),
                               rtol=1e-5)
    value, grads = l2_penalty([w, v], np.float32(0.25))
    f = function([], [value, grads[w], grads[v]])
    val, gw, gv = f()
    expected = 0.25 * (np.sum(W.astype(np.float64) ** 2) + np.sum(b.astype(np.float64) ** 2))
    np.testing.assert_allclose(val, expected, rtol=1e-5)
    np.testing.assert_allclose(gw, 0.5 * W, rtol=1e-6)
    np.testing.assert_allclose(gv, 0.5 * b, rtol=1e-6)
    verify_grad(sum_squares, [_f64(4, 3)], rng=np.random.default_rng(2))   # its gradient, 2 x


@pytest.mark.parametrize("l2_on", ["weights", "all"])
def test_one_stage_train_step_applies_weight_decay_where_asked(l2_on):
    """Same seed and noise, with and without L2: after one plain-SGD step (no clipping)
    each decayed parameter differs by exactly -lr * 2 * l2 * p0 and every other not at
    all. ``l2_on='weights'``: the weight matrices; 'all' (the 2015 code): every q/p
    parameter, biases and the shared log-variance included."""
    X = RNG.random((6, 12)).astype("float32")
    cfg = dict(x_dim=12, z_dim=3, q_hidden=(8,), p_hidden=(8,), batch_repeat=2, max_norm=None,
               lr=0.01, x_type="gaussian", l2_on=l2_on, seed=5)
    plain, decayed = OneStageModel(**cfg, l2=0.0), OneStageModel(**cfg, l2=0.5)
    w0 = {p.name: p.get_value().copy() for p in plain.params}
    r0, r1 = plain.train_step(X), decayed.train_step(X)
    if l2_on == "weights":
        targets = {w.name for w in decayed.q.weights + decayed.p.weights}
        assert len(targets) < len(decayed.params)
    else:
        targets = {p.name for p in decayed.params}
        assert decayed.p.logvar_param.name in targets
    l2_value = 0.5 * sum(np.sum(w0[n].astype(np.float64) ** 2) for n in targets)
    assert r0["l2"] == 0.0
    np.testing.assert_allclose(r1["l2"], l2_value, rtol=1e-5)
    np.testing.assert_allclose(r1["cost"] - r0["cost"], l2_value, rtol=1e-4)
    for p_plain, p_decay in zip(plain.params, decayed.params):
        diff = p_decay.get_value().astype(np.float64) - p_plain.get_value()
        expected = -0.01 * 2 * 0.5 * w0[p_plain.name] if p_plain.name in targets else 0 * diff
        np.testing.assert_allclose(diff, expected, rtol=1e-3, atol=2e-7, err_msg=p_plain.name)
    with pytest.raises(ValueError, match="l2_on must be one of"):
        OneStageModel(**dict(cfg, l2_on="biases"))


def test_hyperparams_and_sgd_reject_bad_values():
    hp = HyperParams(lr=1.0)
    with pytest.raises(ValueError, match="lr must be finite"):
        hp.set(lr=float("nan"))
    with pytest.raises(AttributeError, match="no hyperparameter 'lam'"):
        hp.lam
    p = shared(np.zeros(2, "float32"), name="p")
    with pytest.raises(ValueError, match="momentum must be in"):
        sgd(T.sum(p), [p], 0.1, momentum=1.5)


def test_sgd_names_the_velocities_it_makes_and_hyperparams_list_their_variables():
    p = shared(np.zeros(2, "float32"), name="q.h0.W")
    _, vel = sgd(T.sum(p), [p], 0.1, momentum=0.5, velocity_prefix="vcg.")
    assert [v.name for v in vel] == ["vcg.q.h0.W.velocity"]
    assert sgd(T.sum(p), [p], 0.1, momentum=0.0)[1] == []          # plain SGD: none
    hp = HyperParams(prefix="vae", lr=1.0, l2=0.5)
    assert [v.name for v in hp.variables()] == ["vae.lr", "vae.l2"]
    assert [float(v.get_value()) for v in hp.variables()] == [1.0, 0.5]


# ---- nets --------------------------------------------------------------------

def test_orthogonal_init_is_orthogonal_with_gain():
    W = orthogonal((30, 10), 1.4, np.random.default_rng(0)).astype(np.float64)
    np.testing.assert_allclose(W.T @ W, 1.96 * np.eye(10), atol=1e-5)
    W = orthogonal((10, 30), 1.0, np.random.default_rng(0)).astype(np.float64)
    np.testing.assert_allclose(W @ W.T, np.eye(10), atol=1e-5)


def test_building_without_the_init_draws_the_same_and_skips_the_svd(monkeypatch):
    """``init_weights=False`` (a checkpoint fills the weights next): zeros, no SVD, and
    the generator moves on as with the init, so the guide's fixed ``classifier_W`` (not
    in a checkpoint) and its output weights are those of the initialised guide."""
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    orthogonal((40, 12), 1.4, a)
    assert not orthogonal((40, 12), 1.4, b, decompose=False).any()
    assert a.bit_generator.state == b.bit_generator.state
    full = MaxoutGuide(30, np.random.default_rng(2), units=6, pool=2, act_penalty="code2015")
    bare = MaxoutGuide(30, np.random.default_rng(2), units=6, pool=2, act_penalty="code2015",
                       init_weights=False)     # classifier_W: its own small SVD, as before
    np.testing.assert_array_equal(bare.classifier_W.get_value(), full.classifier_W.get_value())
    np.testing.assert_array_equal(bare.output.W.get_value(), full.output.W.get_value())
    assert not bare.layers[0].W.get_value().any()

    def no_svd(*args, **kw):
        raise AssertionError("SVD computed")
    monkeypatch.setattr(np.linalg, "svd", no_svd)
    MaxoutGuide(30, np.random.default_rng(2), units=6, pool=2, init_weights=False)
    m = OneStageModel(30, 3, (8,), (8,), seed=4, init_weights=False)
    assert not m.q.hidden_layers[0].W.get_value().any()
    assert m.rng.bit_generator.state == np.random.default_rng([4, 1]).bit_generator.state


def test_host_noise_statistics_and_reproducibility(monkeypatch):
    """Dropout masks and Gaussian noise: the right law, the same arrays from the same
    generator state, and the same arrays whether the row blocks fill in threads or not."""
    from vgsn.model import layers
    shape = (700, 600)                                   # big enough for the threaded path
    mask = layers.dropout_mask(np.random.default_rng(0), shape, 0.2)
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, np.float32(1.25)}
    assert abs((mask == 0).mean() - 0.2) < 0.005         # 420k draws: sd 0.0006
    noise = layers.gaussian_noise(np.random.default_rng(0), shape, 0.1)
    assert noise.dtype == np.float32
    assert abs(noise.mean()) < 5e-4 and abs(noise.std() - 0.1) < 5e-4
    assert abs(np.corrcoef(noise[:350].ravel(), noise[350:].ravel())[0, 1]) < 0.01   # blocks
    threaded = [layers.dropout_mask(np.random.default_rng(3), shape, 0.5),
                layers.gaussian_noise(np.random.default_rng(3), shape, 2.0)]
    monkeypatch.setattr(layers, "_THREADED_MIN", 10 ** 12)
    serial = [layers.dropout_mask(np.random.default_rng(3), shape, 0.5),
              layers.gaussian_noise(np.random.default_rng(3), shape, 2.0)]
    for a, b in zip(threaded, serial):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(3)
    first, second = layers.gaussian_noise(rng, (5, 4), 1.0), layers.gaussian_noise(rng, (5, 4), 1.0)
    assert not np.array_equal(first, second)             # the caller's generator moves on


def test_maxout_guide_matches_numpy_forward_without_noise():
    guide = MaxoutGuide(6, np.random.default_rng(3), units=5, pool=3, init_scale=1.0)
    x = T.matrix()
    f = function([x], guide.apply(x)[0])
    X = np.random.default_rng(4).random((7, 6)).astype("float32")
    h = X.astype(np.float64)
    for layer in guide.layers:
        lin = h @ layer.W.get_value() + layer.b.get_value()
        h = lin.reshape(7, 5, 3).max(axis=2)      # groups of 3 consecutive columns
    a = h @ guide.output.W.get_value()[:, 0] + guide.output.b.get_value()[0]
    np.testing.assert_allclose(f(X), 20 * np.tanh(a / 20), rtol=1e-5, atol=1e-5)


# ---- OneStageModel -------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    x_mean = np.linspace(0.05, 0.95, 12)
    return OneStageModel(12, 3, (10,), (9,), x_type="gaussian", x_mean=x_mean, seed=7,
                         lr=1e-2, momentum=0.5)


def _numpy_forward(model, X, Z):
    """Independent numpy forward pass of q and p."""
    def mlp(net, h):
        for layer in net.hidden_layers:
            h = np.maximum(h @ layer.W.get_value() + layer.b.get_value(), 0)
        return h
    hq = mlp(model.q, X.astype(np.float64))
    mu = hq @ model.q.mean_head.W.get_value() + model.q.mean_head.b.get_value()
    lv = hq @ model.q.logvar_head.W.get_value() + model.q.logvar_head.b.get_value()
    hp = mlp(model.p, Z.astype(np.float64))
    x_hat = expit(hp @ model.p.mean_head.W.get_value() + model.p.mean_head.b.get_value())
    return mu, lv, x_hat


def test_one_stage_model_numpy_api_matches_numpy(tiny):
    rng = np.random.default_rng(0)
    X = rng.random((8, 12)).astype("float32")
    Z = rng.standard_normal((8, 3)).astype("float32")
    mu, lv, x_hat = _numpy_forward(tiny, X, Z)
    m, v = tiny.encode(X)
    np.testing.assert_allclose(m, mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v, lv, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tiny.decode(Z), x_hat, rtol=1e-4, atol=1e-6)
    s = tiny.shared_logvar()
    np.testing.assert_allclose(tiny.log_px_given_z(X, Z),
                               norm.logpdf(X, x_hat, np.exp(0.5 * s)).sum(1), rtol=1e-4)
    # z = posterior mean
    _, _, x_at_mean = _numpy_forward(tiny, X, mu)
    nll, kl = tiny.free_energy_terms(X, use_mean=True)
    np.testing.assert_allclose(nll, -norm.logpdf(X, x_at_mean, np.exp(0.5 * s)).sum(1), rtol=1e-4)
    np.testing.assert_allclose(kl, 0.5 * np.sum(mu ** 2 + np.exp(lv) - lv - 1, 1), rtol=1e-4)
    np.testing.assert_allclose(tiny.posterior_kl(X).sum(1), kl, rtol=1e-4)
    # sampled nll averages over draws: many draws approach the numpy Monte Carlo
    nll_s, _ = tiny.free_energy_terms(X, n_samples=200, rng=np.random.default_rng(9))
    same = np.random.default_rng(9)                 # the same draws, in the same order
    eps = [same.standard_normal((8, 3), dtype=np.float32) for _ in range(200)]
    mc = np.mean([-norm.logpdf(X, _numpy_forward(tiny, X, mu + np.exp(lv / 2) * e)[2],
                               np.exp(0.5 * s)).sum(1) for e in eps], axis=0)
    np.testing.assert_allclose(nll_s, mc, rtol=1e-5)
    assert tiny.sample_prior(5).shape == (5, 12)


def test_output_bias_init_and_shapes_checked(tiny):
    np.testing.assert_allclose(expit(tiny.p.mean_head.b.get_value()),
                               0.9 * np.linspace(0.05, 0.95, 12) + 0.05, rtol=1e-5)
    np.testing.assert_allclose(expit(output_bias_from_mean([0.0, 1.0])), [0.05, 0.95], rtol=1e-6)
    with pytest.raises(ValueError, match=r"encode input must be a \(rows, 12\) array"):
        tiny.encode(np.zeros((2, 11)))
    with pytest.raises(ValueError, match="x_type must be one of"):
        OneStageModel(4, 2, (3,), (3,), x_type="poisson")


def test_gaussian_logvar_stays_within_its_bound(tiny):
    X = np.full((2, 12), 0.3, "float32")
    Z = np.zeros((2, 3), "float32")
    x_hat = tiny.decode(Z)
    old = tiny.p.logvar_param.get_value()
    try:
        for b, bound in ((1e4, 6.0), (-1e4, -6.0), (3.0, 6 * np.tanh(0.5))):
            tiny.p.logvar_param.set_value(np.float32(b))
            assert abs(tiny.shared_logvar() - bound) < 1e-6
            np.testing.assert_allclose(tiny.log_px_given_z(X, Z),
                                       norm.logpdf(X, x_hat, np.exp(0.5 * bound)).sum(1), rtol=1e-4)
    finally:
        tiny.p.logvar_param.set_value(old)


def test_train_step_lowers_cost_and_same_seed_gives_identical_parameters():
    X = np.random.default_rng(1).random((20, 12)).astype("float32")

    def run(seed):
        m = OneStageModel(12, 3, (10,), (9,), x_type="gaussian", seed=seed, lr=1e-2, momentum=0.5)
        costs = [m.train_step(X[(i % 4) * 5:(i % 4) * 5 + 5])["cost"] for i in range(60)]
        return m, costs

    a, ca = run(11)
    b, cb = run(11)
    c, _ = run(12)
    assert ca == cb
    for pa, pb, pc in zip(a.params, b.params, c.params):
        np.testing.assert_array_equal(pa.get_value(), pb.get_value())
    assert any(not np.array_equal(pa.get_value(), pc.get_value()) for pa, pc in zip(a.params, c.params))
    assert np.mean(ca[-10:]) < np.mean(ca[:10]) - 1.0
    # the momentum state is part of the model's state and fork copies parameters
    assert any(v.name.endswith(".velocity") for v in a.state_variables())
    f = a.fork()
    for pa, pf in zip(a.params, f.params):
        assert pa is not pf
        np.testing.assert_array_equal(pa.get_value(), pf.get_value())



from _paths import MNIST_DIR  # noqa: E402


@pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason=f"real MNIST not found in {MNIST_DIR}")
def test_one_stage_model_trained_on_real_mnist_lowers_validation_free_energy():
    from vgsn.data.datasets import load_dataset
    ds = load_dataset("mnist", data_dir=MNIST_DIR)
    X, V = ds.train[:5000], ds.valid[:1000]
    m = OneStageModel(784, 16, (128,), (128,), x_type="bernoulli", x_mean=ds.train.mean(0),
                      seed=3, lr=3e-2, momentum=0.5)

    def valid_free_energy():
        nll, kl = m.free_energy_terms(V, rng=np.random.default_rng(0))
        return float(np.mean(nll + kl))

    before = valid_free_energy()
    rng = np.random.default_rng(0)
    for _ in range(300):
        m.train_step(X[rng.integers(0, len(X), 100)])
    after = valid_free_energy()
    # measured: 227.5 -> 140.3 nats (Aesara and PyTensor alike)
    assert 215 < before < 240
    assert after < 160 and before - after > 60


def test_set_state_is_all_or_nothing_and_names_the_bad_value():
    model = OneStageModel(10, 2, q_hidden=(6,), p_hidden=(6,), seed=0)
    before = model.get_state()
    state = {k: v + 1.0 for k, v in before.items()}
    bad = sorted(state)[-1]
    state[bad] = np.zeros((3, 3), "float32")                     # wrong shape, checked last
    with pytest.raises(ValueError, match=f"{bad}: shape \\(3, 3\\) does not fit"):
        model.set_state(state)
    for k, v in model.get_state().items():                       # nothing was written
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="state is missing parameters: q.h0.W"):
        model.set_state({k: v for k, v in before.items() if k != "q.h0.W"})
    state = {k: v + 1.0 for k, v in before.items()}
    model.set_state(state)
    for k, v in model.get_state().items():
        np.testing.assert_allclose(v, state[k])

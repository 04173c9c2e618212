"""The unrolled chain (vgsn.model.chain), its stored-activation BPTT (vgsn.model.bptt) and the
guided loop (VCGLoop).

Every number is checked against an independent computation: a NumPy unroll of
the chain written from the SPEC (section 4), a symbolic Python unroll
differentiated by ``grad`` (the reference for the stored-activation BPTT), and a
NumPy forward of the guide and of the paper's losses (Eq. 5-7).

Compiled graphs are few and shared (module-scoped fixtures). The chain/gradient
checks compile their graphs WITHOUT graph rewrites (Python linker): the math is the
same graph, and compiling takes seconds instead of a minute; everything VCGLoop and
OneStageModel.run_chain compile runs in the library's default mode.
"""
import copy
import importlib

import numpy as np
import pytest

from vgsn import backend
from vgsn.model import bptt
from vgsn.model import chain
from vgsn.backend import T, floatX, function, grad
from vgsn.model.vae import OneStageModel
from vgsn.model.vcg import VCGLoop
from vgsn.model.nets import MaxoutGuide

LOG_2PI = np.log(2 * np.pi)
TEST_MODE = importlib.import_module(backend.NAME + ".compile.mode").Mode(linker="py", optimizer=None)


# ---- NumPy references ----------------------------------------------------------
def _val(v):
    return np.asarray(v.get_value(), np.float64)


def _relu(a):
    return np.maximum(a, 0.0)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def np_chain(model, X0, E, M=None, C=None, walkback=False):
    """NumPy unroll of SPEC section 4: returns states (T, rows, x), nll, kl (T, rows)."""
    X0 = np.asarray(X0, np.float64)
    ctrl = (lambda x: x) if M is None else (lambda x: (1 - M) * x + M * C)
    x, x0_in = X0, ctrl(X0)
    states, nlls, kls = [], [], []
    for eps in np.asarray(E, np.float64):
        x_in = ctrl(x)
        h = x_in
        for layer in model.q.hidden_layers:
            h = _relu(h @ _val(layer.W) + _val(layer.b))
        mu = h @ _val(model.q.mean_head.W) + _val(model.q.mean_head.b)
        lv = h @ _val(model.q.logvar_head.W) + _val(model.q.logvar_head.b)
        z = mu + np.exp(lv / 2) * eps
        h = z
        for layer in model.p.hidden_layers:
            h = _relu(h @ _val(layer.W) + _val(layer.b))
        s = _sigmoid(h @ _val(model.p.mean_head.W) + _val(model.p.mean_head.b))
        target = x0_in if walkback else x_in
        if model.x_type == "bernoulli":
            nll = -np.sum(target * np.log(s) + (1 - target) * np.log(1 - s), axis=1)
        else:
            bound = model.p.logvar_bound
            lvp = bound * np.tanh(_val(model.p.logvar_param) / bound)
            nll = 0.5 * np.sum(LOG_2PI + lvp + (target - s) ** 2 / np.exp(lvp), axis=1)
        kls.append(0.5 * np.sum(np.exp(lv) + mu ** 2 - 1 - lv, axis=1))
        nlls.append(nll)
        states.append(s)
        x = s
    return np.array(states), np.array(nlls), np.array(kls)


def np_guide(guide, X, noise):
    """NumPy MaxoutGuide forward: f (rows,), the pre-activations and the maxout outputs."""
    h = np.asarray(X, np.float64)
    if "vis_add" in noise:
        h = h + noise["vis_add"]
    h = h * noise["vis"]
    pres, hidden = [], []
    for i, layer in enumerate(guide.layers):
        lin = h @ _val(layer.W) + _val(layer.b) + noise[f"bias{i}"]
        pres.append(lin)
        hidden.append(lin.reshape(len(lin), layer.units, layer.pool).max(axis=2))
        h = hidden[-1] * noise[f"hid{i}"]
    a = (h @ _val(guide.output.W) + _val(guide.output.b))[:, 0]
    return guide.squash * np.tanh(a / guide.squash), pres, hidden


def np_softplus(u):
    return np.logaddexp(0.0, u)


# ---- small pieces ----------------------------------------------------------------
def test_step_weights():
    np.testing.assert_allclose(chain.step_weights(6, 0.0), [1, 0, 0, 0, 0, 0])   # 0**0 = 1
    w = chain.step_weights(4, 0.1)
    np.testing.assert_allclose(w, np.array([1, 0.1, 0.01, 0.001]) / 1.111, rtol=1e-6)
    np.testing.assert_allclose(chain.step_weights(3, 1.0), [1 / 3] * 3, rtol=1e-6)
    assert w.dtype == np.float32
    for bad in (-0.1, np.nan):
        with pytest.raises(ValueError, match="decay"):
            chain.step_weights(3, bad)
    with pytest.raises(ValueError, match="steps"):
        chain.step_weights(0, 0.1)


# ---- the chain against NumPy and the gradients against a Python unroll -----------
STEPS, ROWS, X_DIM, Z_DIM = 4, 6, 5, 3


def _tiny(x_type, seed):
    m = OneStageModel(X_DIM, Z_DIM, q_hidden=(7, 6), p_hidden=(6, 8), x_type=x_type, seed=seed)
    if x_type == "gaussian":
        m.p.logvar_param.set_value(np.float32(-0.7))
    return m


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda a: np.asarray(a, floatX)  # noqa: E731
    X0 = f(rng.random((ROWS, X_DIM)))
    E = f(rng.standard_normal((STEPS, ROWS, Z_DIM)))
    M = f(rng.random((ROWS, X_DIM)) < 0.4)
    C = f(rng.random((ROWS, X_DIM)))
    R = f(rng.standard_normal((STEPS, ROWS, X_DIM)))
    return X0, E, M, C, R


def _costs(fwd, R):
    """A full cost touching every output, and one on the last state only."""
    w = np.linspace(1.0, 0.3, STEPS).astype(floatX)
    full = (T.sum(fwd.states * R) + T.sum(T.constant(w).dimshuffle(0, "x") * fwd.nll)
            + T.sum(np.float32(0.1) * T.square(fwd.kl)) + T.sum(fwd.kl))
    last = T.sum(fwd.states[-1] * R[-1])
    return full, last


def _stored_grads(model, fwd, cost):
    g = grad(cost, [fwd.states, fwd.nll, fwd.kl], disconnected_inputs="ignore",
             return_disconnected="None")
    grads = bptt.chain_gradients(model, fwd, *g)
    return [grads[p] for p in model.params]


@pytest.fixture(scope="module", params=[("bernoulli", False), ("gaussian", False), ("gaussian", True)],
                ids=["bernoulli-walkout", "gaussian-walkout", "gaussian-walkback"])
def chain_case(request):
    """One compiled function per (x model, target): scan chain (walkout AND walkback
    outputs), stored-activation BPTT and the Python unroll's autodiff gradients."""
    x_type, walkback = request.param
    model = _tiny(x_type, seed=3)
    x0, mask, control = T.matrix("x0"), T.matrix("mask"), T.matrix("control")
    eps, R = T.tensor3("eps"), T.tensor3("R")
    fwd = chain.chain_forward(model, x0, eps, mask, control, walkback=walkback, store=True)
    other = chain.chain_forward(model, x0, eps, mask, control, walkback=not walkback)
    ref = chain.chain_forward(model, x0, eps, mask, control, walkback=walkback,
                              unroll="python", steps=STEPS)
    full, last = _costs(fwd, R)
    full_ref, last_ref = _costs(ref, R)
    n = len(model.params)
    outs = [fwd.states, fwd.nll, fwd.kl, other.states, other.nll, other.kl]
    outs += _stored_grads(model, fwd, full) + grad(full_ref, model.params)
    # the last state does not depend on p's shared log-variance (only nll does)
    outs += _stored_grads(model, fwd, last) + grad(last_ref, model.params,
                                                   disconnected_inputs="ignore",
                                                   return_disconnected="zero")
    outs += grad(last_ref, [eps, x0])
    fn = function([x0, eps, mask, control, R], outs, mode=TEST_MODE)
    X0, E, M, C, R_ = _inputs()
    res = fn(X0, E, M, C, R_)
    k = 6
    out = dict(model=model, walkback=walkback, inputs=(X0, E, M, C), fwd=res[:3], other=res[3:6],
               g_full=res[k:k + n], g_full_ref=res[k + n:k + 2 * n],
               g_last=res[k + 2 * n:k + 3 * n], g_last_ref=res[k + 3 * n:k + 4 * n],
               g_eps=res[k + 4 * n], g_x0=res[k + 4 * n + 1])
    return out


def test_scan_chain_matches_numpy_unroll(chain_case):
    model, (X0, E, M, C) = chain_case["model"], chain_case["inputs"]
    states, nll, kl = np_chain(model, X0, E, M, C, walkback=chain_case["walkback"])
    got = chain_case["fwd"]
    assert got[0].shape == (STEPS, ROWS, X_DIM) and got[1].shape == (STEPS, ROWS)
    np.testing.assert_allclose(got[0], states, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], nll, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[2], kl, rtol=1e-4, atol=1e-5)


def test_walkout_and_walkback_differ_only_in_the_nll_of_later_steps(chain_case):
    """SPEC section 4: the chain and its KL are the same; step 0 reconstructs x0 either
    way; from step 1 walkout reconstructs x_t, walkback x0."""
    model, (X0, E, M, C) = chain_case["model"], chain_case["inputs"]
    (s_a, nll_a, kl_a), (s_b, nll_b, kl_b) = chain_case["fwd"], chain_case["other"]
    np.testing.assert_array_equal(s_a, s_b)
    np.testing.assert_array_equal(kl_a, kl_b)
    np.testing.assert_allclose(nll_a[0], nll_b[0], rtol=1e-6)
    assert np.all(np.abs(nll_a[1:] - nll_b[1:]) > 1e-3)
    walkout, walkback = (nll_b, nll_a) if chain_case["walkback"] else (nll_a, nll_b)
    np.testing.assert_allclose(walkback, np_chain(model, X0, E, M, C, walkback=True)[1], rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(walkout, np_chain(model, X0, E, M, C, walkback=False)[1], rtol=1e-4,
                               atol=1e-4)


def _close(a, b, what):
    scale = max(np.abs(b).max(), 1e-3)
    assert np.abs(a - b).max() <= 2e-4 * scale + 1e-6, f"{what}: {np.abs(a - b).max()} vs {scale}"


def test_stored_bptt_equals_autodiff_of_python_unroll(chain_case):
    model = chain_case["model"]
    for p, a, b in zip(model.params, chain_case["g_full"], chain_case["g_full_ref"]):
        assert a.shape == p.get_value().shape
        _close(a, b, p.name)
        assert np.abs(b).max() > 0, p.name
    for p, a, b in zip(model.params, chain_case["g_last"], chain_case["g_last_ref"]):
        _close(a, b, p.name + " (last-step cost)")


def test_last_step_cost_reaches_every_step(chain_case):
    """A cost on x_T alone has a non-zero gradient on every q/p parameter, on every
    step's noise eps_t and on x0: BPTT runs through all T steps."""
    model = chain_case["model"]
    for p, g in zip(model.params, chain_case["g_last"]):
        if p is model.p.logvar_param:       # enters nll only, not the states
            assert g == 0
            continue
        assert np.abs(g).max() > 1e-6, p.name
    g_eps = chain_case["g_eps"]
    assert g_eps.shape == (STEPS, ROWS, Z_DIM)
    assert np.all(np.abs(g_eps).reshape(STEPS, -1).max(axis=1) > 1e-6)
    M = chain_case["inputs"][2]
    g_x0 = chain_case["g_x0"]
    assert np.all(g_x0[M == 1] == 0)            # clamped pixels: x0 does not matter there
    assert np.abs(g_x0[M == 0]).max() > 1e-6


def test_chain_forward_rejects_bad_arguments():
    model = _tiny("bernoulli", 0)
    x0, eps = T.matrix(), T.tensor3()
    with pytest.raises(ValueError, match="unroll"):
        chain.chain_forward(model, x0, eps, unroll="loop")
    with pytest.raises(ValueError, match="steps"):
        chain.chain_forward(model, x0, eps, unroll="python")
    with pytest.raises(ValueError, match="control"):
        chain.chain_forward(model, x0, eps, mask=T.matrix())
    fwd = chain.chain_forward(model, x0, eps)
    with pytest.raises(ValueError, match="store=True"):
        bptt.chain_gradients(model, fwd, None, None, None)


# ---- the guided loop on a 2-D toy ------------------------------------------------------
# D: 8 Gaussian modes (std 0.03) on a circle of radius 0.3 around (0.5, 0.5), inside [0, 1]^2
# (p(x|z) is a Gaussian with a sigmoid mean). The pre-trained VAE has an over-regularised
# KL (Eq. 5's lambda warmed up to 2), so its chain drifts off the modes, into the ring.
MODES, RADIUS, MODE_STD = 8, 0.3, 0.03
_ANGLES = 2 * np.pi * np.arange(MODES) / MODES
CENTRES = np.stack([0.5 + RADIUS * np.cos(_ANGLES), 0.5 + RADIUS * np.sin(_ANGLES)], axis=1)
TOY = dict(pretrain=2000, updates=1000, lr=1e-3, guide_lr=3e-3, chain_rows=40, data_rows=80,
           moment_weight=3.0, chain_eval_steps=30)


def mixture(n, rng):
    k = rng.integers(0, MODES, n)
    return (CENTRES[k] + MODE_STD * rng.standard_normal((n, 2))).astype(floatX)


def rbf_mean(A, B, sigma=0.05):
    """Mean of the RBF kernel exp(-|a - b|^2 / (2 sigma^2)) over all pairs."""
    d2 = (A ** 2).sum(1)[:, None] + (B ** 2).sum(1)[None, :] - 2 * A @ B.T
    return float(np.exp(-np.maximum(d2, 0) / (2 * sigma ** 2)).mean())


def mmd2(X, Y, yy=None):
    """Squared MMD between samples X and Y with an RBF kernel (biased estimate);
    ``yy`` = rbf_mean(Y, Y) when already known."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    return rbf_mean(X, X) + (rbf_mean(Y, Y) if yy is None else yy) - 2 * rbf_mean(X, Y)


def near_mode(X):
    """Fraction of rows within 3 std of a mode centre (data: 0.99)."""
    d = np.sqrt(((X[:, None, :] - CENTRES[None]) ** 2).sum(-1)).min(axis=1)
    return float(np.mean(d < 3 * MODE_STD))


def chain_quality(model, X0, ref):
    S = model.run_chain(X0, TOY["chain_eval_steps"], rng=np.random.default_rng(5))
    steps = range(1, TOY["chain_eval_steps"] + 1)
    yy = rbf_mean(ref, ref)
    return dict(mmd=float(np.mean([mmd2(S[t], ref, yy) for t in steps])),
                near=float(np.mean([near_mode(S[t]) for t in steps])), states=S)


@pytest.fixture(scope="module")
def toy():
    """Pre-train a VAE; from the same state run N 1-step VAE updates and N guided
    6-step updates (the paper's fork, Sec. 7), same learning rate and batch."""
    rng = np.random.default_rng(0)
    D = mixture(20000, rng)
    held_out = mixture(2500, np.random.default_rng(1))
    X0, ref = held_out[:500], held_out[500:]
    model = OneStageModel(2, 2, q_hidden=(32, 32), p_hidden=(32, 32), x_type="gaussian",
                          x_mean=D.mean(0), lr=1e-2, l2=0.0, seed=0)
    # start p(x|z) narrow (logvar -5) so the VAE uses z instead of one broad Gaussian
    model.p.logvar_param.set_value(np.float32(6 * np.arctanh(-5 / 6)))
    for i in range(TOY["pretrain"]):
        model.hyper.set(lam_kl=min(2.0, 0.01 + i / 1000))
        model.train_step(D[rng.integers(0, len(D), 100)])
    pretrained = model.get_state()
    out = {"pretrained": chain_quality(model, X0, ref)}
    model.hyper.set(lr=TOY["lr"])
    for _ in range(TOY["updates"]):
        model.train_step(D[rng.integers(0, len(D), TOY["chain_rows"])])
    out["vae"] = chain_quality(model, X0, ref)
    model.set_state(pretrained)          # the fork: same start for the guided branch
    guide = MaxoutGuide(2, np.random.default_rng([0, 2]), units=64, pool=2, init_scale=2.0,
                        vis_drop=0.0, hid_drop=0.0, bias_noise=0.0)
    loop = VCGLoop(model, guide, steps=6, step_decay=0.1, lr_gen=TOY["lr"],
                   lr_guide=TOY["guide_lr"], moment_weight=TOY["moment_weight"], seed=0)
    history = [loop.train_step(D[rng.integers(0, len(D), TOY["chain_rows"])],
                               D[rng.integers(0, len(D), TOY["data_rows"])])
               for _ in range(TOY["updates"])]
    out["guided"] = chain_quality(model, X0, ref)
    out.update(loop=loop, model=model, D=D, history=history)
    return out


def test_guided_chain_stays_near_the_data(toy):
    """The paper's claim (Sec. 7, Fig. 3): after the fork, guided unrolled training keeps
    long chains on the data; the same number of 1-step VAE updates does not.

    Measured (seed 0), means over chain steps 1..30 from 500 held-out starts:

    ======================  =============  ===========  ====================
    model                   MMD^2          near a mode  share of each mode
    ======================  =============  ===========  ====================
    pre-trained             0.059          0.56         0.11 - 0.14
    + 1000 VAE updates      0.067          0.51         0.11 - 0.14
    + 1000 guided updates   0.024 / 0.025  0.68         0.11 - 0.15 / 0.17
    ======================  =============  ===========  ====================

    (guided: Aesara / PyTensor; the others agree to 1e-4)
    (data: near 0.99, shares 0.125). Ablations on the same loop: gen_weight = 0 (no
    guide; the per-step VAE cost and moment matching only): MMD^2 0.091, near 0.37, so
    the improvement is the guide's. moment_weight = 0: MMD^2 0.033, near 0.69, but the
    chain's mass drifts between modes (shares 0.06 - 0.21): the moment-matching term is
    the paper's remedy for such collapses (Sec. 5). The guide's batch accuracy hovers
    at 0.5: it finds over-dense regions and the generator empties them within a few
    updates. With a well-fitted VAE (lambda = 1) guided and VAE chains were equally
    good; with a faster generator (lr 2e-3) the guide lags and mass drifts.
    """
    vae, guided, pre = toy["vae"], toy["guided"], toy["pretrained"]
    assert guided["mmd"] < 0.5 * vae["mmd"], (guided["mmd"], vae["mmd"])
    assert guided["mmd"] < 0.6 * pre["mmd"], (guided["mmd"], pre["mmd"])
    assert guided["near"] > vae["near"] + 0.1, (guided["near"], vae["near"])
    # and not by collapsing onto a few modes: every mode keeps a fair share
    S = guided["states"][1:].reshape(-1, 2)
    share = np.bincount(np.sqrt(((S[:, None] - CENTRES[None]) ** 2).sum(-1)).argmin(1),
                        minlength=MODES) / len(S)
    assert share.min() > 0.07 and share.max() < 0.2, share


def test_train_step_terms_match_numpy(toy):
    """Every returned term of one update against a NumPy forward on the same noise,
    with the guide's training noise switched on (dropout and bias noise are inputs,
    so no recompilation)."""
    loop, model, D = toy["loop"], toy["model"], toy["D"]
    guide = loop.guide
    saved = (guide.hid_drop, guide.bias_noise)
    guide.hid_drop, guide.bias_noise = 0.5, 0.1
    model.hyper.set(lam_kl=1.5, gamma_kl=0.2)
    try:
        X0, Xd = D[:7], D[100:111]
        before = {v.name: np.array(v.get_value()) for v in loop.state_variables()}
        rng_copy = copy.deepcopy(loop.rng)
        r = loop.train_step(X0, Xd)
        # replay the noise, then compute everything at the pre-update parameters
        live_rng, loop.rng = loop.rng, rng_copy
        eps, noise = loop.draw_noise(7 * model.batch_repeat, 11)
        loop.rng = live_rng
        after = {v.name: np.array(v.get_value()) for v in loop.state_variables()}
        for v in loop.state_variables():
            v.set_value(before[v.name])
        states, nll, kl = np_chain(model, np.repeat(X0, model.batch_repeat, axis=0), eps)
        f, pres, _ = np_guide(guide, np.concatenate([Xd, states.reshape(-1, 2)]),
                              dict(zip(loop._noise_names(), noise)))
        params_now = {v.name: np.array(v.get_value()) for v in loop.state_variables()}
    finally:
        guide.hid_drop, guide.bias_noise = saved
        model.hyper.set(lam_kl=2.0, gamma_kl=0.0)
    f_data, f_gen = f[:11], f[11:]
    # the 2015 code's guide loss, the loop's default: 0.5 softplus(-+2f)
    guide_loss = 0.5 * (np_softplus(-2 * f_data).mean() + np_softplus(2 * f_gen).mean())
    neg = np.maximum(-f_gen, 0)
    gen_loss = np.mean(0.5 * (neg + neg ** 2))                                      # Eq. 7 elastic
    excess = np.maximum(kl - kl.mean(axis=1, keepdims=True), 0)
    step_cost = (nll + 1.5 * kl + 0.2 * excess ** 2).mean(axis=1)                  # Eq. 5 per step
    w = 0.1 ** np.arange(6)
    vae_cost = np.sum(w / w.sum() * step_cost)
    l2 = 0.0
    acc = 0.5 * (np.mean(f_data > 0) + np.mean(f_gen < 0))
    x_gen = states.reshape(-1, 2)
    moment = (np.sum((x_gen.mean(0) - Xd.mean(0)) ** 2)                              # Sec. 5
              + np.sum((np.cov(x_gen.T, bias=True) - np.cov(Xd.T, bias=True)) ** 2))
    guide_cost = 25 * guide_loss + 0.05 * np.mean(f ** 2) + 0.01 * sum(np.mean(a ** 2) for a in pres)
    expect = dict(guide_loss=guide_loss, gen_loss=gen_loss, vae_cost=vae_cost, l2=l2,
                  f_data=f_data.mean(), f_gen=f_gen.mean(), guide_acc=acc, guide_cost=guide_cost,
                  gen_cost=25 * gen_loss + TOY["moment_weight"] * moment + vae_cost + l2,
                  moment=moment, nll=nll.mean(), kl=kl.mean(), nll_first=nll[0].mean(),
                  kl_first=kl[0].mean())
    for k, v in expect.items():
        assert r[k] == pytest.approx(v, rel=2e-4, abs=2e-5), k
    np.testing.assert_allclose(r["nll_steps"], nll.mean(axis=1), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(r["kl_steps"], kl.mean(axis=1), rtol=2e-4, atol=2e-5)
    # the update moved both sides (and the restore above put them back)
    for p in loop.params + loop.guide_params:
        assert not np.array_equal(after[p.name], before[p.name]), p.name
        np.testing.assert_array_equal(params_now[p.name], before[p.name])


def test_chain_gamma_off_leaves_the_squared_kl_term_out_of_the_chain_cost(toy):
    """chain_gamma=False (the 2015 chain cost): each step's VAE cost is
    mean(nll + lambda * KL), with the model's gamma_kl set and unused."""
    model, D = toy["model"], toy["D"]
    state = model.get_state()
    guide = MaxoutGuide(2, np.random.default_rng([4, 2]), units=8, pool=2)
    loop = VCGLoop(model, guide, steps=6, chain_gamma=False, seed=4)
    model.hyper.set(lam_kl=1.5, gamma_kl=2.0)      # large enough that the term would show
    try:
        X0 = D[:7]
        rng_copy = copy.deepcopy(loop.rng)
        r = loop.train_step(X0, D[100:111])
        loop.rng = rng_copy                               # replay the update's noise
        eps, _ = loop.draw_noise(7 * model.batch_repeat, 11)
        model.set_state(state)
        _, nll, kl = np_chain(model, np.repeat(X0, model.batch_repeat, axis=0), eps)
    finally:
        model.set_state(state)
        model.hyper.set(lam_kl=2.0, gamma_kl=0.0)
    w = 0.1 ** np.arange(6)
    w = w / w.sum()
    plain = np.sum(w * (nll + 1.5 * kl).mean(axis=1))
    excess = np.maximum(kl - kl.mean(axis=1, keepdims=True), 0)
    with_gamma = np.sum(w * (nll + 1.5 * kl + 2.0 * excess ** 2).mean(axis=1))
    assert with_gamma - plain > 1e-3                      # the term would show
    assert r["vae_cost"] == pytest.approx(plain, rel=2e-4, abs=2e-5)


def test_learning_rates_separate_guide_and_generator(toy):
    """lr_gen = 0 leaves q and p unchanged, lr_guide = 0 leaves the guide unchanged."""
    loop, D = toy["loop"], toy["D"]
    state = loop.get_state()
    try:
        for frozen, moving, rates in ((loop.params, loop.guide_params, dict(lr_gen=0.0)),
                                      (loop.guide_params, loop.params, dict(lr_guide=0.0))):
            loop.set_state(state)
            loop.hyper.set(**rates)
            loop.train_step(D[:10], D[10:30])
            for p in frozen:
                np.testing.assert_array_equal(p.get_value(), state[p.name])
            assert any(not np.array_equal(p.get_value(), state[p.name]) for p in moving)
    finally:
        loop.set_state(state)


def test_seeded_rng_state_resumes_exactly(toy):
    loop, D = toy["loop"], toy["D"]
    state, rng_state = loop.get_state(), copy.deepcopy(loop.rng.bit_generator.state)
    first = [loop.train_step(D[:10], D[10:30]) for _ in range(3)]
    loop.set_state(state)
    loop.rng.bit_generator.state = rng_state
    again = [loop.train_step(D[:10], D[10:30]) for _ in range(3)]
    for a, b in zip(first, again):
        assert {k: v for k, v in a.items() if isinstance(v, float)} == \
               {k: v for k, v in b.items() if isinstance(v, float)}
    loop.set_state(state)


def test_run_chain_any_length_masks_and_matches_numpy(toy):
    model = toy["model"]
    X0 = mixture(6, np.random.default_rng(3))
    mask = np.tile(np.array([[1.0, 0.0]], floatX), (6, 1))     # clamp the first coordinate
    control = np.full((6, 2), 0.8, floatX)
    S = model.run_chain(X0, 100, mask=mask, control=control, rng=np.random.default_rng(0))
    assert S.shape == (101, 6, 2)
    np.testing.assert_array_equal(S[:, :, 0], np.broadcast_to(control[:, 0], (101, 6)))  # clamped
    assert np.ptp(S[:, :, 1], axis=0).min() > 1e-3               # free: moves
    # sigma_scale scales the noise: 0 gives the deterministic chain of posterior means
    S0 = model.run_chain(X0, 5, sigma_scale=0.0, rng=np.random.default_rng(1))
    ref, _, _ = np_chain(model, X0, np.zeros((5, 6, 2)))
    np.testing.assert_allclose(S0[1:], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(S0[0], X0)
    # the same rng state gives the same chain; the loop's run_chain is the same function
    a = model.run_chain(X0, 4, rng=np.random.default_rng(7))
    b = toy["loop"].run_chain(X0, 4, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert model.run_chain(X0, 0).shape == (1, 6, 2)
    with pytest.raises(ValueError, match="mask"):
        model.run_chain(X0, 3, mask=np.full((6, 2), 2.0))
    with pytest.raises(ValueError, match="X0"):
        model.run_chain(X0[:, :1], 3)
    with pytest.raises(ValueError, match="control"):
        model.run_chain(X0, 3, control=control)


def test_guide_output_is_noise_free(toy):
    loop = toy["loop"]
    X = toy["D"][:9]
    f = loop.guide_output(X)
    ones = {n: np.ones((9, 2)) for n in ("vis",)}
    noise = dict(ones, **{f"hid{i}": np.ones((9, l.units)) for i, l in enumerate(loop.guide.layers)},
                 **{f"bias{i}": np.zeros((9, l.units * l.pool)) for i, l in enumerate(loop.guide.layers)})
    ref_f, _, ref_hidden = np_guide(loop.guide, X, noise)
    np.testing.assert_allclose(f, ref_f, rtol=1e-5, atol=1e-6)
    hidden = loop.guide_hidden(X)
    assert len(hidden) == len(ref_hidden)
    for h, r in zip(hidden, ref_hidden):
        np.testing.assert_allclose(h, r, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="guide_hidden"):
        loop.guide.hidden_outputs(X)        # nets compile nothing


def test_vcgloop_rejects_bad_arguments(toy):
    model, guide = toy["model"], toy["loop"].guide
    for kw, match in ((dict(gen_loss="hinge"), "gen_loss"), (dict(bptt="manual"), "bptt"),
                      (dict(unroll="loop"), "unroll"), (dict(step_decay=-1), "decay"),
                      (dict(momentum=1.0), "momentum"), (dict(steps=0), "steps")):
        with pytest.raises(ValueError, match=match):
            VCGLoop(model, guide, **kw)
    with pytest.raises(ValueError, match="needs a guide"):
        VCGLoop(model, None)
    with pytest.raises(ValueError, match="the guide takes 3 inputs"):
        VCGLoop(model, MaxoutGuide(3, np.random.default_rng(0), units=4, pool=2))
    with pytest.raises(ValueError, match="X_data"):
        toy["loop"].train_step(toy["D"][:4], np.zeros((5, 3), floatX))

"""``VCGLoop.update_terms`` (the guided update as a pure function) against the independent
numpy reference of the 2015 walk phase (``tests/model/ref2015.py``), noise off.

vgsn's loop is set up as the 2015 MNIST script's walk phase (walkout, only step 0 carries
the VAE cost, weights 25 / 25, the 2015 activation penalty with its 10-way layer, the 2015
guide loss, L2 1e-4 on every q/p parameter, no squared KL term); the reference gets vgsn's
own parameter values, so every term and every gradient must agree to float32 rounding.
The one setting the reference is told to differ on: ``l2_logvar_count=1`` (the 2015 code
decayed p's shared log-variance twice; vgsn once, see docs/deviations.md).
"""
import numpy as np
import pytest

from vgsn import OneStageModel, VCGLoop
from vgsn.model.nets import MaxoutGuide

from test_ref2015 import ref

X_DIM, Z_DIM, STARTS, REPEAT, DATA_ROWS, STEPS = 12, 3, 3, 5, 4, 3


def _setup(x_type, guide_loss="code2015", seed=0):
    rng = np.random.default_rng([seed, x_type == "gaussian"])
    model = OneStageModel(X_DIM, Z_DIM, q_hidden=(7, 7), p_hidden=(7, 7), x_type=x_type,
                          batch_repeat=REPEAT, l2=1e-4, l2_on="all", lam_kl=1.2, seed=seed)
    guide = MaxoutGuide(X_DIM, rng, units=5, pool=4, act_penalty="code2015")
    loop = VCGLoop(model, guide, steps=STEPS, step_decay=0.0, guide_loss=guide_loss,
                   chain_gamma=False, lam_l2d=0.05, lam_l2a=0.01, gen_weight=25.0,
                   guide_weight=25.0, momentum=0.0, max_norm=None, seed=seed)
    # The reference's random parameters (every unit used, f on both sides of 0), in vgsn.
    params = ref.random_params(rng, X_DIM, Z_DIM, x_type=x_type)
    params["guide.cls.b"] = np.zeros(10)
    shared = {p.name: p for p in loop.params + loop.guide_params + [guide.classifier_W]}
    assert set(shared) == set(params) - {"guide.cls.b"}
    X0 = rng.uniform(0.05, 0.95, (STARTS, X_DIM)).astype(np.float32)
    X_data = rng.uniform(0.05, 0.95, (DATA_ROWS, X_DIM)).astype(np.float32)
    eps = rng.standard_normal((STEPS, STARTS * REPEAT, Z_DIM)).astype(np.float32)
    for name, var in shared.items():
        value = np.asarray(params[name], np.float32).reshape(var.get_value().shape)
        var.set_value(value)
        params[name] = value.astype(np.float64).reshape(np.shape(params[name]))
    # f = 0 in the widest gap between the middle half of the chain rows: the elastic
    # net is active on part of them and float32 rounding puts none across its kink.
    f_gen = ref.walk_terms(params, X0, X_data, eps, _settings(x_type, guide_loss))["f_gen"]
    u = np.sort(20.0 * np.arctanh(f_gen / 20.0))
    lo, hi = u.size // 4, 3 * u.size // 4
    k = lo + int(np.argmax(u[lo + 1:hi + 1] - u[lo:hi])) + 1
    b = np.float32(-0.5 * (u[k - 1] + u[k]))
    shared["guide.out.b"].set_value(np.array([b], np.float32))
    params["guide.out.b"] = np.array([b], np.float64)
    return loop, params, X0, X_data, eps


def _settings(x_type, guide_loss):
    return dict(x_type=x_type, batch_repeat=REPEAT, cost_decay=0.0, lam_kld=1.2,
                l2_logvar_count=1, guide_loss=guide_loss, act_penalty="code2015")


def _close(a, b, what, rtol=2e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6)
    assert err < rtol, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("x_type,guide_loss", [("bernoulli", "code2015"),
                                               ("gaussian", "code2015"),
                                               ("bernoulli", "paper")])
def test_update_terms_equal_the_numpy_reference_of_the_2015_update(x_type, guide_loss):
    loop, params, X0, X_data, eps = _setup(x_type, guide_loss)
    got = loop.update_terms(X0, X_data, eps=eps)
    st = _settings(x_type, guide_loss)
    want = ref.walk_terms(params, X0, X_data, eps, st)
    _close(got["f"], want["f"], "f")
    assert (want["f_gen"] < 0).any() and (want["f_gen"] > 0).any()
    _close(got["nll"], want["nll"], "nll")
    _close(got["kl"], want["kl"], "kl")
    for name, ref_name in (("guide_loss", "guide_loss"), ("gen_loss", "gen_loss"),
                           ("vae_cost", "vae_cost"), ("act_penalty", "act_penalty"),
                           ("f_sq", "f_sq_mean"), ("l2", "l2"), ("guide_cost", "guide_cost"),
                           ("gen_cost", "gen_cost")):
        _close(got[name], want[ref_name], name)
    other = "paper" if guide_loss == "code2015" else "code2015"
    assert abs(got["guide_loss"] - want[f"guide_loss_{other}"]) > 1e-3   # the forms differ
    ref_grads = ref.walk_gradients(params, X0, X_data, eps, st)
    assert set(got["grads"]) == set(ref_grads) - set(ref.FROZEN_2015)
    for name, g in got["grads"].items():
        assert np.abs(ref_grads[name]).max() > 0, name
        _close(g.reshape(ref_grads[name].shape), ref_grads[name], f"d/d {name}", rtol=1e-3)


def test_update_terms_changes_nothing_and_train_step_follows_its_gradients():
    loop, _, X0, X_data, eps = _setup("bernoulli")
    before = {p.name: p.get_value().copy() for p in loop.params + loop.guide_params}
    state = loop.rng.bit_generator.state
    first = loop.update_terms(X0, X_data)
    again = loop.update_terms(X0, X_data)
    assert first["gen_cost"] == again["gen_cost"]
    assert loop.rng.bit_generator.state == state
    for p in loop.params + loop.guide_params:
        np.testing.assert_array_equal(p.get_value(), before[p.name])
    # With zero guide noise and zero eps, one plain-SGD train step moves each parameter
    # by -lr * the gradient update_terms reports (no momentum, no clipping).
    guide = loop.guide
    guide.vis_drop = guide.hid_drop = guide.bias_noise = 0.0
    zeros = np.zeros((STEPS, STARTS * REPEAT, Z_DIM), np.float32)

    def draw(rows, data_rows):
        noise = guide.draw_noise(np.random.default_rng(0), data_rows + STEPS * rows)
        return zeros, [noise[n] for n in loop._noise_names()]

    loop._draw_noise = draw
    loop.hyper.set(lr_gen=1e-3, lr_guide=2e-3)
    loop.train_step(X0, X_data)
    for p in loop.params + loop.guide_params:
        step = p.get_value() - before[p.name]
        lr = 2e-3 if p.name.startswith("guide.") else 1e-3
        want = -lr * first["grads"][p.name]
        np.testing.assert_allclose(step, want, rtol=2e-3, atol=1e-9 + 1e-3 * np.abs(want).max(),
                                   err_msg=p.name)


def test_update_terms_says_what_it_takes():
    loop, _, X0, X_data, _ = _setup("bernoulli")
    with pytest.raises(ValueError, match="noise must be one of"):
        loop.update_terms(X0, X_data, noise="on")
    with pytest.raises(ValueError, match="eps must have shape"):
        loop.update_terms(X0, X_data, eps=np.zeros((1, 2, 3)))

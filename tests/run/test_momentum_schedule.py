"""The TFD script's pre-training momentum schedule (issue 15): ``schedules.momentum_at``,
the preset fields that ask for it, the model's shared ``vae.momentum`` (only when
scheduled: a constant momentum keeps its graph and state names), the update rule
with a changing beta against numpy, and a stopped run resumed after the switch.

The 2015 rule (``TFDWalkoutTest.py`` at ICML-2015 f1bf969, l. 193-201, 216-217):
pre-training update i uses ``mom_1 = min(1, i/5000) * (0.5 if i < 50000 else 0.9)``.
"""
import copy
import importlib.util
from dataclasses import replace

import numpy as np
import pytest

from vgsn.run import presets as P
from vgsn.run import config
from vgsn.run import schedules
from vgsn.run import train
from vgsn.run import loop
from vgsn.run import folder
from vgsn.backend import T, floatX, function, shared
from vgsn.run.checkpoints import load_run_checkpoint
from vgsn.model.vae import OneStageModel
from vgsn.model.updates import HyperParams, sgd
from _runcheck import StopAt, same_arrays  # noqa: E402  (tests/_runcheck.py)


def _script_momentum(i):
    """The script's pre-training momentum at update i, restated from its loop."""
    scale = min(1.0, float(i) / 5000.0)
    if i < 50000:
        m = 0.5
    elif i < 10000:        # the script's second branch: never reached (i >= 50000 here)
        m = 0.7
    else:
        m = 0.9
    return scale * m


UPDATES = (0, 1, 2500, 4999, 5000, 5001, 49999, 50000, 50001, 120000)


# ---- the schedule ---------------------------------------------------------------------

@pytest.mark.parametrize("u", UPDATES)
def test_momentum_at_is_the_tfd_scripts_rule(u):
    assert schedules.momentum_at(u, 0.5, 0.9, 50_000, 5_000) == pytest.approx(
        _script_momentum(u), abs=1e-15)
    c = P.code2015(P.get_preset("tfd-ork"))
    assert schedules.vae_hyper_at(c, u)["momentum"] == pytest.approx(_script_momentum(u),
                                                                     abs=1e-15)


def test_momentum_at_without_switch_or_warmup_and_bad_updates():
    assert [schedules.momentum_at(u, 0.5) for u in (0, 7, 10 ** 6)] == [0.5, 0.5, 0.5]
    assert schedules.momentum_at(99, 0.5, 0.9, switch=0) == 0.5        # 0: never switches
    assert schedules.momentum_at(99, 0.5, None, switch=50) == 0.5      # None: nothing to switch to
    assert schedules.momentum_at(50, 0.5, 0.9, switch=50) == 0.9
    assert schedules.momentum_at(3, 0.8, warmup=4) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="update must be >= 0, got -1"):
        schedules.momentum_at(-1, 0.5)


def test_presets_schedule_momentum_only_under_code2015_for_tfd():
    c = P.code2015(P.get_preset("tfd-ork")).validate()
    assert (c.pretrain_momentum, c.pretrain_momentum_late, c.pretrain_momentum_switch,
            c.pretrain_momentum_warmup) == (0.5, 0.9, 50_000, 5_000)
    assert c.momentum_scheduled
    # pre-training's model and the vae branch hold the schedule; the guided chain's model
    # is the Gaussian one with a constant momentum, and the loop runs the script's 0.9
    # unscaled (l. 369-370)
    assert P.model_args(c)["momentum_scheduled"] and P.model_args(c)["x_type"] == "bernoulli"
    chain = P.chain_model_args(c)
    assert (chain["x_type"], chain["momentum_scheduled"]) == ("gaussian", False)
    assert P.vae_branch_model_args(c) == dict(chain, momentum_scheduled=True)
    assert P.loop_args(c)["momentum"] == 0.9 and P.rebuilt_at_fork(c)
    assert not any("momentum" in line for line in P.CODE2015_TFD_UNDEFINED)
    # everything else keeps a constant momentum (a constant of the compiled update)
    others = [P.get_preset(n) for n in P.PRESETS] + [P.code2015(P.get_preset("mnist1"))]
    for p in others:
        assert not p.momentum_scheduled, p.name
        assert "momentum" not in schedules.vae_hyper_at(p, 123)
        assert P.model_args(p)["momentum_scheduled"] is False
    assert not P.rebuilt_at_fork(P.code2015(P.get_preset("mnist1")))


@pytest.mark.parametrize("changes, message", [
    (dict(pretrain_momentum_late=0.9), "pretrain_momentum_late and pretrain_momentum_switch "
                                       "go together"),
    (dict(pretrain_momentum_switch=10), "go together .*got None and 10"),
    (dict(pretrain_momentum_late=1.0, pretrain_momentum_switch=10),
     r"pretrain_momentum_late must be in \[0, 1\) or None, got 1.0"),
    (dict(pretrain_momentum_switch=-1), "pretrain_momentum_switch must be >= 0"),
    (dict(pretrain_momentum_warmup=-5), "pretrain_momentum_warmup must be >= 0"),
    (dict(pretrain_momentum_warmup=2.5), "pretrain_momentum_warmup must be a whole number"),
])
def test_bad_momentum_schedules_are_one_line_errors(changes, message):
    with pytest.raises(ValueError, match=message) as err:
        replace(P.get_preset("tiny"), **changes).validate()
    assert "\n" not in str(err.value)


def test_old_configs_load_without_the_new_fields():
    old = P.get_preset("tiny").to_dict()
    for name in ("pretrain_momentum_late", "pretrain_momentum_switch", "pretrain_momentum_warmup"):
        del old[name]
    c = P.Preset.from_dict(old).validate()
    assert not c.momentum_scheduled and P.model_args(c)["momentum_scheduled"] is False
    assert config.parse_value("pretrain_momentum_late", "none") is None
    assert config.parse_value("pretrain_momentum_switch", "5e4") == 50_000


# ---- the model ---------------------------------------------------------------------------

def _data(rows=12, dim=10, seed=0):
    return (np.random.default_rng(seed).random((rows, dim)) > 0.5).astype(floatX)


def _model(**kw):
    args = dict(q_hidden=(7,), p_hidden=(6,), batch_repeat=2, momentum=0.5, max_norm=1.0,
                lr=2e-2, l2=1e-3, seed=5)
    args.update(kw)
    return OneStageModel(10, 3, **args)


def test_a_constant_momentum_keeps_its_graph_and_state_names():
    m = _model().compile(("train_step",))
    assert "momentum" not in m.hyper and m.hyper.names() == ["lr", "lam_kl", "gamma_kl", "l2"]
    expected = ([p.name for p in m.params] + [f"{p.name}.velocity" for p in m.params]
                + ["vae.lr", "vae.lam_kl", "vae.gamma_kl", "vae.l2"])
    assert [v.name for v in m.state_variables()] == expected
    # the update's only shared inputs are the state: no momentum variable in the graph
    assert "vae.momentum" not in {v.name for v in m._fn("train_step").get_shared()}
    s = _model(momentum_scheduled=True).compile(("train_step",))
    assert [v.name for v in s.state_variables()] == expected + ["vae.momentum"]
    assert s.hyper["momentum"] == 0.5
    assert "vae.momentum" in {v.name for v in s._fn("train_step").get_shared()}
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        _model(momentum=1.0, momentum_scheduled=True)


def test_a_scheduled_momentum_held_at_half_matches_the_constant_to_float32_rounding():
    """0.5 and 1 - 0.5 are exact, so the two updates are the same arithmetic; they are
    not bit-identical on the C back-end because gcc contracts ``a * b + c`` into fused
    multiply-adds (one rounding instead of two) differently when beta is a literal
    than when it is a variable: a few float32 ulps after some steps (measured: at most
    5, PyTensor 3.3.8; with ``-ffp-contract=off`` they agree bit for bit)."""
    X = _data()
    const, sched = _model(), _model(momentum_scheduled=True)
    first = True
    for _ in range(6):
        sched.hyper.set(momentum=0.5)
        a, b = const.train_step(X[:4]), sched.train_step(X[:4])
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), k
        if first:   # zero velocities: m <- 0.5 g, no product to contract differently
            sa, sb = const.get_state(), sched.get_state()
            for k in sa:
                np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
            first = False
    sa, sb = const.get_state(), sched.get_state()
    assert set(sb) - set(sa) == {"vae.momentum"}
    for k in sa:
        np.testing.assert_allclose(sa[k], sb[k], rtol=1e-5, atol=1e-8, err_msg=k)


def _clip(g, max_norm):
    norm = np.sqrt(np.sum(np.square(g, dtype=np.float64)))
    return g * min(1.0, max_norm / max(norm, 1e-12))


def test_sgd_with_a_shared_beta_is_numpys_momentum_loop():
    # An analytic gradient (cost 0.5 ||p - t||^2: g = p - t), so numpy needs nothing
    # of the library; the clip (max_norm 1) acts on the first steps.
    rng = np.random.default_rng(2)
    p0, t = rng.normal(size=(3, 4)).astype(floatX), rng.normal(size=(3, 4)).astype(floatX)
    p = shared(p0.copy(), name="p")
    hp = HyperParams(prefix="t", momentum=0.0, lr=0.3)
    updates, vel = sgd(0.5 * T.sum(T.square(p - t)), [p], hp.lr, momentum=hp.momentum, max_norm=1.0)
    step = function([], [], updates=updates)
    ref_p, ref_v = p0.astype(np.float64), np.zeros((3, 4))
    for beta in (0.0, 0.25, 0.5, 0.9, 0.6, 0.95):
        hp.set(momentum=beta)
        step()
        g = _clip(ref_p - t, 1.0)
        ref_v = beta * ref_v + (1.0 - beta) * g
        ref_p = ref_p - 0.3 * ref_v
        np.testing.assert_allclose(vel[0].get_value(), ref_v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.get_value(), ref_p, rtol=1e-5, atol=1e-6)


def test_the_models_update_with_a_changing_beta_is_numpys_momentum_loop():
    m = _model(momentum=0.0, momentum_scheduled=True)
    X = _data()[:4]
    # the gradient of the same cost at the current parameters (no update attached)
    x, eps = T.matrix("x", dtype=floatX), T.matrix("eps", dtype=floatX)
    nll, kl, _, _ = m.vae_terms(T.repeat(x, m.batch_repeat, axis=0), eps)
    grads, _ = m.add_weight_decay(T.grad(m.vae_cost(nll, kl), m.params))
    grad_fn = function([x, eps], grads)
    shadow = copy.deepcopy(m.rng)          # draws the eps train_step draws
    params = [p.get_value().astype(np.float64) for p in m.params]
    vel = [np.zeros_like(v) for v in params]
    lr = m.hyper["lr"]
    for beta in (0.0, 0.5, 0.5, 0.9, 0.3, 0.9):
        eps_np = shadow.standard_normal((X.shape[0] * m.batch_repeat, m.z_dim), dtype=np.float32)
        g = grad_fn(X, eps_np)              # at the parameters before this update
        m.hyper.set(momentum=beta)
        m.train_step(X)
        for i, gi in enumerate(g):
            vel[i] = beta * vel[i] + (1.0 - beta) * _clip(np.asarray(gi, np.float64), 1.0)
            params[i] = params[i] - lr * vel[i]
        for p, v, ref_p, ref_v in zip(m.params, m.velocities, params, vel):
            np.testing.assert_allclose(v.get_value(), ref_v, rtol=1e-4, atol=1e-6, err_msg=v.name)
            np.testing.assert_allclose(p.get_value(), ref_p, rtol=1e-4, atol=1e-6, err_msg=p.name)
            p.set_value(np.asarray(ref_p, floatX))   # no drift between the two over steps
            v.set_value(np.asarray(ref_v, floatX))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_changing_beta_gives_the_same_updates_on_jax_and_c():
    from vgsn import backend
    if backend.NAME != "pytensor":
        pytest.skip("the JAX mode needs PyTensor")
    X = _data()[:4]
    models = {mode: _model(momentum_scheduled=True).use_mode(mode) for mode in ("c", "jax")}
    for beta in (0.0, 0.5, 0.9, 0.3):
        for m in models.values():
            m.hyper.set(momentum=beta)
            m.train_step(X)
    sc, sj = models["c"].get_state(), models["jax"].get_state()
    assert sorted(sc) == sorted(sj)
    for k in sc:
        np.testing.assert_allclose(sj[k], sc[k], rtol=2e-5, atol=2e-6, err_msg=k)


def test_old_and_new_states_load_both_ways():
    X = _data()
    const = _model()
    const.compile(("train_step",)).train_step(X[:4])
    old = const.get_state()                      # a checkpoint without vae.momentum
    again = _model().compile(("train_step",))
    again.set_state(old)
    assert sorted(again.get_state()) == sorted(old)
    sched = _model(momentum=0.25, momentum_scheduled=True).compile(("train_step",))
    sched.set_state(old)                         # keeps its own momentum
    assert sched.hyper["momentum"] == 0.25
    np.testing.assert_array_equal(sched.get_state()["q.h0.W"], old["q.h0.W"])
    sched.hyper.set(momentum=0.9)
    plain = _model().compile(("train_step",))
    plain.set_state(sched.get_state())           # the extra name is ignored
    assert "momentum" not in plain.hyper
    # a fork carries the momentum as it is now, scheduled or not as asked
    f = sched.fork()
    assert f.hyper["momentum"] == pytest.approx(0.9) and f.config["momentum_scheduled"]
    g = sched.fork(momentum_scheduled=False)
    assert "momentum" not in g.hyper and g.config["momentum"] == pytest.approx(0.9)


# ---- a run: the TFD script's switch in miniature, stopped and resumed -----------------------

def _mini(**kw):
    """code2015 for TFD in miniature: Bernoulli pre-training, a Gaussian chain with the
    loop's own momentum 0.9, the pre-training momentum 0.5 -> 0.9 at update 10 with an
    8-update warm-up, a 1-step VAE branch continuing it."""
    return replace(P.get_preset("tiny"), pretrain_x_type="bernoulli", x_type="gaussian",
                   pretrain_batch_repeat=3, momentum=0.5, pretrain_momentum=0.5,
                   pretrain_momentum_late=0.9, pretrain_momentum_switch=10,
                   pretrain_momentum_warmup=8, chain_momentum=0.9, vae_branch=True,
                   kl_warmup_from=0.0, figures=False, score_chains=0, iwll_binarized=False,
                   pretrain_updates=20, chain_updates=10, checkpoint_every=5, eval_every=10,
                   **kw)


def _expected(u):
    return float(np.float32(schedules.momentum_at(u, 0.5, 0.9, 10, 8)))


def _metrics(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.name == "metrics.jsonl" or p.suffix == ".csv"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("momentum") / "ref"
    train.run(_mini(), out, quiet=True)
    return out


def test_the_run_writes_the_scheduled_momentum_into_the_models(reference):
    import json
    rows = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    got = {(r["branch"], r["update"]): r.get("momentum") for r in rows if r["kind"] == "train"}
    # a row at update u reports the hyperparameters of its last update, u - 1
    for (branch, u), value in got.items():
        if branch == "guided":
            assert value is None                 # the loop's momentum is its own constant
        else:
            assert value == pytest.approx(_expected(u - 1), abs=0), (branch, u)
    assert {b for b, _ in got} == {"pretrain", "guided", "vae"}
    pre, _ = load_run_checkpoint(reference / "pretrained.h5")
    assert float(pre["model/vae.momentum"]) == _expected(19)
    final, meta = load_run_checkpoint(reference / "checkpoint.h5")
    assert meta["forked"] and "model/vae.momentum" not in final
    assert float(final["vae/vae.momentum"]) == _expected(29) == float(np.float32(0.9))


def test_load_models_builds_the_model_each_checkpoint_holds(reference):
    pre = train.load_models(reference / "pretrained.h5")
    assert set(pre) == {"model"}
    m = pre["model"]
    assert (m.x_type, m.batch_repeat, m.p.logvar_param) == ("bernoulli", 3, None)
    assert m.hyper["momentum"] == _expected(19)
    arrays, _ = load_run_checkpoint(reference / "pretrained.h5")
    np.testing.assert_array_equal(m.p.mean_head.W.get_value(), arrays["model/p.mean.W"])
    after = train.load_models(reference)
    assert (after["model"].x_type, after["vae"].x_type) == ("gaussian", "gaussian")
    assert "momentum" not in after["model"].hyper and after["vae"].hyper["momentum"] == _expected(29)
    assert np.all(np.isfinite(after["model"].sample_prior(2, rng=np.random.default_rng(0))))


def test_a_run_stopped_after_the_switch_resumes_bit_for_bit(tmp_path, reference):
    # Stopped twice, one run (each resume costs a run's compile): at 17, in pre-training,
    # resumed from update 15 (after the switch at 10); then at 27, in the vae branch after
    # the fork, resumed from update 25; then to the end.
    out = tmp_path / "run"
    with pytest.raises(folder.Interrupted):
        train.run(_mini(), out, quiet=True, hooks=StopAt(17))
    for stop, resume_hooks in ((17, StopAt(27)), (27, None)):
        state, meta = load_run_checkpoint(out / "checkpoint.h5")
        last = stop - stop % 5
        assert meta["update"] == last
        key = "model/vae.momentum" if last <= 20 else "vae/vae.momentum"
        assert float(state[key]) == _expected(last - 1)    # part of the checkpointed state
        if resume_hooks is None:
            train.resume(out, quiet=True)
        else:
            with pytest.raises(folder.Interrupted):
                train.resume(out, quiet=True, hooks=resume_hooks)
    assert _metrics(out) == _metrics(reference)
    same_arrays(out / "checkpoint.h5", reference / "checkpoint.h5")
    same_arrays(out / "pretrained.h5", reference / "pretrained.h5")

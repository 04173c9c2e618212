"""The same graphs on the C, JAX and Numba back-ends (issue 13; PyTensor only).

Each object is built for its mode in this process (``Compiled.use_mode``), from the
same seed, so the two back-ends see the same parameters and the same host-drawn
noise; they must agree to float32 rounding. The kill / resume test runs the tiny
preset in child processes with ``--backend jax`` and compares bit for bit.
"""
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vgsn import backend

pytestmark = [
    pytest.mark.skipif(backend.NAME != "pytensor", reason="JAX and Numba modes need PyTensor"),
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed"),
]

from _paths import ROOT  # noqa: E402
RTOL, ATOL = 2e-5, 2e-5          # float32: a few ulps after a handful of updates


def _model(mode, x_type="gaussian", momentum=0.5):
    from vgsn.model.vae import OneStageModel
    return OneStageModel(20, 4, q_hidden=(16, 12), p_hidden=(12, 16), x_type=x_type,
                         momentum=momentum, seed=3).use_mode(mode)


def _loop(model, mode, **kw):
    from vgsn.model.vcg import VCGLoop
    from vgsn.model.nets import MaxoutGuide
    guide = MaxoutGuide(model.x_dim, np.random.default_rng(5), units=8, pool=2)
    return VCGLoop(model, guide, steps=3, momentum=0.5, **kw).use_mode(mode)


def _data(rows=40, dim=20):
    return np.random.default_rng(0).random((rows, dim), dtype=np.float32)


def _close(a, b, what):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=RTOL, atol=ATOL, err_msg=what)


def _states_close(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        _close(a[k], b[k], k)


@pytest.mark.parametrize("x_type", ["gaussian", "bernoulli"])
def test_model_functions_agree_on_c_and_jax(x_type):
    X = _data()
    got = {}
    for mode in ("c", "jax"):
        m = _model(mode, x_type)
        costs = [m.train_step(X[:10]) for _ in range(3)]
        mu, lv = m.encode(X)
        got[mode] = dict(costs=[[c[k] for k in sorted(c)] for c in costs], mu=mu, lv=lv,
                         dec=m.decode(X[:7, :4]), fe=m.free_energy_terms(X, 2, batch_rows=16),
                         kl=m.posterior_kl(X), lpx=m.log_px_given_z(X[:5], X[:5, :4]),
                         chain=m.run_chain(X[:6], 4, mask=(X[0] > 0.5).astype(np.float32)),
                         state=m.get_state())
    c, j = got["c"], got["jax"]
    for key in ("costs", "mu", "lv", "dec", "kl", "lpx", "chain"):
        _close(c[key], j[key], key)
    _close(c["fe"][0], j["fe"][0], "nll")
    _close(c["fe"][1], j["fe"][1], "kl")
    _states_close(c["state"], j["state"])


def test_guided_update_agrees_on_c_and_jax_and_is_deterministic():
    X = _data()
    got = {}
    for mode in ("c", "jax", "jax"):
        loop = _loop(_model(mode), mode)
        outs = [loop.train_step(X[:4], X[4:10]) for _ in range(3)]
        rows = [[o[k] for k in sorted(o) if not k.endswith("_steps")] + list(o["nll_steps"])
                for o in outs]
        again = got.setdefault(mode, (rows, loop.get_state(), loop.guide_output(X),
                                      loop.guide_hidden(X)))
        if again[0] is not rows:     # the second JAX loop: the same seed, bit for bit
            np.testing.assert_array_equal(again[0], rows)
            for k, v in loop.get_state().items():
                np.testing.assert_array_equal(again[1][k], v, err_msg=k)
    (rc, sc, fc, hc), (rj, sj, fj, hj) = got["c"], got["jax"]
    _close(rc, rj, "train_step outputs")
    _states_close(sc, sj)
    _close(fc, fj, "guide_output")
    for a, b in zip(hc, hj):
        _close(a, b, "guide_hidden")


def test_jax_train_step_compiles_once_per_batch_shape():
    X = _data()
    loop = _loop(_model("jax"), "jax", walkback=True)
    loop.train_step(X[:4], X[4:10])
    loop.train_step(X[10:14], X[14:20])
    loop.train_step(X[:3], X[4:10])
    assert sorted(k for k in loop._fns if k[0] == "train_step") == [
        ("train_step", (3, 6)), ("train_step", (4, 6))]


def test_evaluation_agrees_on_c_and_jax():
    from vgsn.eval import bound as ev
    X = _data(30)
    got = {}
    for mode in ("c", "jax"):
        m = _model(mode, "bernoulli")
        m.train_step(X[:10])
        got[mode] = (ev.importance_weighted_ll(m, X, 8, batch_rows=16,
                                               rng=np.random.default_rng(1)),
                     ev.importance_weighted_ll(m, X, 4, binarize=True,
                                               rng=np.random.default_rng(2)))
    for a, b in zip(got["c"], got["jax"]):
        _close(a, b, "iwll")


def test_momentum_set_before_the_jax_train_step_is_built_is_kept():
    """In the JAX mode the guided train_step (and with it sgd's velocities) is built at
    its first call; a state loaded before that (a resume) must keep its momentum."""
    X = _data()
    a = _loop(_model("jax"), "jax")
    for _ in range(2):
        a.train_step(X[:4], X[4:10])
    saved = a.get_state()
    assert any(k.endswith(".velocity") and np.abs(v).max() > 0 for k, v in saved.items())
    b = _loop(_model("jax"), "jax")
    b.set_state(saved)
    assert sorted(b.get_state()) == sorted(saved)       # kept until the step is built
    b.rng.bit_generator.state = a.rng.bit_generator.state
    ra, rb = a.train_step(X[:4], X[4:10]), b.train_step(X[:4], X[4:10])
    assert ra["gen_cost"] == rb["gen_cost"]
    sa, sb = a.get_state(), b.get_state()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_numba_guided_update_runs_and_agrees_with_c():
    """Numba compiles slowly (minutes cold for the guided update even at these sizes;
    its disk cache makes a second run quick), so one smoke test: the guided update."""
    X = _data()
    outs = {}
    for mode in ("c", "numba"):
        loop = _loop(_model(mode), mode)
        o = loop.train_step(X[:4], X[4:10])
        outs[mode] = [o[k] for k in sorted(o) if not k.endswith("_steps")]
    _close(outs["c"], outs["numba"], "numba train_step")


def _run_script(args, kill_at=None, timeout=600, **env_extra):
    script = ["run_mnist.py"] if kill_at is None else ["tests/_kill_at.py", str(kill_at)]
    env = dict(os.environ, **env_extra)
    if kill_at is not None:     # the driver imports vgsn.run.train before its cli_main runs
        env["VGSN_MODE"] = "JAX"
    return subprocess.run([sys.executable, *script, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_sigkill_then_resume_on_jax_matches_an_uninterrupted_run(tmp_path):
    import json

    from vgsn.run import presets as P
    from vgsn.run.checkpoints import load_run_checkpoint
    c = P.get_preset("tiny")
    ref = tmp_path / "reference"
    done = _run_script(["--preset", "tiny", "--out", str(ref), "--quiet", "--no-figures",
                        "--backend", "jax"])
    assert done.returncode == 0, done.stderr[-2000:]
    recorded = json.loads((ref / "config.json").read_text())
    assert recorded["backend"] == "jax"
    assert recorded["matmul_precision"] == "highest"
    assert "--xla_gpu_deterministic_ops=true" in recorded["xla_flags"]
    assert "mode jax" in (ref / "report.md").read_text()
    assert "matmul precision highest" in (ref / "report.md").read_text()
    kill_at = int(np.random.default_rng().integers(c.checkpoint_every + 1, c.total_updates))
    out = tmp_path / "killed"
    # The killed and resumed runs draw their noise two updates ahead (vgsn.model.noise, what a
    # GPU run does), the reference in place: the same numbers either way, and a checkpoint
    # saves the generator where the in-place run has it.
    killed = _run_script(["--preset", "tiny", "--out", str(out), "--quiet", "--no-figures",
                          "--backend", "jax"], kill_at, VGSN_NOISE_AHEAD="2")
    assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-2000:])
    resumed = _run_script(["--resume", str(out), "--quiet"],       # the run's own back-end
                          VGSN_NOISE_AHEAD="2")
    assert resumed.returncode == 0, (kill_at, resumed.stderr[-2000:])
    assert "back-end" not in (out / "log.txt").read_text()      # no change of back-end said
    a, meta_a = load_run_checkpoint(ref / "checkpoint.h5")
    b, meta_b = load_run_checkpoint(out / "checkpoint.h5")
    assert meta_a["backend"] == meta_b["backend"] == "jax"
    assert meta_a["numerics"]["matmul_precision"] == meta_b["numerics"]["matmul_precision"] \
        == "highest"
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k}, killed at update {kill_at}")
    metrics = {p.name: p.read_bytes() for p in sorted(ref.iterdir()) if p.name == "metrics.jsonl"}
    assert metrics == {p.name: p.read_bytes() for p in sorted(out.iterdir())
                       if p.name == "metrics.jsonl"}


def test_every_product_of_the_jax_guided_train_step_is_full_float32():
    """Lowers the compiled guided train step (PyTensor's JAX linker: its graph as one jax
    function) and checks that each dot_general, in the scans' bodies too, asks for
    HIGHEST precision: what keeps a GPU from computing it in TF32."""
    import jax
    from pytensor.link.jax.dispatch import jax_funcify
    X = _data()
    loop = _loop(_model("jax"), "jax")
    loop.train_step(X[:4], X[4:10])
    fn = loop._fns[("train_step", (4, 6))]
    jfn = jax_funcify(fn.maker.fgraph)
    # The shared variables' values; zeros for the explicit inputs (static shapes).
    args = [s.data if s.data is not None else np.zeros(v.type.shape, v.type.dtype)
            for s, v in zip(fn.input_storage, fn.maker.fgraph.inputs, strict=True)]
    text = jax.jit(jfn).lower(*args).as_text()
    dots = [ln for ln in text.splitlines() if "dot_general" in ln]
    assert len(dots) >= 12                   # q, p and the guide: forward and backward
    assert all("precision = [HIGHEST, HIGHEST]" in ln for ln in dots), \
        [ln for ln in dots if "HIGHEST" not in ln][:2]


def test_a_tf32_run_records_its_precision_and_resume_keeps_it(tmp_path):
    import json
    out = tmp_path / "tf32"
    done = _run_script(["--preset", "tiny", "--updates", "4", "--out", str(out), "--quiet",
                        "--no-figures", "--backend", "jax", "--matmul-precision", "tf32"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["matmul_precision"] == "tensorfloat32"
    assert "matmul precision tensorfloat32" in (out / "report.md").read_text()
    from vgsn.run.cli import _recorded_precision
    assert _recorded_precision(out) == "tf32"          # what --resume uses unless given

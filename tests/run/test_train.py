"""The training loop: schedules, presets, HDF5 checkpoints, a whole tiny run,
exact resume after SIGKILL, divergence, damaged checkpoints."""
import inspect
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vgsn.run import cli
from vgsn.run import snapshots
from vgsn.run import train
from vgsn.run import schedules
from vgsn.run import loop
from vgsn.run import folder
from vgsn.run import presets as P
from vgsn.run import config
from vgsn.model.vae import OneStageModel
from vgsn.model.vcg import VCGLoop
from vgsn.model.nets import MaxoutGuide
from vgsn.run.checkpoints import CheckpointError, load_run_checkpoint, save_run_checkpoint

from _paths import ROOT  # noqa: E402


# ---- schedules ----------------------------------------------------------------

def test_lr_schedule_warms_up_linearly_then_decays_every_n():
    # MNIST pre-training (SPEC section 6): 5e-4, warm-up 10k, x0.9 every 20k.
    f = lambda u: schedules.lr_at(u, 5e-4, 10_000, 0.9, 20_000)  # noqa: E731
    assert f(0) == pytest.approx(5e-4 / 10_000)
    assert f(4_999) == pytest.approx(2.5e-4)
    assert f(9_999) == pytest.approx(5e-4)
    assert f(19_999) == pytest.approx(5e-4)
    assert f(20_000) == pytest.approx(4.5e-4)
    assert f(45_000) == pytest.approx(5e-4 * 0.81)
    # no warm-up, no decay
    assert schedules.lr_at(123_456, 4e-4) == 4e-4
    assert schedules.lr_at(7, 1.0, 0, 0.5, 0) == 1.0
    with pytest.raises(ValueError):
        schedules.lr_at(-1, 1.0)


def test_kl_weight_rises_from_one_to_lambda():
    assert schedules.kl_weight_at(0, 4.0, 10_000) == 1.0
    assert schedules.kl_weight_at(5_000, 4.0, 10_000) == pytest.approx(2.5)
    assert schedules.kl_weight_at(10_000, 4.0, 10_000) == 4.0
    assert schedules.kl_weight_at(99_999, 24.0, 10_000) == 24.0
    assert schedules.kl_weight_at(0, 24.0, 0) == 24.0
    assert schedules.kl_weight_at(50, 1.0, 100) == 1.0


def test_patch_mask_occludes_one_square_inside_the_border():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = snapshots.patch_mask((28, 28), rng).reshape(28, 28)
        rows, cols = np.nonzero(m == 0)
        assert len(rows) == 16 * 16
        assert rows.min() >= 1 and cols.min() >= 1 and rows.max() <= 26 and cols.max() <= 26
    assert (snapshots.patch_mask((8, 8), rng) == 0).sum() == 5 * 5


# ---- presets ------------------------------------------------------------------

@pytest.mark.parametrize("name,x_type,hidden,z,pre,chain,lam,gamma,vae", [
    ("mnist1", "bernoulli", 1500, 64, 100_000, 100_000, 1.0, 0.0, True),
    ("mnist2-ork", "gaussian", 1000, 50, 80_000, 120_000, 4.0, 0.1, False),
    ("mnist2-var", "gaussian", 1000, 50, 80_000, 120_000, 1.0, 0.0, False),
    ("mnist2-kl24", "gaussian", 1000, 50, 80_000, 120_000, 24.0, 0.1, False),
    ("tfd-ork", "gaussian", 2000, 100, 150_000, 60_000, 5.0, 0.1, False),
    ("tfd-kl30", "gaussian", 2000, 100, 150_000, 60_000, 30.0, 0.1, False),
])
def test_paper_presets_carry_the_papers_numbers(name, x_type, hidden, z, pre, chain, lam, gamma,
                                               vae):
    p = P.get_preset(name).validate()
    assert (p.x_type, p.q_hidden, p.p_hidden, p.z_dim) == (x_type, (hidden, hidden),
                                                           (hidden, hidden), z)
    assert (p.pretrain_updates, p.chain_updates, p.vae_branch) == (pre, chain, vae)
    assert (p.lam_kl, p.gamma_kl) == (lam, gamma)
    assert (p.batch_size, p.batch_repeat, p.steps, p.momentum) == (100, 5, 6, 0.0)
    assert (p.eval_every, p.scatter_every, p.gpde_samples) == (10_000, 30_000, 10_000)
    assert (p.gen_loss, p.gen_weight, p.guide_weight, p.lam_l2d) == ("elastic", 25.0, 25.0, 0.05)
    assert (p.pretrain_l2, p.chain_l2, p.kl_warmup) == (1e-5, 1e-4, 10_000)
    assert (p.guide_units, p.guide_pool) == (300, 4)
    assert p.dataset == ("tfd" if name.startswith("tfd") else "mnist")


def test_code2015_switches_only_the_documented_fields():
    base = P.get_preset("mnist2-ork")
    code = P.code2015(base)
    diff = {k for k, v in code.to_dict().items() if base.to_dict()[k] != v}
    assert diff == {"momentum", "step_decay", "chain_lr_decay_every", "l2_on", "chain_gamma",
                    "guide_act_penalty"}
    assert (code.momentum, code.step_decay, code.chain_lr_decay_every, code.l2_on,
            code.chain_gamma) == (0.5, 0.0, 0, "all", False)
    tfd = P.code2015(P.get_preset("tfd-ork"))
    assert (tfd.batch_size, tfd.steps, tfd.step_decay) == (400, 5, 0.1)


def test_preset_round_trips_through_a_dict_and_rejects_bad_values():
    p = P.get_preset("tiny")
    assert P.Preset.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ValueError, match="unknown preset field"):
        P.Preset.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="momentum must be in"):
        replace(p, momentum=1.0).validate()
    with pytest.raises(ValueError, match="pretrain_updates must be >= 0"):
        replace(p, pretrain_updates=-1).validate()
    assert config.parse_value("q_hidden", "500,400") == (500, 400)
    assert config.parse_value("lr_guide", "none") is None
    assert config.parse_value("vae_branch", "no") is False
    with pytest.raises(ValueError, match="z_dim must be a whole number"):
        config.parse_value("z_dim", "2.5")
    with pytest.raises(ValueError, match=r"gen_loss must be one of \('elastic', 'abs'\)"):
        replace(p, gen_loss="l1").validate()
    # A config saved before the fields took the constructors' names still loads.
    old = dict(p.to_dict(), hidden=[7, 6], guide_l2=0.2, chain_lr=3e-3, fault_at=None)
    for name in ("q_hidden", "p_hidden", "lam_l2d", "lr_gen"):
        del old[name]
    back = P.Preset.from_dict(old)
    assert (back.q_hidden, back.p_hidden, back.lam_l2d, back.lr_gen) == ((7, 6), (7, 6), 0.2, 3e-3)
    # Every preset trains the guide as the 2015 code did; a config saved before the
    # field existed was run with Eq. 6 and loads so.
    assert {P.get_preset(n).guide_loss for n in P.preset_names()} == {"code2015"}
    del old["guide_loss"]
    assert P.Preset.from_dict(old).guide_loss == "paper"
    assert P.loop_args(replace(p, guide_loss="paper"))["guide_loss"] == "paper"
    with pytest.raises(ValueError, match=r"guide_loss must be one of \('code2015', 'paper'\)"):
        replace(p, guide_loss="eq6").validate()
    with pytest.raises(ValueError, match=r"unknown setting 'hidden' \(renamed: q_hidden, p_hidden\)"):
        config.parse_value("hidden", "5,5")


def _arguments(cls):
    return set(inspect.signature(cls).parameters)


@pytest.mark.parametrize("name", sorted(P.PRESETS))
def test_presets_map_onto_the_constructors_by_their_own_names(name):
    c = P.get_preset(name)
    model, guide, loop = P.model_args(c), P.guide_args(c), P.loop_args(c)
    assert set(model) <= _arguments(OneStageModel) - {"x_dim", "x_mean"}
    assert set(guide) <= _arguments(MaxoutGuide) - {"n_in", "rng"}
    assert set(loop) <= _arguments(VCGLoop) - {"model", "guide"}
    # each value is the preset field of that name (the guide's carry the prefix guide_)
    fields = c.to_dict()
    for k, v in model.items() - {("momentum_scheduled", c.momentum_scheduled)}:  # derived
        assert fields[k] == (list(v) if isinstance(v, tuple) else v), k
    for k, v in loop.items():
        if k not in ("seed", "lr_guide"):     # derived, checked below
            assert fields[k] == v, k
    for k, v in guide.items():
        assert fields[f"guide_{k}"] == v, k
    assert loop["seed"] == c.seed + 2 and loop["lr_guide"] == (c.lr_guide or c.lr_gen)


# ---- checkpoints ----------------------------------------------------------------

def _arrays():
    rng = np.random.default_rng(3)
    return {"model/q.h0.W": rng.standard_normal((5, 4)).astype(np.float32),
            "model/vae.lr": np.float32(3e-4), "vae/p.mean.b": rng.standard_normal(7)}


def test_checkpoint_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(11)
    rng.standard_normal(5)
    meta = {"update": 17, "rng": {"data": rng.bit_generator.state}, "config": {"a": [1, 2]}}
    path = save_run_checkpoint(tmp_path / "c.h5", _arrays(), meta)
    arrays, back = load_run_checkpoint(path)
    assert back == json.loads(json.dumps(meta))
    for k, v in _arrays().items():
        assert arrays[k].dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(arrays[k], v)
    again = np.random.default_rng(0)
    again.bit_generator.state = back["rng"]["data"]
    assert again.standard_normal() == rng.standard_normal()
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]     # no temporary left


def test_cut_short_or_corrupt_checkpoint_is_reported_not_loaded(tmp_path):
    path = save_run_checkpoint(tmp_path / "c.h5", _arrays(), {"update": 1})
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 10, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as err:
            load_run_checkpoint(path)
        assert "not loaded" in str(err.value) and "\n" not in str(err.value)
    # Same length, flipped bytes inside the array data: the checksum catches it.
    raw = bytearray(data)
    arrays = _arrays()
    needle = arrays["model/q.h0.W"].tobytes()
    at = bytes(raw).find(needle)
    assert at > 0
    raw[at + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_run_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_run_checkpoint(tmp_path / "nope.h5")


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import h5py

    path = save_run_checkpoint(tmp_path / "c.h5", _arrays(), {"update": 1})
    before = path.read_bytes()

    def boom(self, name, **kw):
        raise OSError("disk full")
    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint \(disk full\)"):
        save_run_checkpoint(path, _arrays(), {"update": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]
    monkeypatch.undo()
    assert load_run_checkpoint(path)[1] == {"update": 1}


# ---- whole runs -----------------------------------------------------------------

def _tiny(**kw):
    return replace(P.get_preset("tiny"), **kw)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny preset end to end, in this process: pre-training, the fork into the
    guided chain and the 1-step VAE, every evaluation and figure, the report."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    report = train.run(_tiny(), out, quiet=True)
    return out, report


def test_tiny_run_goes_end_to_end(tiny_run):
    out, report = tiny_run
    c = _tiny()
    assert report == out / "report.md"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    # pre-training rows, then the two branches in step after the fork
    assert {r["branch"] for r in train_rows if r["update"] <= c.pretrain_updates} == {"pretrain"}
    after = [r for r in train_rows if r["update"] > c.pretrain_updates]
    assert {r["branch"] for r in after} == {"guided", "vae"}
    assert [r["update"] for r in after if r["branch"] == "guided"] == \
        [r["update"] for r in after if r["branch"] == "vae"] == list(range(45, 81, 5))
    cost = {"pretrain": "cost", "vae": "cost", "guided": "gen_cost"}
    assert all(np.isfinite(r[cost[r["branch"]]]) for r in train_rows)
    assert {"guide_loss", "gen_loss", "vae_cost", "guide_acc"} <= set(after[0])
    # schedules reached the rows: the warm-up's end and the decay at 20 updates
    pre = {r["update"]: r for r in train_rows if r["branch"] == "pretrain"}
    assert pre[20]["lr"] == pytest.approx(c.pretrain_lr, rel=1e-6)
    assert pre[25]["lr"] == pytest.approx(c.pretrain_lr * 0.9, rel=1e-6)
    assert pre[5]["lam_kl"] == pytest.approx(schedules.kl_weight_at(4, c.lam_kl, c.kl_warmup))
    evals = [(r["update"], r["branch"]) for r in rows if r["kind"] == "eval"]
    assert evals == [(20, "pretrain"), (40, "pretrain"), (60, "guided"), (60, "vae")]
    final = {r["branch"]: r for r in rows if r["kind"] == "final"}
    assert set(final) == {"guided", "vae"}
    for r in final.values():
        assert r["update"] == 80
        for k in ("gpde_test", "gpde_test_stderr", "bound_test", "iwll_test", "gpde_valid"):
            assert np.isfinite(r[k]), k
        # the importance-weighted estimate tightens the bound (k = 10 samples)
        assert r["iwll_test"] > r["bound_test"] - 1.0
    # the CSV files hold the same rows
    assert len((out / "eval.csv").read_text().splitlines()) == 1 + 6
    for branch in ("pretrain", "guided", "vae"):
        lines = (out / f"train_{branch}.csv").read_text().splitlines()
        assert lines[0].startswith("update,phase,branch,kind")
        assert len(lines) - 1 == sum(r["branch"] == branch for r in train_rows)
    # figures, and a report that shows them beside the paper's numbers
    figs = {p.name for p in (out / "figures").glob("*.png")}
    for name in ("curves.png", "samples_guided.png", "samples_vae.png", "scatter_guided.png",
                 "kl_stems_vae.png", "chains_pretrain_u0000040.png", "chains_guided_u0000080.png",
                 "chains_vae_u0000080.png"):
        assert name in figs, name
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()
    for fig in figs:
        assert f"](figures/{fig})" in text
    for needle in ("| guided |", "| vae |", "| mnist2-ork | 265 |", "| tfd-kl30 | 2130 |",
                   "GSN (Bengio et al., 2014) | 214", "## Settings", "bundled scikit-learn digits"):
        assert needle in text, needle
    assert (out / "pretrained.h5").exists()
    _, meta = load_run_checkpoint(out / "checkpoint.h5")
    assert meta["update"] == 80 and meta["forked"]


def test_load_models_gives_the_trained_branches(tiny_run):
    out, _ = tiny_run
    models = train.load_models(out)
    assert set(models) == {"model", "vae", "loop"}
    arrays, _ = load_run_checkpoint(out / "checkpoint.h5")
    np.testing.assert_array_equal(models["vae"].p.mean_head.W.get_value(), arrays["vae/p.mean.W"])
    # the guided chain with its trained guide: the checkpoint's arrays, the chain's q/p
    loop = models["loop"]
    assert loop.model is models["model"]
    np.testing.assert_array_equal(loop.guide.output.W.get_value(), arrays["loop/guide.out.W"])
    np.testing.assert_array_equal(loop.guide.layers[1].W.get_value(), arrays["loop/guide.h1.W"])
    f = loop.guide_output(np.random.default_rng(1).uniform(size=(4, 64)).astype(np.float32))
    assert f.shape == (4,) and np.all(np.abs(f) < 20)
    X = models["model"].sample_prior(3, rng=np.random.default_rng(0))
    assert X.shape == (3, 64) and np.all((X >= 0) & (X <= 1))


def test_the_readme_notebook_example_runs_on_a_run_folder(tiny_run, tmp_path, monkeypatch):
    """The README's python block, as printed, on a run folder where it looks for one."""
    out, _ = tiny_run
    text = (ROOT / "README.md").read_text()
    block = text.split("## In a notebook", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "quick-1").symlink_to(out, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    env = {}
    exec(compile(block, "README.md", "exec"), env)
    n = min(300, len(env["ds"].test))
    assert env["x"].shape == (100, 64) and env["states"].shape == (31, n, 64)
    assert 0 < env["scores"]["confidence_final"] <= 1


def _run_script(args, kill_at=None, timeout=300):
    """run_mnist.py in its own process; with ``kill_at`` through the test driver that
    SIGKILLs the process right after that update."""
    script = ["run_mnist.py"] if kill_at is None else ["tests/_kill_at.py", str(kill_at)]
    return subprocess.run([sys.executable, *script, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _metrics_files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.name == "metrics.jsonl" or p.suffix == ".csv"}


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    c = _tiny()
    # The uninterrupted reference runs as its own process too, like the killed and the
    # resumed runs: this process has compiled and run many other graphs, and the
    # comparison is bit for bit.
    ref = tmp_path / "reference"
    done = _run_script(["--preset", "tiny", "--out", str(ref), "--quiet", "--no-figures"])
    assert done.returncode == 0, done.stderr[-2000:]
    # a random update after the first checkpoint, before the end (either phase)
    kill_at = int(np.random.default_rng().integers(c.checkpoint_every + 1, c.total_updates))
    out = tmp_path / "killed"
    args = ["--preset", "tiny", "--out", str(out), "--quiet", "--no-figures"]
    killed = _run_script(args, kill_at)
    assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-2000:])
    _, meta = load_run_checkpoint(out / "checkpoint.h5")
    assert meta["update"] == max(u for u in range(kill_at + 1)
                                 if u % c.checkpoint_every == 0 or u == c.pretrain_updates)
    resumed = _run_script(["--resume", str(out), "--quiet"])
    assert resumed.returncode == 0, (kill_at, resumed.stderr[-2000:])
    assert _metrics_files(out) == _metrics_files(ref), f"killed at update {kill_at}"
    a, _ = load_run_checkpoint(ref / "checkpoint.h5")
    b, _ = load_run_checkpoint(out / "checkpoint.h5")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


class PoisonAt(loop.Hooks):
    """Update ``k`` runs with NaN learning rates (the run must stop as diverged)."""

    def __init__(self, k):
        self.k = k

    def before_step(self, run):
        if run.update + 1 != self.k:
            return
        hypers = [run.model.hyper] if run.loop is None else [run.loop.hyper]
        hypers += [run.vae.hyper] if run.vae is not None else []
        for hp in hypers:
            for name in hp.names():
                if name.startswith("lr"):
                    var = getattr(hp, name)
                    var.set_value(np.asarray(np.nan, dtype=var.dtype))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    c = _tiny(chain_updates=0, figures=False)
    with pytest.raises(folder.Diverged) as err:
        train.run(c, out, quiet=True, hooks=PoisonAt(22))
    msg = str(err.value)
    assert "update 23" in msg and "not finite" in msg and "\n" not in msg
    assert f"{out / 'checkpoint.h5'} (update 15)" in msg
    arrays, meta = load_run_checkpoint(out / "checkpoint.h5")
    assert meta["update"] == 15
    assert all(np.all(np.isfinite(v)) for v in arrays.values())
    # A fault right before a checkpoint is due: the poisoned parameters are not saved;
    # the command line says so in one line and exits with status 1.
    out2 = tmp_path / "nan2"
    code = cli.cli_main(["--preset", "tiny", "--chain-updates", "0", "--no-figures", "--quiet",
                         "--out", str(out2)], "mnist", hooks=PoisonAt(30))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("run_mnist.py: error: update 30: parameters became non-finite")
    assert load_run_checkpoint(out2 / "checkpoint.h5")[1]["update"] == 15


def test_resume_refuses_a_cut_short_checkpoint(tiny_run, tmp_path):
    ref, _ = tiny_run
    out = tmp_path / "cut"
    out.mkdir()
    data = (ref / "checkpoint.h5").read_bytes()
    (out / "checkpoint.h5").write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(folder.TrainingError, match="cannot resume: .*cut short"):
        train.resume(out, quiet=True)
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 1

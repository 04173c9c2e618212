"""A run's record and its life: provenance.json (the command, the code's version, the
machine), --resume --updates N extending a finished run, a finished run resumed with
nothing to do, and SIGTERM / SIGINT / SIGUSR1 saving a checkpoint at the next update."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from vgsn.run import cli
from vgsn.run import folder as runfiles
from vgsn.run import loop
from vgsn.run import presets as P
from vgsn.run import progress
from vgsn.run import provenance
from vgsn.run import train
from vgsn.run.checkpoints import load_run_checkpoint

from _paths import ROOT  # noqa: E402
from _runcheck import same_arrays  # noqa: E402


def _tiny(**kw):
    return replace(P.get_preset("tiny"), figures=False, **kw)


def _rows(out, kind=None):
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if kind is None or r["kind"] == kind]


def _metrics(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.is_file() and runfiles.is_metrics_file(p.name)}


def _no_svd(*a, **k):
    raise AssertionError("an SVD init was computed, and a checkpoint overwrites it")


class SignalAt(loop.Hooks):
    """Sends ``sig`` to this process right after update ``k`` (each (k, sig) once)."""

    def __init__(self, *pairs):
        self.pairs = list(pairs)

    def after_update(self, run):
        for k, sig in list(self.pairs):
            if run.update == k:
                self.pairs.remove((k, sig))
                os.kill(os.getpid(), sig)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    train.run(_tiny(), out, quiet=True)
    return out


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- signals ------------------------------------------------------------------------

def test_sigterm_then_sigusr1_save_at_the_next_update_and_resume_bit_for_bit(
        tmp_path, reference, capsys, monkeypatch):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    code = cli.cli_main(["--preset", "tiny", "--no-figures", "--quiet", "--out", str(out)], "mnist",
                        hooks=SignalAt((22, signal.SIGTERM)))
    assert code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before          # handlers put back
    line = _one_line(capsys)
    assert line == (f"run_mnist.py: stopped by SIGTERM at update 22; checkpoint saved "
                    f"({out / 'checkpoint.h5'}); continue with --resume {out}")
    assert load_run_checkpoint(out / "checkpoint.h5")[1]["update"] == 22   # not 15
    assert "update 22: SIGTERM received; checkpoint saved" in (out / "log.txt").read_text()
    # resumed, stopped again after the fork by SIGUSR1 (Slurm's warning), resumed to the end
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist",
                        hooks=SignalAt((50, signal.SIGUSR1))) == 128 + signal.SIGUSR1
    assert load_run_checkpoint(out / "checkpoint.h5")[1]["update"] == 50
    # past the fork, resuming builds every net without the SVD init it overwrites
    monkeypatch.setattr(np.linalg, "svd", _no_svd)
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 0
    capsys.readouterr()
    assert _metrics(out) == _metrics(reference)
    same_arrays(out / "checkpoint.h5", reference / "checkpoint.h5")
    same_arrays(out / "pretrained.h5", reference / "pretrained.h5")


def test_a_second_ctrl_c_stops_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(runfiles.Interrupted) as exc:
        train.run(_tiny(), out, quiet=True, hooks=SignalAt((7, signal.SIGINT),
                                                           (7, signal.SIGINT)))
    assert str(exc.value) == "stopped by SIGINT at update 7; No checkpoint had been written yet."
    assert not (out / "checkpoint.h5").exists()


def test_sigterm_to_a_running_script_exits_within_a_minute_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, str(ROOT / "run_mnist.py"), "--preset", "tiny", "--no-figures",
            "--quiet", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (out / "metrics.jsonl").exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 60
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved" in err and "Traceback" not in err
    stopped = load_run_checkpoint(out / "checkpoint.h5")[1]["update"]
    assert 0 < stopped < 80
    res = subprocess.run([sys.executable, str(ROOT / "run_mnist.py"), "--resume", str(out),
                          "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert [r["update"] for r in _rows(out, "final")] == [80, 80]


# ---- the record, extending a finished run ---------------------------------------------

def test_the_folder_records_the_command_and_a_finished_run_extends(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--updates", "60", "--no-figures", "--quiet", "--out", str(out),
            "--set", "lam_kl=2"]
    assert cli.cli_main(argv, "mnist") == 0
    capsys.readouterr()
    [start] = json.loads((out / "provenance.json").read_text())
    assert start["argv"] == ["run_mnist.py", *argv] and start["what"] == "start"
    assert start["changed"]["lam_kl"] == "1.0 -> 2.0"
    assert start["changed"]["chain_updates"] == "40 -> 30"
    assert start["git"] == provenance.git_state()
    assert start["libraries"]["numpy"] == __import__("numpy").__version__
    assert start["device"] and start["python"] == sys.version.split()[0]
    report = (out / "report.md").read_text()
    assert "## Provenance" in report and f"`run_mnist.py {' '.join(argv)}`" in report
    assert [r["update"] for r in _rows(out, "final")] == [60, 60]
    # finished: says so at once and touches nothing
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    t0 = time.time()
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 0
    assert time.time() - t0 < 2
    assert "finished at update 60" in _one_line(capsys)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    with pytest.raises(SystemExit) as exc:
        cli.cli_main(["--resume", str(out), "--updates", "50"], "mnist")
    assert exc.value.code == 2 and "only extends" in _one_line(capsys)
    # extended to 120: the chain phase grows
    assert cli.cli_main(["--resume", str(out), "--updates", "120", "--quiet"], "mnist") == 0
    capsys.readouterr()
    finals = _rows(out, "final")
    assert [r["update"] for r in finals] == [120, 120]
    assert max(r["update"] for r in _rows(out)) == 120
    assert load_run_checkpoint(out / "checkpoint.h5")[1]["update"] == 120
    config = json.loads((out / "config.json").read_text())
    assert (config["pretrain_updates"], config["chain_updates"]) == (30, 90)
    assert "update 60: extended to 120 updates" in (out / "log.txt").read_text()
    start2, again = json.loads((out / "provenance.json").read_text())
    assert start2 == start and again["what"] == "resume" and again["update"] == 60
    assert again["changed"] == {"chain_updates": "30 -> 90"}
    assert "resume at update 60" in (out / "report.md").read_text()


def test_load_models_skips_the_init_it_overwrites(reference, monkeypatch):
    monkeypatch.setattr(np.linalg, "svd", _no_svd)
    models = train.load_models(reference)
    arrays, _ = load_run_checkpoint(reference / "checkpoint.h5")
    for branch, model in models.items():
        for k, v in model.get_state().items():
            if f"{branch}/{k}" in arrays:
                np.testing.assert_array_equal(v, arrays[f"{branch}/{k}"], err_msg=k)
    assert sorted(models) == ["loop", "model", "vae"]


def test_git_state_says_when_there_is_no_checkout(tmp_path):
    assert provenance.git_state(tmp_path) == {
        "commit": None, "dirty": None, "why": f"{tmp_path} is not a git checkout"}
    state = provenance.git_state()
    assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)


# ---- live tracking --------------------------------------------------------------------

def _events(folder):
    """(tag, step, value or 'image') of every event in the run folder's event files."""
    from tensorboardX.proto import event_pb2
    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            n = int.from_bytes(data[i:i + 8], "little")
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.append((v.tag, event.step, "image" if v.HasField("image")
                            else v.simple_value))
    return out


def test_tensorboard_writes_every_metric_and_the_figures(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    assert cli.cli_main(["--preset", "tiny", "--updates", "20", "--tensorboard", "--quiet",
                         "--out", str(out), "--set", "score_chains=0"], "mnist") == 0
    capsys.readouterr()
    assert list(out.glob("events.out.tfevents.*"))
    events = _events(out)
    scalars = {(tag, step): v for tag, step, v in events if v != "image"}
    rows = _rows(out)
    for r in rows:
        for k, v in r.items():
            if k not in ("update", "phase", "branch", "kind") and isinstance(v, float):
                assert scalars[(f"{r['kind']}/{r['branch']}/{k}", r["update"])] == \
                    pytest.approx(v, rel=1e-6), k
    images = {tag for tag, _, v in events if v == "image"}
    assert {f"figures/{p.stem}" for p in (out / "figures").glob("*.png")} == images and images


def test_the_eta_is_steady_and_counts_evaluations(monkeypatch):
    """Pre-training at 1 s an update, a 10 s evaluation every 10 updates, the chain at
    3.5 s: from update 12 on, the predicted end is within 15% of the true one through
    pre-training (the last interval alone, the old rule, swung between 1 s and 11 s an
    update), and once the
    chain is timed the ETA is off by under 15% of the chain phase's time."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    log = runfiles.RunLog.__new__(runfiles.RunLog)
    log.quiet, log.bar = True, None
    p = runfiles.Progress(log, 100, 0, 10, "pretrain", pretrain_end=50)
    cost = [(1.0 if u < 50 else 3.5) + (10.0 if u % 10 == 0 else 0.0) for u in range(1, 101)]
    ends = []
    for u in range(1, 101):
        clock[0] += cost[u - 1]
        p.tick(u, "pretrain" if u <= 50 else "fork", {}, 10)
        if 12 <= u <= 50:
            ends.append(clock[0] + p.eta(u))
        if u >= 62:
            assert abs(p.eta(u) - sum(cost[u:])) < 0.15 * sum(cost[50:]), u
    assert all(abs(end - sum(cost)) < 0.15 * sum(cost) for end in ends), ends
    p.close()

"""Sweeps (vgsn.studies.sweep): the same runs as by hand, resuming only what is missing, the
aggregated report against numpy, one-line refusals before anything is written.

The real runs are the `tiny` preset (2 grid points x 2 seeds). They share the user's
compile cache (``--compile-cache shared``), so after the first a run costs seconds; the
four hand runs are made once for the module.
"""
import csv
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vgsn.studies import executors as X
from vgsn.studies import sweep as S
from vgsn.studies.sweepreport import final_rows, point_status

from _paths import ROOT  # noqa: E402
ENV = dict(os.environ)
TINY = ["--preset", "tiny", "--grid", "lam_kl=1,2", "--seeds", "1", "2", "--set", "figures=false",
        "--compile-cache", "shared", "--quiet"]


def _sweep(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "vgsn.sweep", *map(str, args)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def _folders(sweep_dir):
    return [p["folder"] for p in json.loads((sweep_dir / "sweep.json").read_text())["points"]]


def _files(folder):
    """Every file of a folder: name -> (bytes, mtime_ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    """The four runs started by hand from the planned command.txt files (two at a time),
    each with its --out moved to another folder."""
    base = tmp_path_factory.mktemp("sweeps")
    plan = base / "plan"
    res = _sweep(*TINY, "--out", plan, "--dry-run")
    assert res.returncode == 0, res.stderr
    runs, cmds = {}, []
    for folder in _folders(plan):
        cmd = shlex.split((plan / folder / "command.txt").read_text())
        assert cmd[:2] == ["python", "run_mnist.py"]
        assert cmd[cmd.index("--out") + 1] == str(plan / folder)
        runs[folder] = base / "hand" / folder
        cmd[cmd.index("--out") + 1] = str(runs[folder])
        cmds.append([sys.executable] + cmd[1:])
    for group in (cmds[:1], cmds[1:3], cmds[3:]):   # the first fills the compile cache alone
        procs = [subprocess.Popen(c, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for c in group]
        for p in procs:
            assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    return runs


def _same_as_hand(sweep_dir, hand):
    for folder, ref in hand.items():
        mine = sweep_dir / folder
        assert point_status(mine) == "finished", folder
        assert (mine / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes(), folder
        assert final_rows(mine) == final_rows(ref) and len(final_rows(ref)) == 2, folder


def _alive(text):
    """Processes whose command line holds ``text`` (the killed sweep's runs)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text in (d / "cmdline").read_bytes().decode(errors="ignore"):
                found.append(int(d.name))
        except OSError:
            pass
    return found


def test_killed_local_sweep_resumes_only_the_missing_points(hand, tmp_path):
    out = tmp_path / "local"
    proc = subprocess.Popen([sys.executable, "-m", "vgsn.sweep", *TINY, "--out", str(out),
                             "--executor", "local", "--jobs", "2"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill it once a point has finished and another one has a checkpoint
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            status = [point_status(out / f) for f in hand] if (out / "sweep.json").exists() else []
            if "finished" in status and "checkpoint" in status:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    t0 = time.time()
    while _alive(str(out)) and time.time() < t0 + 30:   # its runs die with it
        time.sleep(0.1)
    assert not _alive(str(out))
    status = {f: point_status(out / f) for f in hand}
    finished = [f for f, s in status.items() if s == "finished"]
    assert 1 <= len(finished) < len(hand), status
    before = {f: _files(out / f) for f in finished}
    res = _sweep("--resume", out)
    assert res.returncode == 0, res.stderr[-2000:]
    for f in finished:   # never rerun, never touched
        assert _files(out / f) == before[f], f
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["submissions"][-1]["points"] == [f for f in hand if f not in finished]
    for f, s in status.items():   # from its checkpoint where there was one
        if s == "checkpoint":
            starts = [line for line in (out / f / "job.log").read_text().splitlines()
                      if line.startswith("# ")]   # one line per start of the run
            assert "--resume" in starts[-1] and "--resume" not in starts[0], f
    _same_as_hand(out, hand)
    assert (out / "sweep_report.md").is_file() and (out / "sweep.csv").is_file()
    # resuming a finished sweep runs nothing
    now = {f: _files(out / f) for f in hand}
    res = _sweep("--resume", out)
    assert res.returncode == 0 and {f: _files(out / f) for f in hand} == now


def test_submitit_local_executor_gives_the_hand_runs(hand, tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "submitit"
    res = _sweep(*TINY, "--out", out, "--executor", "submitit-local", "--time", "20")
    assert res.returncode == 0, res.stderr[-2000:]
    _same_as_hand(out, hand)
    spec = json.loads((out / "sweep.json").read_text())
    assert len(spec["submissions"][0]["job_ids"]) == 4
    assert spec["executor"]["name"] == "submitit-local"


# ---------------------------------------------------------------------------
# the report on constructed results
# ---------------------------------------------------------------------------

def _fake_eval(folder, rows, finished=True):
    cols = ["update", "phase", "branch", "kind", "gpde_test", "bound_test", "gpde_sigma_at_edge",
            "chain_score"]   # a column train.py does not write: aggregated all the same
    with open(folder / "eval.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols, lineterminator="\n")
        w.writeheader()
        w.writerow({"update": 10, "phase": "pretrain", "branch": "pretrain", "kind": "eval",
                    "gpde_test": 1e9, "bound_test": "", "gpde_sigma_at_edge": "False",
                    "chain_score": 1e9})
        for r in rows:
            w.writerow(r)
    if finished:
        (folder / "report.md").write_text("# done\n")


def test_report_means_and_spreads_match_numpy(tmp_path):
    out = tmp_path / "constructed"
    assert S.main(["--preset", "mnist2-ork", "--grid", "lam_kl=1,4", "--seeds", "1-3",
                   "--set", "figures=false", "--out", str(out), "--dry-run", "--quiet"]) == 0
    spec = json.loads((out / "sweep.json").read_text())
    rng = np.random.default_rng(0)
    truth = {}   # (lam_kl, branch, column) -> values written by finished runs
    for i, p in enumerate(spec["points"]):
        rows = []
        for branch in ("guided", "vae"):
            r = {"update": 200, "phase": "fork", "branch": branch, "kind": "final",
                 "gpde_test": rng.normal(250, 20), "bound_test": rng.normal(-90, 3),
                 "gpde_sigma_at_edge": str(bool(rng.integers(2))), "chain_score": rng.random()}
            if i == 1 and branch == "vae":
                r["bound_test"] = ""   # a missing value: that metric's n is one less
            rows.append(r)
        finished = i != 5   # the last point of lam_kl=4 has not finished
        _fake_eval(out / p["folder"], rows, finished)
        if finished:
            for r in rows:
                for c in ("gpde_test", "bound_test", "gpde_sigma_at_edge", "chain_score"):
                    v = r[c]
                    v = (1.0 if v == "True" else 0.0) if c == "gpde_sigma_at_edge" else v
                    truth.setdefault((p["settings"]["lam_kl"], r["branch"], c), []).append(
                        np.nan if v == "" else float(v))
    assert S.main(["--report", str(out)]) == 0
    with open(out / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4
    for row in table:
        assert int(row["runs"]) == (2 if row["lam_kl"] == "4.0" else 3)
        for c in ("gpde_test", "bound_test", "gpde_sigma_at_edge", "chain_score"):
            x = np.array(truth[(row["lam_kl"], row["branch"], c)])
            x = x[np.isfinite(x)]
            assert int(row[f"{c}_n"]) == x.size, (row["lam_kl"], row["branch"], c)
            np.testing.assert_allclose(float(row[f"{c}_mean"]), x.mean(), rtol=1e-12)
            np.testing.assert_allclose(float(row[f"{c}_std"]), x.std(ddof=1), rtol=1e-12)
        assert (float(row["update_mean"]), float(row["update_std"])) == (200.0, 0.0)
        # the paper's 265 only beside the preset's own experiment (lambda 4) and its chain
        paper = "265.0" if row["lam_kl"] == "4.0" and row["branch"] == "guided" else ""
        assert row["paper_gpde_test"] == paper
    report = (out / "sweep_report.md").read_text()
    assert "finished 5 of 6 runs" in report and spec["points"][5]["folder"] in report
    assert "update = 200" in report   # constant columns listed once, not tabulated
    for m in ("gpde_test", "bound_test", "chain_score"):
        assert f"## {m}" in report and (out / "figures" / f"{m}.png").stat().st_size > 1000


def test_tfd_folds_are_summarised_per_fold_like_numpy(tmp_path):
    """A grid over the held-out folds: the points that differ only in tfd_fold get
    the per-fold protocol (each fold's mean over seeds, then mean / std / standard
    error across the folds); fold 'all' never enters it."""
    out = tmp_path / "folds"
    assert S.main(["--preset", "tfd-ork", "--grid", "lam_kl=4,8", "--grid",
                   "tfd_fold=all,0,1,2,3,4", "--seeds", "1-2", "--set", "figures=false",
                   "--out", str(out), "--dry-run", "--quiet"]) == 0
    spec = json.loads((out / "sweep.json").read_text())
    rng = np.random.default_rng(7)
    per_fold = {}   # (lam_kl, branch, column) -> {fold: [values of the finished seeds]}
    for p in spec["points"]:
        lam, fold = p["settings"]["lam_kl"], p["settings"]["tfd_fold"]
        finished = not (lam == "8.0" and fold == "3")   # one fold of lambda 8 never finished
        rows = []
        for branch in ("guided", "vae"):
            r = {"update": 300, "phase": "fork", "branch": branch, "kind": "final",
                 "gpde_test": rng.normal(2000, 60) + (1e6 if fold == "all" else 0.0),
                 "bound_test": rng.normal(-90, 3), "gpde_sigma_at_edge": "False",
                 "chain_score": rng.random()}
            if lam == "4.0" and fold == "2" and branch == "vae":
                r["bound_test"] = ""   # no value in either seed: this fold drops out of one cell
            rows.append(r)
            if finished and fold != "all":
                for c in ("gpde_test", "bound_test", "chain_score"):
                    per_fold.setdefault((lam, branch, c), {}).setdefault(fold, []).append(
                        np.nan if r[c] == "" else float(r[c]))
        _fake_eval(out / p["folder"], rows, finished)
    assert S.main(["--report", str(out)]) == 0
    with open(out / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    # every (point, branch) with a finished run (not lambda 8's fold 3), then the fold means
    assert len(table) == (2 * 6 - 1) * 2 + 2 * 2
    means = [r for r in table if r["tfd_fold"] == "mean"]
    assert table[-len(means):] == means and len(means) == 4
    for row in means:
        lam, branch = row["lam_kl"], row["branch"]
        assert int(row["runs"]) == (8 if lam == "8.0" else 10)   # seeds over the folds
        assert row["paper_gpde_test"] == ""   # the paper's number is of fold 'all'
        for c in ("gpde_test", "bound_test", "chain_score"):
            folds = {k: np.nanmean(v) for k, v in per_fold[lam, branch, c].items()
                     if np.isfinite(v).any()}
            x = np.array(list(folds.values()))
            assert int(row[f"{c}_n"]) == x.size == (
                5 - (lam == "8.0") - (c == "bound_test" and lam == "4.0" and branch == "vae"))
            np.testing.assert_allclose(float(row[f"{c}_mean"]), x.mean(), rtol=1e-12)
            np.testing.assert_allclose(float(row[f"{c}_std"]), x.std(ddof=1), rtol=1e-12)
            assert float(row[f"{c}_mean"]) < 1e5 or c != "gpde_test"   # 'all' left out
    report = (out / "sweep_report.md").read_text()
    assert "held-out per-fold protocol" in report and "fold_summary" in report
    gpde = report.split("## gpde_test")[1].split("##")[0]
    fold_rows = [ln for ln in gpde.splitlines() if "mean over folds" in ln]
    assert len(fold_rows) == 2
    x = np.array([np.mean(v) for v in per_fold["8.0", "guided", "gpde_test"].values()])
    line = next(ln for ln in fold_rows if ln.startswith("| 8.0 |"))
    assert f"{x.mean():.4g} +- {x.std(ddof=1) / np.sqrt(x.size):.2g} s.e." in line
    assert "folds 0, 1, 2, 4)" in line


def test_one_fold_or_no_fold_grid_has_no_fold_means(tmp_path):
    from vgsn.studies.sweepreport import fold_means
    row = {"settings": {"tfd_fold": "2", "lam_kl": "4.0"}, "branch": "guided", "runs": 1,
           "metrics": {"gpde_test": {"mean": 1.0, "std": math.nan, "n": 1}}, "paper": None}
    assert fold_means([row], {"grid": {"tfd_fold": ["all", "2"]}}, ["gpde_test"]) == []
    assert fold_means([row], {"grid": {"lam_kl": ["4.0"]}}, ["gpde_test"]) == []
    two = [row, dict(row, settings={"tfd_fold": "3", "lam_kl": "4.0"},
                     metrics={"gpde_test": {"mean": 3.0, "std": math.nan, "n": 1}})]
    (got,) = fold_means(two, {"grid": {"tfd_fold": ["2", "3"], "lam_kl": ["4.0"]}},
                        ["gpde_test"])
    assert got["settings"] == {"tfd_fold": "mean", "lam_kl": "4.0"} and got["folds"] == ["2", "3"]
    g = got["metrics"]["gpde_test"]
    assert (g["mean"], g["n"], g["folds"]) == (2.0, 2, ["2", "3"])
    np.testing.assert_allclose([g["std"], g["stderr"]], [np.sqrt(2.0), 1.0], rtol=1e-12)
    (one,) = fold_means(two[:1] + [dict(two[1], metrics={"gpde_test": {"mean": math.nan,
                                                                       "std": math.nan, "n": 0}})],
                        {"grid": {"tfd_fold": ["2", "3"], "lam_kl": ["4.0"]}}, ["gpde_test"])
    g = one["metrics"]["gpde_test"]
    assert g["n"] == 1 and g["mean"] == 1.0 and math.isnan(g["std"]) and math.isnan(g["stderr"])


# ---------------------------------------------------------------------------
# refusals and small parts
# ---------------------------------------------------------------------------

# words: what the one line must name (the field and the bad value; presets' wording may change)
@pytest.mark.parametrize("args, words", [
    (["--grid", "no_such_field=1,2"], ["unknown", "'no_such_field'"]),
    (["--grid", "lam_kl=1,abc"], ["lam_kl", "'abc'"]),
    (["--grid", "lam_kl=1,-4"], ["lam_kl", "-4"]),
    (["--grid", "walkback=maybe"], ["walkback", "'maybe'"]),
    (["--grid", "gamma_kl=0,0.1", "--grid", "gamma_kl=1"], ["gamma_kl", "given twice"]),
    (["--grid", "seed=1,2"], ["--seeds"]),
    (["--set", "lam_kl"], ["--set needs FIELD=VALUE"]),
    (["--seeds", "1", "x"], ["--seeds", "'x'"]),
    (["--seeds", "3-1"], ["--seeds", "3-1"]),
    (["--executor", "slurm", "--time", "soon"], ["--time", "'soon'"]),
])
def test_a_bad_grid_is_refused_in_one_line_before_anything_is_written(args, words, tmp_path,
                                                                       capsys):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        S.main(["--preset", "tiny", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and all(w in err for w in words) and err.count("\n") == 1, err
    assert not out.exists()


def test_slurm_without_submitit_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)   # import submitit fails
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        S.main(["--preset", "tiny", "--out", str(out), "--executor", "slurm"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "pip install -e .[sweep]" in err and err.count("\n") == 1
    assert not out.exists()


def test_per_job_compile_folder_keeps_the_users_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTENSOR_FLAGS", "floatX=float32,optimizer=fast_run")
    monkeypatch.setenv("AESARA_FLAGS", "compiledir=/mine")
    env = X.job_env({"compiledir": str(tmp_path / "c")})
    assert env["PYTENSOR_FLAGS"] == f"floatX=float32,optimizer=fast_run,base_compiledir={tmp_path}/c"
    assert env["AESARA_FLAGS"] == "compiledir=/mine"   # the user's compile folder wins
    assert X.job_env({"compiledir": None})["PYTENSOR_FLAGS"] == "floatX=float32,optimizer=fast_run"


def test_requeue_resubmits_the_same_point(tmp_path):
    submitit = pytest.importorskip("submitit")
    job = {"dir": str(tmp_path / "p"), "script": "mnist", "argv": ["run_mnist.py"]}
    again = X.PointJob().checkpoint(job)
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert isinstance(again.function, X.PointJob) and again.args == (job,)
    # a requeued job continues from the checkpoint once there is one
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "checkpoint.h5").write_bytes(b"")
    assert X.job_argv(job) == ["run_mnist.py", "--resume", job["dir"], "--quiet"]
    (tmp_path / "p" / "checkpoint.h5").unlink()
    (tmp_path / "p" / "metrics.jsonl").write_text("{}\n")   # died before its first checkpoint
    assert X.job_argv(job) == ["run_mnist.py"] and not (tmp_path / "p" / "metrics.jsonl").exists()


def test_requeue_passes_sigusr1_to_the_run_and_waits_for_it(tmp_path):
    """Slurm's SIGUSR1 reaches the submitit job; ``checkpoint`` passes it on to the run
    (which saves at its next update and stops with 128 + 10) before the requeue."""
    submitit = pytest.importorskip("submitit")
    mark = tmp_path / "got"
    code = ("import signal, sys, time, pathlib\n"
            "def stop(s, f):\n"
            f"    pathlib.Path({str(mark)!r}).write_text(signal.Signals(s).name)\n"
            "    sys.exit(128 + s)\n"
            "signal.signal(signal.SIGUSR1, stop)\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n")
    job = {"dir": str(tmp_path / "p"), "script": "mnist", "argv": ["-c", code],
           "repo": str(tmp_path), "python": sys.executable}
    results = []
    worker = threading.Thread(target=lambda: results.append(X.run_point(job)))
    worker.start()
    deadline = time.time() + 60
    log = tmp_path / "p" / "job.log"
    while "ready" not in (log.read_text().splitlines() if log.exists() else []):
        assert time.time() < deadline
        time.sleep(0.05)
    t0 = time.time()
    again = X.PointJob().checkpoint(job)
    assert time.time() - t0 < 10 and mark.read_text() == "SIGUSR1"
    assert isinstance(again, submitit.helpers.DelayedSubmission) and again.args == (job,)
    worker.join(10)
    assert results[0]["returncode"] == 128 + signal.SIGUSR1
    with pytest.raises(RuntimeError, match="stopped by a signal"):   # not 'finished'
        X.PointJob()({**job, "argv": ["-c", "raise SystemExit(138)"]})


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880),
                                           ("1-12", 2160), ("10:30", 11), ("0:00:20", 1)])
def test_slurm_times_in_minutes(text, minutes):
    assert X.time_minutes(text) == minutes


def test_submitit_debug_executor_runs_every_point_and_reports(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    seen = []

    def fake_run(job):   # the run itself is the other tests' business
        seen.append(job)
        _fake_eval(Path(job["dir"]), [{"update": 80, "phase": "fork", "branch": "guided",
                                       "kind": "final", "gpde_test": len(seen)}])
        return {"folder": Path(job["dir"]).name, "returncode": 0, "status": "finished"}

    monkeypatch.setattr(X, "run_point", fake_run)
    out = tmp_path / "debug"
    assert S.main([*TINY, "--out", str(out), "--executor", "submitit-debug"]) == 0
    assert sorted(Path(j["dir"]).name for j in seen) == _folders(out)
    assert all(j["compiledir"] is None for j in seen)   # --compile-cache shared
    with open(out / "sweep.csv", newline="") as f:
        assert [int(r["gpde_test_n"]) for r in csv.DictReader(f)] == [2, 2]


def test_local_points_run_at_once_take_gpu_memory_as_needed(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    seen = []

    def fake_point(job):
        seen.append(X.job_env(job).get("XLA_PYTHON_CLIENT_PREALLOCATE"))
        return {"folder": job["dir"], "status": "finished", "returncode": 0}

    monkeypatch.setattr(X, "run_point", fake_point)
    X.run_local([{"dir": "a"}, {"dir": "b"}], 2, shared_cache=False, quiet=True)
    assert seen == ["false", "false"]          # not 75% of the GPU each, up front
    seen.clear()
    X.run_local([{"dir": "a"}, {"dir": "b"}], 1, shared_cache=False, quiet=True)
    assert seen == [None, None]                # one at a time: jax's own default
    seen.clear()
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
    X.run_local([{"dir": "a"}, {"dir": "b"}], 2, shared_cache=False, quiet=True)
    assert seen == ["true", "true"]            # the user's choice wins

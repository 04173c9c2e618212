"""One process per run folder (vgsn.run.lock): a second run or ``--resume`` of a folder in
use refuses in one line naming the folder, the holder's pid and host (exit 2) and changes
nothing; a lock left by a dead process never blocks; a requeued Slurm job waits for its
predecessor's lock."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from vgsn.run import cli
from vgsn.run import folder as runfiles
from vgsn.run import lock
from vgsn.run import presets as P
from vgsn.run import train

from _paths import ROOT  # noqa: E402
from _runcheck import StopAt, same_arrays  # noqa: E402

GATE = str(ROOT / "tests" / "_gate.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _tiny(**kw):
    return replace(P.get_preset("tiny"), figures=False, **kw)


def _files(folder):
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _metrics(folder):
    return {k: v for k, v in _files(folder).items() if runfiles.is_metrics_file(k)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny preset uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train.run(_tiny(), out, quiet=True)
    return out


def _hold(folder, env=None):
    """A process holding ``folder``'s lock until killed; returns it once it holds."""
    code = ("import sys, time\nfrom vgsn.run.lock import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n"
            "    time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                         text=True, env={**ENV, **(env or {})})
    assert p.stdout.readline().strip() == "held"
    return p


def _race(argv_a, argv_b, go, timeout=900):
    """Start two gated commands at once; the one refused ends first (the winner waits at
    its first update for ``go``), then the winner is let go. Returns both results."""
    procs = [subprocess.Popen([sys.executable, GATE, str(go)] + argv, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for argv in (argv_a, argv_b)]
    deadline = time.monotonic() + timeout
    while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    go.write_text("go")
    return [(p.wait(timeout=timeout), *p.communicate()) for p in procs]


def _one_refused(results, folder, flag):
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], [(r[0], r[2][-2000:]) for r in results]
    err = [r[2] for r in results if r[0] == 2][0].strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"run_mnist.py: error: {flag} {folder}: another vgsn process is "
                             f"using this run folder (pid "), err[0]
    assert f"on host {socket.gethostname()}" in err[0]


def test_two_new_runs_on_one_out_one_runs_the_other_refuses(tmp_path, reference):
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--no-figures", "--out", str(out), "--quiet"]
    _one_refused(_race(argv, argv, tmp_path / "go"), out, "--out")
    assert _metrics(out) == _metrics(reference)
    same_arrays(out / "checkpoint.h5", reference / "checkpoint.h5")
    assert sorted(_files(out)) == sorted(_files(reference))


def test_two_resumes_of_one_folder_one_runs_the_other_refuses(tmp_path, reference):
    out = tmp_path / "run"
    with pytest.raises(runfiles.Interrupted):
        train.run(_tiny(), out, quiet=True, hooks=StopAt(22))
    argv = ["--resume", str(out), "--quiet"]
    _one_refused(_race(argv, argv, tmp_path / "go"), out, "--resume")
    assert _metrics(out) == _metrics(reference)
    same_arrays(out / "checkpoint.h5", reference / "checkpoint.h5")
    same_arrays(out / "pretrained.h5", reference / "pretrained.h5")


def _refused(capsys, argv, flag, folder, pid):
    with pytest.raises(SystemExit) as exit_:
        cli.cli_main(argv, "mnist")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"run_mnist.py: error: {flag} {folder}: another vgsn process is "
                             f"using this run folder (pid {pid} on host "
                             f"{socket.gethostname()}, since "), err[0]


def test_a_held_folder_is_refused_before_anything_changes(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(runfiles.Interrupted):
        train.run(_tiny(chain_updates=0), out, quiet=True, hooks=StopAt(22))
    holder = _hold(out)
    before = _files(out)
    try:
        _refused(capsys, ["--resume", str(out), "--quiet"], "--resume", out, holder.pid)
        # past the command line's early check (a process that takes the lock meanwhile)
        with pytest.raises(lock.FolderBusy, match=f"pid {holder.pid}"):
            train.resume(out, quiet=True)
        assert _files(out) == before
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead: its lock never blocks (the kernel dropped it with the process).
    assert lock.holder(out) is None
    train.resume(out, quiet=True)
    assert not (out / lock.LOCK_NAME).exists()      # the holder removes it as it lets go


def test_a_new_run_in_a_held_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "new"
    out.mkdir()
    holder = _hold(out)
    try:
        _refused(capsys, ["--preset", "tiny", "--out", str(out), "--quiet"], "--out", out,
                 holder.pid)
        with pytest.raises(lock.FolderBusy, match=f"--out {out}: .*pid {holder.pid}"):
            train.run(_tiny(), out, quiet=True)
        assert sorted(p.name for p in out.iterdir()) == [lock.LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_a_requeued_job_waits_for_its_predecessor(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = _hold(folder, env={"SLURM_JOB_ID": "4242"})
    monkeypatch.setenv("VGSN_LOCK_WAIT", "60")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    lock.probe(folder, "--resume")         # its own job: no refusal, the lock is waited for
    t0 = time.monotonic()
    subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(1.5); "
                      f"os.kill({holder.pid}, 9)"])
    try:
        with lock.folder_lock(folder, "--resume"):
            waited = time.monotonic() - t0
            assert json.loads((folder / lock.LOCK_NAME).read_text())["job"] == "4242"
    finally:
        holder.kill()
        holder.wait()
    assert 1.0 < waited < 30, waited
    # Another job is refused at once, and so is this job after its bounded wait.
    holder = _hold(folder, env={"SLURM_JOB_ID": "4242"})
    try:
        monkeypatch.setenv("VGSN_LOCK_WAIT", "1")
        t0 = time.monotonic()
        with pytest.raises(lock.FolderBusy, match="Slurm job 4242"):
            with lock.folder_lock(folder, "--resume"):
                pass
        assert 0.9 < time.monotonic() - t0 < 10
        monkeypatch.setenv("SLURM_JOB_ID", "99")
        with pytest.raises(lock.FolderBusy, match=f"pid {holder.pid} on host"):
            lock.probe(folder, "--resume")
    finally:
        holder.kill()
        holder.wait()

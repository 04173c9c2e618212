"""Runs that never lose or destroy anything (issue 14): every case is one line,
an exit status, and a run folder left as it was.

Faults are injected in this process (no root needed): a full disk is
``OSError(ENOSPC)`` raised half-way through a real write, a read-only mount
``OSError(EROFS)``, a kill mid-write a ``Killed`` raised half-way through the bytes.
The SIGKILL sweep over random points is ``benchmarks/fault_resume.py`` (two of its
points run at the end of this file).
"""
import errno
import gzip
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vgsn.run import checkpoints
from vgsn.run import cli
from vgsn.compat2015 import compare
from vgsn.run import folder as runfiles
from vgsn.run import train
from vgsn.run import loop
from vgsn.run import data as rundata
from vgsn.run import presets as P
from vgsn.data.files import DatasetError
from vgsn.run.checkpoints import CheckpointError, load_run_checkpoint, save_run_checkpoint

from _paths import ROOT  # noqa: E402
sys.path.insert(0, str(ROOT / "benchmarks"))
from _faults import torn_opener  # noqa: E402  (shared with benchmarks/fault_resume.py)
from _runcheck import StopAt, same_arrays  # noqa: E402  (tests/_runcheck.py)


class Killed(BaseException):
    """Stands for SIGKILL inside this process: nothing in vgsn catches it."""


def _tiny(**kw):
    return replace(P.get_preset("tiny"), figures=False, **kw)


def _files(folder):
    """Every file under ``folder`` -> its bytes (what 'nothing changed' compares)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _metrics(folder):
    return {k: v for k, v in _files(folder).items() if runfiles.is_metrics_file(k)}


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny preset uninterrupted, in this process (the runs below are too)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train.run(_tiny(), out, quiet=True)
    return out


def _assert_same_run(out, ref, ignore=()):
    assert _metrics(out) == _metrics(ref)
    same_arrays(out / "checkpoint.h5", ref / "checkpoint.h5")
    same_arrays(out / "pretrained.h5", ref / "pretrained.h5")
    for name in ("report.md", "timing.json", "config.json", "log.txt"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "evals").iterdir() if f"evals/{p.name}" not in ignore) \
        == sorted(p.name for p in (ref / "evals").iterdir())


# ---- resume touches only what the run wrote ------------------------------------------

def test_resume_keeps_the_users_files_and_cuts_a_torn_tail(tmp_path, reference):
    out = tmp_path / "run"
    with pytest.raises(runfiles.Interrupted):
        train.run(_tiny(), out, quiet=True, hooks=StopAt(22))
    mine = {"my_analysis.csv": b"a,b\n1,2\n", "notes.txt": b"mine",
            "evals/my_u9999999.npz": b"not the run's", "figures/mine.png": b"x"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    # What a crash or a full disk leaves: a torn last line.
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"update": 23, "pha')
    train.resume(out, quiet=True)
    for name, data in mine.items():
        assert (out / name).read_bytes() == data, name
    _assert_same_run(out, reference, ignore=mine)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A pre-training-only tiny run stopped at update 32 (last checkpoint: 30)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.raises(runfiles.Interrupted):
        train.run(_tiny(chain_updates=0), out, quiet=True, hooks=StopAt(32))
    return out


def _copy(src, tmp_path):
    import shutil
    return Path(shutil.copytree(src, tmp_path / "run"))


@pytest.mark.parametrize("damage", ["gone", "short"])
@pytest.mark.parametrize("name", ["metrics.jsonl", "train_pretrain.csv", "eval.csv"])
def test_resume_refuses_when_a_metrics_file_is_gone_or_short(tmp_path, capsys, stopped, name,
                                                              damage):
    out = _copy(stopped, tmp_path)
    path = out / name
    recorded = load_run_checkpoint(out / "checkpoint.h5")[1]["metrics_sizes"][name]
    if damage == "gone":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:recorded - 1])
    before = _files(out)
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 1
    line = _one_line(capsys)
    assert line.startswith(f"run_mnist.py: error: cannot resume: {path}")
    assert ("is gone" if damage == "gone" else "fewer than the") in line
    assert _files(out) == before


# ---- checkpoints: every byte is checked ------------------------------------------------

def _small_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"model/q.h0.W": rng.standard_normal((6, 5)).astype(np.float32),
              "model/hyper.lr": np.float32(1e-3)}
    meta = {"update": 15, "config": P.get_preset("tiny").to_dict(),
            "rng": {"data": rng.bit_generator.state}, "metrics_sizes": {"eval.csv": 1234},
            "data_digest": "ab" * 32}
    return save_run_checkpoint(tmp_path / "checkpoint.h5", arrays, meta)


def test_a_flipped_bit_anywhere_is_a_one_line_checkpoint_error(tmp_path):
    path = _small_checkpoint(tmp_path)
    data = path.read_bytes()
    meta_at = data.find(b'"metrics_sizes"')
    header = data.find(b"\x89HDF")
    assert 0 < header and meta_at > header
    # the vgsn header, HDF5's superblock, the metadata (config, RNG states, sizes) and
    # evenly spread bytes
    spots = sorted({0, 30, 100, header, header + 9, header + 40, meta_at + 2,
                    data.find(b'"state"') + 3, data.find(b'"data_digest"') + 20,
                    *range(header, len(data), max(1, (len(data) - header) // 40))})
    for at in spots:
        for bit in (0x01, 0x80):
            raw = bytearray(data)
            raw[at] ^= bit
            path.write_bytes(bytes(raw))
            with pytest.raises(CheckpointError) as err:
                load_run_checkpoint(path)
            msg = str(err.value)
            assert "\n" not in msg and str(path) in msg, (at, msg)
    for cut in (0, 5, 511, 512, header + 100, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="not loaded"):
            load_run_checkpoint(path)
    path.write_bytes(data + b"tail")
    with pytest.raises(CheckpointError, match="checksum"):
        load_run_checkpoint(path)
    path.write_bytes(b"PK\x03\x04 a zip file, say")
    with pytest.raises(CheckpointError, match="not a vgsn run checkpoint"):
        load_run_checkpoint(path)
    path.write_bytes(data)
    assert load_run_checkpoint(path)[1]["metrics_sizes"] == {"eval.csv": 1234}


def test_the_checkpoint_is_still_an_hdf5_file(tmp_path):
    import h5py

    path = _small_checkpoint(tmp_path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == checkpoints.RUN_FORMAT
        assert f["arrays/model/q.h0.W"].shape == (6, 5)


# ---- write failures: full disk, read-only ---------------------------------------------

def _failing_write_all(fail_errno, when):
    """``checkpoints._write_all`` that writes half of the bytes, then fails."""
    real = checkpoints._write_all
    calls = {"n": 0}

    def write_all(fd, data):
        calls["n"] += 1
        if when(calls["n"]):
            real(fd, bytes(data)[:len(data) // 2])
            raise OSError(fail_errno, __import__("os").strerror(fail_errno))
        real(fd, data)
    return write_all


def test_a_full_disk_while_checkpointing_stops_cleanly_and_resumes(tmp_path, reference,
                                                                    monkeypatch, capsys):
    out = tmp_path / "run"
    # Each checkpoint is two writes (header, image): fail the image of the second one.
    monkeypatch.setattr(checkpoints, "_write_all",
                        _failing_write_all(errno.ENOSPC, lambda n: n == 4))
    code = cli.cli_main(["--preset", "tiny", "--no-figures", "--quiet", "--out", str(out)],
                        "mnist")
    line = _one_line(capsys)
    assert code == 1
    assert line.startswith("run_mnist.py: error: update 30: ")
    assert "No space left on device" in line
    assert f"Last good checkpoint: {out / 'checkpoint.h5'} (update 15), still loadable" in line
    assert f"--resume {out}" in line
    assert load_run_checkpoint(out / "checkpoint.h5")[1]["update"] == 15
    assert not list(out.glob(".*tmp*"))          # no half-written temporary left
    monkeypatch.undo()                           # space is back
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 0
    capsys.readouterr()
    _assert_same_run(out, reference)


@pytest.mark.parametrize("fail_errno", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failing_metrics_write_stops_with_one_line_and_resumes(tmp_path, reference,
                                                                  monkeypatch, capsys,
                                                                  fail_errno):
    """A full disk, a read-only mount, a permission taken away, mid-line; the full
    disk is resumed once space is back (the others stop the same way)."""
    out = tmp_path / "run"

    def fail():
        raise OSError(fail_errno, os.strerror(fail_errno), str(out / "metrics.jsonl"))
    # metrics.jsonl opened for append: half of the 5th row (update 20), then the error.
    monkeypatch.setattr(runfiles, "open", torn_opener(open, lambda p: p.name == "metrics.jsonl",
                                                      5, fail), raising=False)
    code = cli.cli_main(["--preset", "tiny", "--no-figures", "--quiet", "--out", str(out)],
                        "mnist")
    line = _one_line(capsys)
    assert code == 1
    assert line.startswith("run_mnist.py: error: update ")
    assert f"cannot write {out / 'metrics.jsonl'} ({__import__('os').strerror(fail_errno)})" \
        in line
    assert "still loadable" in line
    torn = (out / "metrics.jsonl").read_text()
    assert not torn.endswith("\n")               # the torn line is there
    assert load_run_checkpoint(out / "checkpoint.h5")[1]["update"] == 15
    if fail_errno != errno.ENOSPC:
        return
    monkeypatch.undo()
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 0
    capsys.readouterr()
    _assert_same_run(out, reference)


def test_a_read_only_folder_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    def no_write(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "run"))
    monkeypatch.setattr(Path, "mkdir", no_write)
    with pytest.raises(SystemExit) as exit_:
        cli.cli_main(["--preset", "tiny", "--quiet", "--out", str(tmp_path / "run")], "mnist")
    assert exit_.value.code == 2
    assert "cannot write there (Read-only file system)" in _one_line(capsys)
    assert list(tmp_path.iterdir()) == []


# ---- pretrained.h5: there at the end, whatever was killed when ---------------------------

@pytest.mark.parametrize("target", ["pretrained.h5", "checkpoint.h5"])
def test_a_kill_while_writing_the_fork_checkpoints_still_ends_with_pretrained(
        tmp_path, reference, monkeypatch, target):
    out = tmp_path / "run"
    real = checkpoints.save_run_checkpoint

    def save(path, arrays, meta):
        if Path(path).name == target and meta["update"] == 40:
            real_write = checkpoints._write_all

            def half(fd, data):
                real_write(fd, bytes(data)[:len(data) // 2])
                raise Killed
            monkeypatch.setattr(checkpoints, "_write_all", half)
        return real(path, arrays, meta)
    monkeypatch.setattr(loop, "save_run_checkpoint", save)
    with pytest.raises(Killed):
        train.run(_tiny(), out, quiet=True)
    monkeypatch.undo()
    assert load_run_checkpoint(out / "checkpoint.h5")[1]["update"] == 30   # before the fork
    train.resume(out, quiet=True)
    _assert_same_run(out, reference)


def test_resume_past_the_fork_refuses_without_pretrained(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(runfiles.Interrupted):
        train.run(_tiny(), out, quiet=True, hooks=StopAt(46))
    (out / "pretrained.h5").unlink()
    before = _files(out)
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 1
    line = _one_line(capsys)
    assert "cannot resume: " in line and "pretrained.h5" in line and "model at the fork" in line
    assert _files(out) == before


# ---- data identity -----------------------------------------------------------------------

def test_resume_on_changed_data_refuses(tmp_path, monkeypatch, capsys, stopped):
    out = _copy(stopped, tmp_path)
    real = rundata.load_dataset

    def reversed_columns(*a, **k):
        d = real(*a, **k)
        return replace(d, train=d.train[:, ::-1].copy())
    monkeypatch.setattr(rundata, "load_dataset", reversed_columns)
    before = _files(out)
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 1
    line = _one_line(capsys)
    assert "are not the data this run was trained on" in line
    assert _files(out) == before


def test_the_data_digest_sees_one_pixel():
    d = rundata.load_dataset("digits")
    changed = d.test.copy()
    changed[3, 5] = np.nextafter(changed[3, 5], np.float32(2))
    assert rundata.data_digest(d) == rundata.data_digest(replace(d))
    assert rundata.data_digest(d) != rundata.data_digest(replace(d, test=changed))


# ---- data: fall back only when absent ------------------------------------------------------

def _broken_mnist(folder):
    folder.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / f"{stem}.gz").write_bytes(gzip.compress(b"\0\0\x08\x03 not mnist"))
    return folder


def test_a_broken_mnist_is_reported_never_replaced_by_the_digits(tmp_path, capsys):
    data = _broken_mnist(tmp_path / "data")
    with pytest.raises(runfiles.TrainingError) as err:
        rundata.load_data(P.get_preset("quick"), data)
    assert "not found" not in str(err.value) and "md5" in str(err.value)
    out = tmp_path / "run"
    assert cli.cli_main(["--quick", "--data-dir", str(data), "--out", str(out), "--quiet"],
                        "mnist") == 2       # a bad input, as a bad argument
    line = _one_line(capsys)
    assert line.startswith("run_mnist.py: error: ") and "train-images" in line
    assert not out.exists()


def test_a_named_dataset_is_never_replaced(tmp_path, monkeypatch, capsys):
    def offline(*a, **k):
        raise DatasetError(f"{tmp_path}: MNIST download failed (offline). Fix: put the "
                                 f"files there", missing=True)
    monkeypatch.setattr("vgsn.data.datasets.fetch", offline)
    out = tmp_path / "run"
    assert cli.cli_main(["--quick", "--dataset", "mnist", "--data-dir", str(tmp_path),
                         "--out", str(out), "--quiet"], "mnist") == 1
    assert "MNIST" in _one_line(capsys)
    assert not out.exists()


# ---- every setting checked before anything is written -----------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["--set", "z_dim=none"], "z_dim must be a whole number, got 'none'"),
    (["--set", "q_hidden=none"], "q_hidden must be"),
    (["--set", "seed=-1"], "seed must be in [0, 2**32), got -1"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--set", "max_norm=0"], "max_norm must be > 0, got 0.0"),
    (["--set", "max_norm=-3"], "max_norm must be > 0"),
    (["--set", "logvar_bound=0"], "logvar_bound must be > 0, got 0.0"),
    (["--set", "lr_gen=inf"], "lr_gen must be a finite number, got 'inf'"),
    (["--set", "pretrain_lr=nan"], "pretrain_lr must be a finite number, got 'nan'"),
    (["--set", "chain_rows=0"], "chain_rows must be >= 1, got 0"),
    (["--set", "chain_length=0"], "chain_length must be >= 1, got 0"),
    (["--updates", "1" + "0" * 30], "--updates must be at most 1,000,000,000"),
    (["--set", "chain_updates=" + "9" * 12], "must be at most 1,000,000,000"),
])
def test_impossible_settings_are_one_line_before_anything_is_written(tmp_path, capsys, argv,
                                                                      needle):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli.cli_main(["--preset", "tiny", "--out", str(out), *argv], "mnist")
    assert exit_.value.code == 2
    line = _one_line(capsys)
    assert line.startswith("run_mnist.py: error: ") and needle in line, line
    assert not out.exists()


def test_updates_split_in_whole_numbers():
    parser = cli.build_parser("mnist")
    for n in (1000, 999_999_999, 7):
        args = parser.parse_args(["--preset", "mnist2-ork", "--updates", str(n)])
        c = cli.config_from_args(args, parser, "mnist")
        assert c.pretrain_updates + c.chain_updates == n
        assert c.pretrain_updates == (2 * n * 80_000 + 200_000) // 400_000   # 80k : 120k


def test_a_split_without_valid_or_test_images_stops_before_training(tmp_path, monkeypatch,
                                                                      capsys):
    d = rundata.load_dataset("digits")

    def no_valid(config, data_dir=None):
        return replace(d, valid=d.valid[:0], valid_labels=None, source="TFD_48x48.mat fold 3"), \
            None
    monkeypatch.setattr(train, "load_data", no_valid)
    out = tmp_path / "run"
    assert cli.cli_main(["--preset", "tiny", "--out", str(out), "--quiet"], "mnist") == 1
    line = _one_line(capsys)
    assert "TFD_48x48.mat fold 3: no valid images" in line
    assert not out.exists()


# ---- messages that help -------------------------------------------------------------------

def test_a_run_stopped_before_its_first_checkpoint_is_not_offered_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.cli_main(["--preset", "tiny", "--no-figures", "--quiet", "--out", str(out)],
                        "mnist", hooks=StopAt(7)) == 130
    line = _one_line(capsys)
    assert "No checkpoint had been written yet" in line and "--resume" not in line
    before = _files(out)
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == 1
    line = _one_line(capsys)
    assert "stopped before its first checkpoint" in line and "start the run again" in line
    with pytest.raises(SystemExit):
        cli.cli_main(["--preset", "tiny", "--quiet", "--out", str(out)], "mnist")
    line = _one_line(capsys)
    assert "stopped before its first checkpoint" in line and "--resume" not in line
    assert _files(out) == before


class PoisonAt(loop.Hooks):
    """Update ``k`` runs with a NaN learning rate, unless it was lowered on resume."""

    def __init__(self, k):
        self.k = k

    def before_step(self, run):
        if run.update + 1 == self.k and run.config.pretrain_lr == P.get_preset("tiny").pretrain_lr:
            var = run.model.hyper.var("lr") if hasattr(run.model.hyper, "var") \
                else getattr(run.model.hyper, "lr")
            var.set_value(np.asarray(np.nan, dtype=var.dtype))


def test_after_a_divergence_resume_with_a_lower_learning_rate(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--chain-updates", "0", "--no-figures", "--quiet",
            "--out", str(out)]
    assert cli.cli_main(argv, "mnist", hooks=PoisonAt(22)) == 1
    line = _one_line(capsys)
    lower = f"--set pretrain_lr={P.get_preset('tiny').pretrain_lr / 2:.3g}"
    # the NaN step rate makes update 22's parameters NaN: update 23's cost shows it
    assert "update 23: the pretrain cost is not finite" in line
    assert f"--resume {out} {lower}" in line and "lower the learning rate" in line
    # shapes cannot change on resume; the schedule can
    with pytest.raises(SystemExit) as exit_:
        cli.cli_main(["--resume", str(out), "--set", "z_dim=3"], "mnist")
    assert exit_.value.code == 2 and "--set z_dim cannot change" in _one_line(capsys)
    assert cli.cli_main(["--resume", str(out), "--quiet", *lower.split()], "mnist",
                        hooks=PoisonAt(22)) == 0
    capsys.readouterr()
    arrays, meta = load_run_checkpoint(out / "checkpoint.h5")
    assert meta["config"]["pretrain_lr"] == P.get_preset("tiny").pretrain_lr / 2
    assert meta["overrides"] == [{"update": 15, "field": "pretrain_lr",
                                  "old": P.get_preset("tiny").pretrain_lr,
                                  "new": P.get_preset("tiny").pretrain_lr / 2}]
    assert "--set pretrain_lr=" in (out / "log.txt").read_text()
    assert all(np.all(np.isfinite(v)) for v in arrays.values())


# ---- python -m vgsn.compare ----------------------------------------------------------------

@pytest.fixture
def stub_pair(monkeypatch):
    """compare's q/p reading replaced by a 4-pixel stand-in (the images are the test)."""
    import types

    import vgsn.compat2015.convert as o
    model = types.SimpleNamespace(x_dim=4, z_dim=2)
    monkeypatch.setattr(o, "read_2015_infnet", lambda path: types.SimpleNamespace(
        summary=lambda: "stub"))
    monkeypatch.setattr(o, "load_2015_model", lambda q, p, **k: model)


@pytest.mark.parametrize("array,needle", [
    (np.array([[0.1, np.nan, 0.2, 0.3]]), "1 values are NaN or infinite"),
    (np.array([[0.1, np.inf, 0.2, 0.3]]), "NaN or infinite"),
    (np.array(0.5), "an array of shape (), expected (rows, pixels)"),
    (np.zeros(4), "an array of shape (4,)"),
])
def test_compare_refuses_bad_images_in_one_line(tmp_path, capsys, stub_pair, array, needle):
    path = tmp_path / "x.npy"
    np.save(path, array)
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--q", "q.pkl", "--p", "p.pkl", "--images", str(path)])
    assert exit_.value.code == 2
    line = _one_line(capsys)
    assert line.startswith(f"python -m vgsn.compare: error: {path}: ") and needle in line


def test_compare_names_a_corrupt_file(tmp_path, capsys):
    bad = tmp_path / "q.pkl.gz"
    good = gzip.compress(b"x" * 1000)
    bad.write_bytes(good[:12] + bytes(b ^ 0x5A for b in good[12:-8]) + good[-8:])
    npy = tmp_path / "x.npy"
    npy.write_bytes(b"\x93NUMPY garbage")
    for argv in (["--q", str(bad), "--p", str(bad), "--images", str(npy)],):
        with pytest.raises(SystemExit) as exit_:
            compare.main(argv)
        assert exit_.value.code == 2
        assert f"{bad}: corrupt or truncated gzip stream" in _one_line(capsys)


def test_compare_names_an_unreadable_npy(tmp_path, capsys, stub_pair):
    npy = tmp_path / "x.npy"
    npy.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--q", "q", "--p", "p", "--images", str(npy)])
    assert exit_.value.code == 2
    assert f"{npy}: not a readable .npy file" in _one_line(capsys)


# ---- SIGKILL at random points: the fault-injection script ----------------------------------

def test_fault_resume_script_holds_at_two_points(tmp_path):
    """Two of ``benchmarks/fault_resume.py``'s kinds of kill (mid-checkpoint and a torn
    metrics line), each resumed and compared bit for bit with an uninterrupted run."""
    res = subprocess.run([sys.executable, "benchmarks/fault_resume.py", "--points", "2",
                          "--seed", "1", "--kinds", "checkpoint,metrics", "--work",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 of 2 points resumed bit for bit" in res.stdout

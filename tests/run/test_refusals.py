"""``--resume`` checks everything, then touches anything: each refusal is one line, and
the run folder is byte for byte as it was (a checkpoint of another run copied in, an
edited one whose arrays do not fit its settings, one of 65 inputs against 64 pixels,
metadata that names a file that is not the run's)."""
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vgsn.run import cli
from vgsn.run import folder as runfiles
from vgsn.run import presets as P
from vgsn.run import train
from vgsn.run.checkpoints import CheckpointError, load_run_checkpoint, save_run_checkpoint

from _runcheck import StopAt  # noqa: E402


def _tiny(**kw):
    return replace(P.get_preset("tiny"), figures=False, **kw)


def _files(folder):
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    """A tiny run stopped at update 47 (last checkpoint 45, past the fork at 40)."""
    out = tmp_path_factory.mktemp("forked") / "run"
    with pytest.raises(runfiles.Interrupted):
        train.run(_tiny(), out, quiet=True, hooks=StopAt(47))
    return out


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """Another run (seed 1) stopped at update 17 (last checkpoint 15)."""
    out = tmp_path_factory.mktemp("other") / "run"
    with pytest.raises(runfiles.Interrupted):
        train.run(_tiny(seed=1), out, quiet=True, hooks=StopAt(17))
    return out


def _copy(src, tmp_path):
    return Path(shutil.copytree(src, tmp_path / "run"))


def _refused(capsys, out, status):
    before = _files(out)
    assert cli.cli_main(["--resume", str(out), "--quiet"], "mnist") == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("run_mnist.py: error: cannot resume: "), err[0]
    assert _files(out) == before
    return err[0]


def _resave(path, arrays=None, meta=None, drop=()):
    """The checkpoint at ``path`` written again (a valid checksum) with changes."""
    a, m = load_run_checkpoint(path)
    a.update(arrays or {})
    m.update(meta or {})
    for k in drop:
        m.pop(k, None)
    save_run_checkpoint(path, a, m)


@pytest.mark.parametrize("old", [False, True], ids=["digests", "old-checkpoint"])
def test_a_checkpoint_of_another_run_is_refused_before_any_file_is_cut(tmp_path, capsys,
                                                                       forked, other, old):
    out = _copy(forked, tmp_path)
    shutil.copy(other / "checkpoint.h5", out / "checkpoint.h5")
    if old:       # a checkpoint written before metrics_digests: the cut is checked instead
        _resave(out / "checkpoint.h5", drop=("metrics_digests",))
    line = _refused(capsys, out, 1)
    assert f"of {out}/" in line and "are not the ones" in line and "another run" in line, line


def test_metadata_naming_a_file_that_is_not_the_runs_is_refused(tmp_path, capsys, forked):
    out = _copy(forked, tmp_path)
    sizes = load_run_checkpoint(out / "checkpoint.h5")[1]["metrics_sizes"]
    sizes["evbl.csv"] = sizes.pop("eval.csv")      # one flipped byte in a key
    _resave(out / "checkpoint.h5", meta={"metrics_sizes": sizes})
    line = _refused(capsys, out, 1)
    assert "its metadata lists evbl.csv among the run's metrics files" in line, line


@pytest.mark.parametrize("name", ["model/q.h1.W", "loop/guide.h0.W"])
def test_arrays_that_do_not_fit_the_model_are_one_line_exit_2(tmp_path, capsys, forked,
                                                              name):
    out = _copy(forked, tmp_path)
    arrays, _ = load_run_checkpoint(out / "checkpoint.h5")
    if name not in arrays:
        name = sorted(k for k in arrays if k.startswith(name.split("/")[0] + "/")
                      and arrays[k].ndim == 2)[0]
    _resave(out / "checkpoint.h5", arrays={name: arrays[name][:, :-1]})
    line = _refused(capsys, out, 2)
    short = name.split("/", 1)[1]
    assert f"{out / 'checkpoint.h5'}: {short}: shape " in line and "does not fit" in line, line
    if name.startswith("model/"):          # load_models builds the models, not the guide
        with pytest.raises(CheckpointError, match=f"{short}: shape .* do not fit"):
            train.load_models(out)


def test_65_inputs_against_64_pixels_names_both_files(tmp_path, capsys, forked):
    out = _copy(forked, tmp_path)
    arrays, _ = load_run_checkpoint(out / "checkpoint.h5")
    W = arrays["model/q.h0.W"]
    _resave(out / "checkpoint.h5", arrays={"model/q.h0.W": np.vstack([W, W[:1]])})
    line = _refused(capsys, out, 2)
    assert f"the model in {out / 'checkpoint.h5'} has 65 inputs, the dataset " in line, line
    assert "64 pixels" in line and "digits" in line, line

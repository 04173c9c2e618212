"""The last tracebacks of run_mnist.py / run_tfd.py are one line each, exit status 2, no
Python warning before them: an unknown VGSN_MODE, a mode this install cannot run
(``--backend jax`` or a run's config.json saying jax on Python 3.11), ``--data-dir``
naming a file, a data file of NaNs."""
import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest

from vgsn.run import cli
from vgsn.run import folder as runfiles
from vgsn.run import presets as P
from vgsn.run import train

from _paths import ROOT  # noqa: E402
from _runcheck import StopAt  # noqa: E402

ON_AESARA = sys.version_info < (3, 12)


def _script(args, env=None, script="mnist"):
    """``run_<script>.py ARGS`` in a fresh process: (status, stderr lines)."""
    res = subprocess.run([sys.executable, str(ROOT / f"run_{script}.py")] + args,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return res.returncode, res.stderr.strip().splitlines()


def test_an_unknown_vgsn_mode_is_one_line(tmp_path):
    out = tmp_path / "run"
    code, err = _script(["--preset", "tiny", "--out", str(out), "--quiet"],
                        env={"VGSN_MODE": "tpu"})
    assert code == 2 and len(err) == 1, err
    assert err[0] == ("run_mnist.py: error: VGSN_MODE='tpu' is not a mode: set it to C, JAX or "
                      "NUMBA (or unset it)")
    assert not out.exists()


@pytest.mark.skipif(not ON_AESARA, reason="Python >= 3.12 runs JAX")
def test_backend_jax_on_python_3_11_is_one_line(tmp_path):
    out = tmp_path / "run"
    code, err = _script(["--preset", "tiny", "--out", str(out), "--backend", "jax", "--quiet"])
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("run_mnist.py: error: --backend jax, which this install cannot "
                             "run: it needs PyTensor"), err[0]
    assert "use --backend c" in err[0]
    assert not out.exists()


@pytest.mark.skipif(not ON_AESARA, reason="Python >= 3.12 runs JAX")
def test_a_run_recorded_on_jax_resumed_on_python_3_11_is_one_line(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(runfiles.Interrupted):
        train.run(replace(P.get_preset("tiny"), figures=False, chain_updates=0), out,
                  quiet=True, hooks=StopAt(17))
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "backend": "jax"}))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, err = _script(["--resume", str(out), "--quiet"])
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"run_mnist.py: error: {out / 'config.json'} says backend jax, "
                             f"which this install cannot run"), err[0]
    assert f"--resume {out} --backend c continues it on C" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_data_dir_naming_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "mnist.pkl.gz"
    afile.write_bytes(b"x")
    out = tmp_path / "run"
    for argv, env, flag in ((["--data-dir", str(afile)], None, f"--data-dir {afile}"),
                            ([], str(afile), f"VGSN_DATA={afile}")):
        if env:
            monkeypatch.setenv("VGSN_DATA", env)
        with pytest.raises(SystemExit) as exit_:
            cli.cli_main(["--preset", "tiny", "--dataset", "mnist", "--out", str(out),
                          "--quiet"] + argv, "mnist")
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"run_mnist.py: error: {flag}: is a file, not a folder; give the folder "
                       f"that holds the data files"]
        assert not out.exists()


def test_a_frey_file_of_nans_is_one_line_without_warnings(tmp_path, capsys):
    import scipy.io

    data = tmp_path / "data"
    data.mkdir()
    scipy.io.savemat(data / "frey_rawface.mat",
                     {"ff": np.full((560, 1965), np.nan, dtype=np.float64)})
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.cli_main(["--preset", "tfd-quick", "--dataset", "frey", "--data-dir",
                             str(data), "--out", str(out), "--quiet"], "tfd")
    assert [str(w.message) for w in caught] == []
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"run_tfd.py: error: {data / 'frey_rawface.mat'}: 1,100,400 of "
                                 f"its 1,100,400 pixel values are NaN or infinite. Fix: replace "
                                 f"the file with a good copy"]
    assert not out.exists()

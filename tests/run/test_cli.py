"""run_mnist.py / run_tfd.py: help, one-line errors, overrides, data selection."""
import subprocess
import sys
import types
from pathlib import Path

import pytest

from vgsn.run import cli
from vgsn.data import datasets
from vgsn.run import train
from vgsn.run import folder
from vgsn.run import data as rundata
from vgsn.run import presets as P

from _paths import FACES_DIR, MNIST_DIR, ROOT  # noqa: E402


@pytest.mark.parametrize("script", ["mnist", "tfd"])
def test_help_lists_every_preset_on_one_line(script):
    res = subprocess.run([sys.executable, str(ROOT / f"run_{script}.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    for name in P.preset_names(script):
        mine = [ln for ln in lines if ln.startswith(f"  {name} ")]
        assert len(mine) == 1, name
        assert P.PRESETS[name].summary in mine[0]
    for flag in ("--quick", "--resume", "--updates", "--data-dir", "--out", "--seed", "--code2015"):
        assert flag in res.stdout


def test_help_and_argument_errors_never_import_the_symbolic_library():
    # Parsing is plain Python: the library (seconds to import) loads once the
    # arguments are good.
    code = ("import sys\n"
            "from vgsn.run import cli\n"
            "for argv in (['--help'], ['--preset', 'nope'], ['--quick', '--updates', '-1'],\n"
            "             ['--quick', '--print-config']):\n"
            "    try:\n"
            "        cli.cli_main(argv, 'mnist')\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in ('aesara', 'pytensor', 'vgsn.backend') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_the_backends_blas_warning_is_a_warning(recwarn):
    cli._show_blas_warning(types.SimpleNamespace(blas_warning=lambda: "vgsn: no BLAS linked"))
    cli._show_blas_warning(types.SimpleNamespace(blas_warning=lambda: None))
    cli._show_blas_warning(types.SimpleNamespace())          # a backend without the check
    assert [str(w.message) for w in recwarn] == ["vgsn: no BLAS linked"]
    assert recwarn[0].category is RuntimeWarning


def test_the_blas_search_noise_is_held_back(capsys, recwarn):
    """numpy.distutils' BLAS search (Aesara's default ``blas__ldflags`` runs it where no
    BLAS is found) warns in paragraphs and prints ``NOT AVAILABLE`` sections: none of
    it shows (``blas_warning`` says it in one line); other output passes through."""
    import warnings
    from vgsn import backend
    with backend.quiet_blas_probe():
        warnings.warn("\n    Blas (http://www.netlib.org/blas/) libraries not found.\n"
                      "    Directories to search for the libraries can be specified", UserWarning)
        warnings.warn("\n    Lapack (http://www.netlib.org/lapack/) sources not found.",
                      UserWarning)
        print("blas_opt_info:\nblas_mkl_info:\n  libraries mkl_rt not found in ['/usr/lib']\n"
              "  NOT AVAILABLE\n")
        print("the library's own line")
        warnings.warn("something else", UserWarning)
    assert capsys.readouterr().out == "the library's own line\n"
    assert [str(w.message) for w in recwarn] == ["something else"]


def _error(capsys, argv, script="mnist"):
    with pytest.raises(SystemExit) as exit_:
        cli.cli_main(argv, script)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_bad_values_get_one_line_errors(capsys, tmp_path):
    assert _error(capsys, ["--quick", "--updates", "-5"]) == \
        "run_mnist.py: error: --updates must be >= 0, got -5"
    line = _error(capsys, ["--preset", "mnist3"])
    assert line.startswith("run_mnist.py: error: --preset 'mnist3' is unknown; choose from")
    assert "'mnist2-ork'" in line and "'quick'" in line
    assert "tfd-ork" in _error(capsys, ["--preset", "nope"], "tfd")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = _error(capsys, ["--quick", "--out", str(blocker / "run")])
    assert line.startswith(f"run_mnist.py: error: --out {blocker / 'run'}: cannot write there")
    assert "--momentum must be a number" in _error(capsys, ["--quick", "--momentum", "x"])
    assert "momentum must be in [0, 1), got 1.5" in _error(capsys, ["--quick", "--momentum", "1.5"])
    assert "unknown setting 'foo'" in _error(capsys, ["--quick", "--set", "foo=1"])
    assert "choose an experiment" in _error(capsys, [])
    assert "drop --seed" in _error(capsys, ["--resume", str(tmp_path), "--seed", "5"])
    assert not (tmp_path / "a_file").is_dir() and list(tmp_path.iterdir()) == [blocker]


def test_out_holding_a_run_is_refused(capsys, tmp_path):
    (tmp_path / "checkpoint.h5").write_bytes(b"")
    line = _error(capsys, ["--quick", "--out", str(tmp_path)])
    assert f"--resume {tmp_path}" in line


def test_overrides_reach_the_config():
    parser = cli.build_parser("mnist")
    args = parser.parse_args(["--preset", "mnist2-ork", "--updates", "1000", "--seed", "7",
                              "--code2015", "--set", "q_hidden=50,40", "--set", "z_dim=3"])
    c = cli.config_from_args(args, parser, "mnist")
    assert (c.pretrain_updates, c.chain_updates) == (400, 600)   # the preset's 80k : 120k
    assert (c.seed, c.momentum, c.step_decay, c.q_hidden, c.z_dim) == (7, 0.5, 0.0, (50, 40), 3)
    args = parser.parse_args(["--quick", "--pretrain-updates", "10", "--chain-updates", "0",
                              "--dataset", "digits", "--step-decay", "0.5", "--no-figures"])
    c = cli.config_from_args(args, parser, "mnist")
    assert (c.name, c.pretrain_updates, c.chain_updates, c.dataset, c.fallback_dataset,
            c.step_decay, c.figures) == ("quick", 10, 0, "digits", None, 0.5, False)


def test_quick_never_downloads_and_falls_back_to_digits(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the demo must not download")
    monkeypatch.setattr(datasets, "fetch", no_network)
    data, note = rundata.load_data(P.get_preset("quick"), tmp_path)
    assert data.name == "digits" and data.image_shape == (8, 8)
    assert note == f"mnist not found in {tmp_path}, so the stand-in digits"
    assert data.source.startswith("bundled scikit-learn digits")


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="MNIST not in ../shared/data/mnist")
def test_quick_uses_mnist_when_present():
    data, note = rundata.load_data(P.get_preset("quick"), MNIST_DIR)
    assert data.name == "mnist" and note is None
    assert data.train.shape == (50_000, 784)


def test_tfd_missing_explains_and_offers_the_stand_ins(capsys, tmp_path):
    out = tmp_path / "run"
    code = cli.cli_main(["--preset", "tfd-ork", "--data-dir", str(tmp_path), "--out", str(out)],
                          "tfd")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("run_tfd.py: error: ") and "TFD is not public" in err[0]
    assert "--dataset olivetti" in err[0] and "--dataset frey" in err[0]
    assert not out.exists()      # nothing left behind
    # the demo takes a stand-in when there is one and says so; none there: one line
    # naming TFD once and each stand-in it looked for
    with pytest.raises(folder.TrainingError) as exc:
        rundata.load_data(P.get_preset("tfd-quick"), tmp_path)
    assert str(exc.value).count("TFD is not public") == 1
    assert ("the stand-ins this preset uses instead are missing too: olivetti "
            "(olivettifaces.mat: file not found") in str(exc.value)


@pytest.mark.skipif(not (FACES_DIR / "olivettifaces.mat").is_file(), reason="no Olivetti faces")
def test_tfd_demo_takes_a_face_stand_in_and_says_so():
    data, note = rundata.load_data(P.get_preset("tfd-quick"), FACES_DIR)
    assert data.name == "olivetti" and data.image_shape == (48, 48)
    assert note == f"tfd not found in {FACES_DIR}, so the stand-in olivetti"
    assert "Olivetti" in data.source

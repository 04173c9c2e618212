"""``python -m vgsn.compare``: an image file holding no images and a negative ``--seed`` are
one line naming the file or the flag, exit status 2."""
import types

import numpy as np
import pytest

from vgsn.compat2015 import compare


@pytest.fixture
def stub_pair(monkeypatch):
    """compare's q/p reading replaced by a 4-pixel stand-in (the images are the test)."""
    import vgsn.compat2015.convert as o
    model = types.SimpleNamespace(x_dim=4, z_dim=2)
    monkeypatch.setattr(o, "read_2015_infnet", lambda path: types.SimpleNamespace(
        summary=lambda: "stub"))
    monkeypatch.setattr(o, "load_2015_model", lambda q, p, **k: model)


def _refused(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        compare.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("shape", [(0, 4), (0, 2, 2), (0,)])
def test_an_image_file_of_no_images_is_one_line(tmp_path, capsys, stub_pair, shape):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(shape, np.float32))
    line = _refused(capsys, ["--q", "q", "--p", "p", "--images", str(path)])
    if len(shape) == 1:
        assert line == (f"python -m vgsn.compare: error: {path}: an array of shape (0,), "
                        f"expected (rows, pixels) or (rows, h, w)")
    else:
        assert line == (f"python -m vgsn.compare: error: {path}: holds no images (an array of "
                        f"shape {shape}). Fix: give a file with at least one image")


def test_a_negative_seed_names_the_flag(tmp_path, capsys, stub_pair):
    path = tmp_path / "x.npy"
    np.save(path, np.full((2, 4), 0.5, np.float32))
    line = _refused(capsys, ["--q", "q", "--p", "p", "--images", str(path), "--seed", "-1"])
    assert line == ("python -m vgsn.compare: error: --seed -1: must be >= 0. Fix: give --seed 0 "
                    "or more")

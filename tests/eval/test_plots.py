"""Tests of vgsn.eval.plots: valid PNGs of the predicted pixel size, with the images in them."""
import numpy as np
import pytest
from matplotlib.image import imread

from vgsn.eval import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Q = 1.0 / 255  # 8-bit quantisation of the PNG: level v is stored as round(255 v)


def read_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_SIGNATURE
    img = imread(path)
    assert img.size > 0
    return img


def grey(img):
    """Grey levels of a PNG read back; an RGB(A) one must really be grey."""
    if img.ndim == 2:
        return img
    np.testing.assert_allclose(img[..., 0], img[..., 1], atol=Q)
    np.testing.assert_allclose(img[..., 0], img[..., 2], atol=Q)
    return img[..., 0]


def tile(img, r, c, h, w, sep=1, scale=1):
    y, x = scale * (sep + r * (h + sep)), scale * (sep + c * (w + sep))
    return img[y:y + scale * h:scale, x:x + scale * w:scale]


@pytest.mark.parametrize("shape", [(28, 28), (48, 48), (8, 8), (28, 20)])
def test_image_grid_size_and_pixels(tmp_path, shape):
    h, w = shape
    rng = np.random.default_rng(0)
    X = rng.random((7, h * w))
    path = plots.image_grid(X, shape, tmp_path / "grid.png", ncols=3)
    img = grey(read_png(path))
    assert img.shape == (3 * (h + 1) + 1, 3 * (w + 1) + 1)
    # Image 4 sits in row 1, column 1, pixel for pixel.
    np.testing.assert_allclose(tile(img, 1, 1, h, w), X[4].reshape(h, w), atol=0.5 * Q + 1e-6)
    # Separators and the two empty tiles of the last row are mid grey.
    np.testing.assert_allclose(img[0], 0.5, atol=Q)
    np.testing.assert_allclose(img[:, w + 1], 0.5, atol=Q)
    np.testing.assert_allclose(tile(img, 2, 2, h, w), 0.5, atol=Q)


def test_image_grid_scale_and_clipping(tmp_path):
    X = np.zeros((4, 8, 8))
    X[0, 2, 3] = 1.7   # clipped to white
    X[1, 5, 5] = -3.0  # clipped to black
    X[2] = 0.25
    path = plots.image_grid(X, (8, 8), tmp_path / "g.png", scale=3)
    img = grey(read_png(path))
    assert img.shape == (3 * (2 * 9 + 1), 3 * (2 * 9 + 1))
    assert img[3 * (1 + 2), 3 * (1 + 3)] == pytest.approx(1.0, abs=Q)
    assert img[3 * (1 + 2) + 2, 3 * (1 + 3) + 2] == pytest.approx(1.0, abs=Q)  # whole block
    np.testing.assert_allclose(tile(img, 1, 0, 8, 8, scale=3), 0.25, atol=0.5 * Q + 1e-6)
    assert tile(img, 0, 1, 8, 8, scale=3)[5, 5] == pytest.approx(0.0, abs=Q)


def test_tile_images_layout():
    X = np.arange(5)[:, None] * np.ones((5, 6)) / 10  # image i is constant i / 10
    m = plots.tile_images(X, (2, 3), ncols=2, sep=2, sep_value=0.9)
    assert m.shape == (3 * 4 + 2, 2 * 5 + 2)
    assert np.all(m[2:4, 2:5] == 0.0) and np.all(m[2:4, 7:10] == 0.1)
    assert np.all(m[6:8, 2:5] == 0.2) and np.all(m[10:12, 2:5] == 0.4)
    assert np.all(m[10:12, 7:10] == 0.9)  # the missing sixth tile


def test_chain_strip_every_kth_state_start_first(tmp_path):
    rng = np.random.default_rng(1)
    states = rng.random((11, 3, 28 * 20))  # 10 steps, 3 chains, 28x20 images
    path = plots.chain_strip(states, (28, 20), tmp_path / "chain.png", every=5)
    img = grey(read_png(path))
    assert img.shape == (3 * 29 + 1, 3 * 21 + 1)  # states 0, 5, 10
    for chain in range(3):
        for col, t in enumerate((0, 5, 10)):
            np.testing.assert_allclose(tile(img, chain, col, 28, 20),
                                       states[t, chain].reshape(28, 20), atol=0.5 * Q + 1e-6)


def test_chains_side_by_side_marks_the_clamped_region(tmp_path):
    rng = np.random.default_rng(2)
    free = rng.random((7, 2, 64))
    controlled = rng.random((7, 2, 64))
    mask = np.zeros((8, 8))
    mask[:4, :4] = 1
    path = plots.chains_side_by_side(free, controlled, (8, 8), tmp_path / "side.png",
                                     every=2, mask=mask, gap=4)
    img = read_png(path)[..., :3]
    left_w = 4 * 9 + 1
    assert img.shape == (2 * 9 + 1, 2 * left_w + 4, 3)
    # Left panel: the free chains, grey and untouched.
    np.testing.assert_allclose(tile(grey(img[:, :left_w]), 1, 2, 8, 8),
                               free[4, 1].reshape(8, 8), atol=0.5 * Q + 1e-6)
    right = img[:, left_w + 4:]
    t = tile(right, 0, 3, 8, 8)  # chain 0, state 6
    expect = controlled[6, 0].reshape(8, 8)
    m = mask > 0
    for ch in range(3):  # unclamped pixels keep their grey level exactly
        np.testing.assert_allclose(t[..., ch][~m], expect[~m], atol=0.5 * Q + 1e-6)
    # Clamped pixels are tinted towards the mask colour (red up, blue down).
    assert np.all(t[..., 0][m] >= t[..., 2][m]) and np.mean(t[..., 0][m] - t[..., 2][m]) > 0.2


@pytest.mark.parametrize("name", ["prior", "curves", "scatter", "stems"])
def test_axes_plots_have_the_requested_size(tmp_path, name):
    rng = np.random.default_rng(3)
    path = tmp_path / f"{name}.png"
    if name == "prior":
        samples = {30000: rng.random((16, 784)), 120000: rng.random((16, 784)),
                   60000: rng.random((16, 784))}
        plots.prior_samples_at_updates(samples, (28, 28), path, figsize=(9, 3.5), dpi=80)
        size = (280, 720)
    elif name == "curves":
        ups = np.arange(0, 130000, 10000)
        plots.curves(ups, {"GPDE": 200 + np.sqrt(ups / 1000), "bound": -90 - 1e-4 * ups},
                     path, ylabel="GPDE [nats]", secondary=["bound"], ylabel2="bound [nats]")
        size = (400, 600)
    elif name == "scatter":
        plots.kl_nll_scatter([rng.gamma(5, 10, 1500), rng.gamma(5, 8, 1500)],
                             [rng.gamma(3, 8, 1500), rng.gamma(3, 6, 1500)], path,
                             labels=["30k", "60k"], figsize=(5, 5), dpi=60)
        size = (300, 300)
    else:
        plots.kl_stems(rng.gamma(1, 1, (100, 50)), path, sort=True)
        size = (300, 600)
    img = read_png(path)
    assert img.shape[:2] == size
    # Something was drawn: the picture is not one flat colour.
    assert img[..., :3].std() > 0.02


def test_axes_plots_return_their_figure_and_write_only_when_asked(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    steps = np.arange(6)
    scores = {"guided": dict(step=steps, confidence=rng.random(6), class_tv=rng.random(6),
                             digit_score=1 + 9 * rng.random(6), frechet=rng.random(6))}
    fig = plots.chain_scores(scores, confidence_test=0.98)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert [a.get_title() for a in fig.axes][1:3] == ["diversity (0: data's mix)", "diversity"]
    fig = plots.kl_stems(rng.gamma(1, 1, (10, 5)))
    assert isinstance(fig, Figure) and list(tmp_path.iterdir()) == []
    saved = plots.curves([0, 1], {"a": [1, 2]}, tmp_path / "c.png")
    assert isinstance(saved, Figure) and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_shapes_raise(tmp_path):
    with pytest.raises(ValueError, match="image_shape"):
        plots.image_grid(np.zeros((3, 100)), (28, 28), tmp_path / "x.png")
    with pytest.raises(ValueError, match="states"):
        plots.chain_strip(np.zeros((3, 2, 10)), (8, 8), tmp_path / "x.png")
    with pytest.raises(ValueError, match="secondary"):
        plots.curves([0, 1], {"a": [1, 2]}, tmp_path / "x.png", secondary=["b"])
    with pytest.raises(ValueError, match="values"):
        plots.curves([0, 1], {"a": [1, 2, 3]}, tmp_path / "x.png")

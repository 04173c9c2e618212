"""Figures: image grids, chain strips, curves, the KL / reconstruction scatter.

Every function takes numpy arrays. Plots with axes (``curves``, ``kl_nll_scatter``,
``kl_stems``, ``prior_samples_at_updates``, ``chain_scores``) return their matplotlib
``Figure`` and write it as a PNG only when given a path (in a notebook the returned Figure
shows itself); image mosaics take an output path, write ONE PNG there and return the path.
Nothing is shown and no display is needed. Figures are drawn
with matplotlib's object API on an Agg canvas (``Figure`` + ``FigureCanvasAgg``),
never through ``pyplot``, so importing this module changes no global backend
and works in a notebook, a headless server or a thread alike.

Images are grey levels in [0, 1] (values outside are clipped), given either as
rows of pixels ``(n, h * w)`` or as ``(n, h, w)``; ``image_shape = (h, w)``.
Image mosaics (``image_grid``, ``chain_strip``, ``chains_side_by_side``) are
written pixel for pixel, so their size is exact:

    height = scale * (rows * (h + sep) + sep),  width = scale * (cols * (w + sep) + sep)

with ``sep``-pixel separators (default 1) in ``sep_value`` grey between tiles
and around the border. Plots with axes are ``figsize * dpi`` pixels.

The paper's figures (SPEC.md section 7): Fig. 3 and 4a, chains free and under
partial control (``chains_side_by_side``); Fig. 4b, GPDE and bound against
updates (``curves``); Fig. 4c, -log p(x|z) against KL (``kl_nll_scatter``);
Fig. 4d, prior samples at chosen updates (``prior_samples_at_updates``); Fig. 3
measured, chain scores against chain step (``chain_scores``).
"""
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image  # Pillow: a dependency of matplotlib

__all__ = [
    "tile_images", "image_grid", "chain_strip", "chains_side_by_side",
    "prior_samples_at_updates", "curves", "kl_nll_scatter", "kl_stems", "chain_scores",
]


# ---------------------------------------------------------------------------
# pixel mosaics

def _as_images(X, image_shape, what="X"):
    """(n, h, w) float64 in [0, 1] from (n, h*w) or (n, h, w)."""
    h, w = (int(s) for s in image_shape)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 2 and X.shape[1] == h * w:
        X = X.reshape(-1, h, w)
    if X.ndim != 3 or X.shape[1:] != (h, w):
        raise ValueError(
            f"{what} must be (n, {h * w}) or (n, {h}, {w}) for image_shape {(h, w)}; "
            f"got shape {X.shape}")
    return np.clip(np.nan_to_num(X, nan=0.0), 0.0, 1.0)


def tile_images(X, image_shape, ncols=None, sep=1, sep_value=0.5):
    """Arrange images in a grid with separators; returns the grey mosaic.

    Parameters
    ----------
    X : array (n, h * w) or (n, h, w)
        Grey images in [0, 1], placed row by row.
    image_shape : (h, w)
    ncols : int, optional
        Images per row; default ``ceil(sqrt(n))``. Missing tiles in the last row
        are filled with ``sep_value``.
    sep : int
        Separator width in pixels, between tiles and around the border.
    sep_value : float
        Grey level of the separators (0.5: distinct from black and white).

    Returns
    -------
    mosaic : ndarray float64 (rows * (h + sep) + sep, ncols * (w + sep) + sep)
    """
    imgs = _as_images(X, image_shape)
    n, h, w = imgs.shape
    if n == 0:
        raise ValueError("tile_images needs at least one image")
    ncols = int(ncols) if ncols else int(math.ceil(math.sqrt(n)))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1; got {ncols}")
    if sep < 0:
        raise ValueError(f"sep must be >= 0; got {sep}")
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + sep) + sep, ncols * (w + sep) + sep), float(sep_value))
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = sep + r * (h + sep), sep + c * (w + sep)
        out[y:y + h, x:x + w] = imgs[i]
    return out


def _upscale(mosaic, scale):
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be a positive integer; got {scale}")
    if scale == 1:
        return mosaic
    return np.repeat(np.repeat(mosaic, scale, axis=0), scale, axis=1)


def _save_pixels(mosaic, path, scale):
    """Write a grey (H, W) or RGB (H, W, 3) array in [0, 1] as an 8-bit PNG
    (greyscale or RGB), pixel for pixel: level v is stored as round(255 v)."""
    pixels = np.round(np.clip(_upscale(mosaic, scale), 0.0, 1.0) * 255.0).astype(np.uint8)
    Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB").save(path, format="PNG")
    return path


def image_grid(X, image_shape, path, ncols=None, scale=1, sep=1, sep_value=0.5):
    """Write images as a grid PNG (samples, reconstructions, data).

    Parameters
    ----------
    X : array (n, h * w) or (n, h, w)
        Grey images in [0, 1]; any shape (28x28 MNIST, 48x48 TFD, 8x8 digits...).
    image_shape : (h, w)
    path : str or path-like
        Output PNG.
    ncols : int, optional
        Images per row; default ``ceil(sqrt(n))``.
    scale : int
        Each pixel becomes a ``scale x scale`` block (nearest neighbour).
    sep, sep_value
        See :func:`tile_images`.

    Returns
    -------
    path
    """
    return _save_pixels(tile_images(X, image_shape, ncols, sep, sep_value), path, scale)


def _strip_indices(n_states, every):
    every = int(every)
    if every < 1:
        raise ValueError(f"every must be >= 1; got {every}")
    return np.arange(0, n_states, every)


def _chain_mosaic(states, image_shape, every, sep, sep_value):
    """(chains * (h+sep) + sep, shown * (w+sep) + sep) mosaic: one chain per row."""
    h, w = (int(s) for s in image_shape)
    S = np.asarray(states, dtype=np.float64)
    if S.ndim == 2:  # a single chain: (steps + 1, pixels)
        S = S[:, None, :]
    if S.ndim == 3 and S.shape[2] == h * w:
        pass
    elif S.ndim == 4 and S.shape[2:] == (h, w):
        S = S.reshape(S.shape[0], S.shape[1], h * w)
    else:
        raise ValueError(
            f"states must be (steps + 1, chains, {h * w}) or (steps + 1, chains, {h}, {w}); "
            f"got shape {np.shape(states)}")
    idx = _strip_indices(S.shape[0], every)
    shown = S[idx]                                   # (cols, chains, pixels)
    ordered = np.transpose(shown, (1, 0, 2)).reshape(-1, h * w)  # chain-major
    return tile_images(ordered, (h, w), ncols=len(idx), sep=sep, sep_value=sep_value), idx


def chain_strip(states, image_shape, path, every=1, scale=1, sep=1, sep_value=0.5):
    """Write chains as strips: one chain per row, every ``every``-th state.

    Parameters
    ----------
    states : array (steps + 1, chains, h * w) or (steps + 1, chains, h, w)
        ``states[0]`` is the start image (data), ``states[t]`` the chain after t
        steps; a 2-D ``(steps + 1, h * w)`` array is one chain.
    image_shape : (h, w)
    path : output PNG
    every : int
        Show states 0, every, 2 * every, ... (the start image always first; the
        paper shows every 5th or every 2nd).
    scale, sep, sep_value
        As in :func:`image_grid`.

    Returns
    -------
    path
    """
    mosaic, _ = _chain_mosaic(states, image_shape, every, sep, sep_value)
    return _save_pixels(mosaic, path, scale)


def chains_side_by_side(free_states, controlled_states, image_shape, path, every=1,
                        mask=None, scale=1, sep=1, sep_value=0.5, gap=4,
                        mask_color=(1.0, 0.25, 0.1), mask_alpha=0.35):
    """Free chains (left) beside chains under partial control (right): Fig. 3, 4a.

    Parameters
    ----------
    free_states, controlled_states : arrays (steps + 1, chains, h * w)
        As in :func:`chain_strip`; the two may differ in steps and chains.
    image_shape : (h, w)
    path : output PNG (RGB)
    every : int
        Show every ``every``-th state, start image first.
    mask : array (h * w,) or (h, w), optional
        1 on the pixels of the right panel to tint ``mask_color`` with weight
        ``mask_alpha``; the others keep their grey level exactly. Which region to
        mark is the caller's choice: the run figures (``vgsn.run.train``) pass
        ``1 - control mask``, so the tint marks the free, inpainted patch and the
        untinted pixels are the ones clamped to the control image.
    gap : int
        Extra separator columns between the two panels.

    Returns
    -------
    path
    """
    h, w = (int(s) for s in image_shape)
    left, _ = _chain_mosaic(free_states, image_shape, every, sep, sep_value)
    right, idx = _chain_mosaic(controlled_states, image_shape, every, sep, sep_value)
    right_rgb = np.repeat(right[:, :, None], 3, axis=2)
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64).reshape(-1)
        if m.size != h * w:
            raise ValueError(f"mask must have {h * w} pixels for image_shape {(h, w)}; got {m.size}")
        m = m.reshape(h, w) > 0.5
        n_chains = (right.shape[0] - sep) // (h + sep)
        colour = np.asarray(mask_color, dtype=np.float64)
        for r in range(n_chains):
            for c in range(len(idx)):
                y, x = sep + r * (h + sep), sep + c * (w + sep)
                tile = right_rgb[y:y + h, x:x + w]
                tile[m] = (1.0 - mask_alpha) * tile[m] + mask_alpha * colour
    height = max(left.shape[0], right.shape[0])
    out = np.full((height, left.shape[1] + gap + right.shape[1], 3), float(sep_value))
    out[:left.shape[0], :left.shape[1]] = left[:, :, None]
    out[:right.shape[0], left.shape[1] + gap:] = right_rgb
    return _save_pixels(out, path, scale)


# ---------------------------------------------------------------------------
# plots with axes

def _figure(figsize, dpi):
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path, dpi):
    """The Figure, written to ``path`` as a PNG when a path is given."""
    if path is not None:
        # No bbox_inches="tight": the PNG is exactly figsize * dpi pixels.
        fig.savefig(path, dpi=dpi, format="png")
    return fig


def prior_samples_at_updates(samples_by_update, image_shape, path=None, ncols=None,
                             figsize=None, dpi=100, sep_value=0.5):
    """Prior samples side by side, one titled panel per update count: Fig. 4d.

    Parameters
    ----------
    samples_by_update : dict int -> array (n, h * w)
        Samples x = E[p(x|z)], z ~ N(0, I), drawn after that many updates
        (the paper: 30k, 60k, 120k). Panels follow the keys in increasing order.
    image_shape : (h, w)
    path : output PNG, optional (None: nothing is written)
    ncols : int, optional
        Images per row within a panel; default ``ceil(sqrt(n))``.
    figsize : (width, height) inches, optional
        Default ``(3.2 * panels, 3.6)``.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not samples_by_update:
        raise ValueError("samples_by_update is empty")
    keys = sorted(samples_by_update)
    figsize = figsize or (3.2 * len(keys), 3.6)
    fig = _figure(figsize, dpi)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        mosaic = tile_images(samples_by_update[key], image_shape, ncols, 1, sep_value)
        ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"{key:,} updates")
        ax.set_axis_off()
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.05)
    return _save_figure(fig, path, dpi)


def curves(updates, series, path=None, ylabel=None, secondary=None, ylabel2=None,
           xlabel="updates", title=None, figsize=(6.0, 4.0), dpi=100):
    """Lines against training updates, e.g. GPDE and the bound (Fig. 4b).

    Parameters
    ----------
    updates : array (points,)
        The x values shared by the series.
    series : dict name -> array (points,) or (x, y) pair
        One line each (NaN leaves a gap); a pair gives that line its own x.
    path : output PNG, optional (None: nothing is written)
    ylabel : str, optional
        Left axis label.
    secondary : sequence of names, optional
        Series drawn against a second y axis on the right (GPDE and the bound
        differ in scale by hundreds of nats), labelled ``ylabel2``.
    title : str, optional
    figsize, dpi
        The PNG is ``figsize * dpi`` pixels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not series:
        raise ValueError("series is empty")
    secondary = set(secondary or ())
    unknown = secondary - set(series)
    if unknown:
        raise ValueError(f"secondary names {sorted(unknown)} are not in series {sorted(series)}")
    updates = np.asarray(updates, dtype=np.float64)
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax2 = ax.twinx() if secondary else None
    colours = [f"C{i}" for i in range(10)]
    handles = []
    for i, (name, values) in enumerate(series.items()):
        if isinstance(values, tuple) and len(values) == 2:
            x, y = (np.asarray(v, dtype=np.float64) for v in values)
        else:
            x, y = updates, np.asarray(values, dtype=np.float64)
        if x.shape != y.shape:
            raise ValueError(f"series {name!r}: {y.shape[0] if y.ndim else 0} values "
                             f"for {x.shape[0] if x.ndim else 0} x positions")
        target = ax2 if name in secondary else ax
        style = "--" if name in secondary else "-"
        (line,) = target.plot(x, y, style, marker="o", markersize=3,
                              color=colours[i % 10], label=name)
        handles.append(line)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if ax2 is not None and ylabel2:
        ax2.set_ylabel(ylabel2)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="best", fontsize="small")
    fig.tight_layout()
    return _save_figure(fig, path, dpi)


def kl_nll_scatter(nll, kl, path=None, labels=None, title=None, figsize=(6.0, 4.5), dpi=100,
                   alpha=0.4, size=6):
    """Joint scatter of -log p(x|z) against KL(q(z|x) || p(z)): Fig. 4c.

    Parameters
    ----------
    nll, kl : array (rows,) or sequence of arrays
        Per-example reconstruction cost and KL (the paper: 10 passes over 150
        validation examples); a sequence gives one coloured cloud per snapshot.
    path : output PNG, optional (None: nothing is written)
    labels : sequence of str, optional
        One per snapshot (e.g. "30k updates"), shown in a legend.
    figsize, dpi
        The PNG is ``figsize * dpi`` pixels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    def as_list(v):
        if isinstance(v, np.ndarray) and v.ndim == 1:
            return [v]
        if isinstance(v, (list, tuple)) and v and np.ndim(v[0]) == 0:
            return [np.asarray(v)]
        return [np.asarray(a) for a in v]

    nlls, kls = as_list(nll), as_list(kl)
    if len(nlls) != len(kls):
        raise ValueError(f"{len(nlls)} nll arrays but {len(kls)} kl arrays")
    if labels is not None and len(labels) != len(nlls):
        raise ValueError(f"{len(labels)} labels for {len(nlls)} snapshots")
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    for i, (a, b) in enumerate(zip(nlls, kls)):
        a, b = np.ravel(a), np.ravel(b)
        if a.shape != b.shape:
            raise ValueError(f"snapshot {i}: nll has {a.size} values, kl {b.size}")
        ax.scatter(b, a, s=size, alpha=alpha, color=f"C{i % 10}", edgecolors="none",
                   label=None if labels is None else labels[i])
    ax.set_xlabel("KL(q(z|x) || p(z))  [nats]")
    ax.set_ylabel("-log p(x|z)  [nats]")
    if title:
        ax.set_title(title)
    if labels is not None:
        ax.legend(loc="best", fontsize="small", markerscale=2)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path, dpi)


def kl_stems(kl_per_dim, path=None, sort=False, title=None, figsize=(6.0, 3.0), dpi=100):
    """Stem plot of the KL carried by each latent dimension.

    Parameters
    ----------
    kl_per_dim : array (z_dim,) or (rows, z_dim)
        Per-dimension KL(q(z_j|x) || N(0, 1)) (``model.posterior_kl(X)``);
        a 2-D array is averaged over rows. Dimensions near 0 are unused.
    path : output PNG, optional (None: nothing is written)
    sort : bool
        Sort dimensions by decreasing KL.
    figsize, dpi
        The PNG is ``figsize * dpi`` pixels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    if kl.ndim == 2:
        kl = kl.mean(axis=0)
    if kl.ndim != 1 or kl.size == 0:
        raise ValueError(f"kl_per_dim must be (z_dim,) or (rows, z_dim); got {np.shape(kl_per_dim)}")
    if sort:
        kl = np.sort(kl)[::-1]
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax.stem(np.arange(kl.size), kl, basefmt=" ")
    ax.set_xlabel("latent dimension" + (" (sorted)" if sort else ""))
    ax.set_ylabel("mean KL [nats]")
    ax.set_title(title or f"KL per dimension (total {kl.sum():.1f} nats)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path, dpi)


def chain_scores(scores, path=None, confidence_test=None, title=None, figsize=None, dpi=100):
    """Fig. 3 measured: chain scores against chain step, one line per branch.

    Panels: cleanliness (mean max-softmax confidence of the digit classifier, with
    the test images' confidence as a dashed reference line), local mixing (the
    fraction of chains whose class changed since the previous step), diversity (the
    total variation between the states' class histogram and the test set's, and the
    digit score) and the Frechet distance to the test set; the classifier's panels
    only when the scores have them (faces: the PCA Frechet distance alone).

    Parameters
    ----------
    scores : dict label -> dict
        Per branch, ``vgsn.eval.chainscore.chain_scores``' arrays: ``step`` and
        ``frechet`` or ``frechet_pca``, and optionally ``confidence``,
        ``switch_rate`` (NaN at step 0), ``class_tv`` and ``digit_score``, all of
        length S+1.
    path : output PNG, optional (None: nothing is written)
    confidence_test : float, optional
        The test images' confidence (the reference line).
    figsize : (width, height) inches, optional
        Default ``(4 * panels, 3.4)``; the PNG is ``figsize * dpi`` pixels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not scores:
        raise ValueError("scores is empty")
    panels = []
    if any("confidence" in s for s in scores.values()):
        panels.append(("confidence", "confidence (mean max-softmax)", "cleanliness"))
    if any("switch_rate" in s for s in scores.values()):
        panels.append(("switch_rate", "fraction of chains switching class", "mixing"))
    if any("class_tv" in s for s in scores.values()):
        panels.append(("class_tv", "class histogram TV to test", "diversity (0: data's mix)"))
    if any("digit_score" in s for s in scores.values()):
        panels.append(("digit_score", "digit score (10: clean, balanced)", "diversity"))
    key = "frechet" if any("frechet" in s for s in scores.values()) else "frechet_pca"
    panels.append((key, "Frechet distance to test" + (" (PCA)" if key == "frechet_pca" else ""),
                   "sample quality"))
    fig = _figure(figsize or (4.0 * len(panels), 3.4), dpi)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (k, ylabel, what) in zip(axes, panels):
        for i, (label, s) in enumerate(scores.items()):
            if k not in s:
                continue
            y = np.asarray(s[k], dtype=np.float64)
            x = np.asarray(s.get("step", np.arange(y.size)), dtype=np.float64)
            if x.shape != y.shape:
                raise ValueError(f"{label!r}: {y.size} {k} values for {x.size} steps")
            ax.plot(x, y, "-", color=f"C{i % 10}", label=label)
        if k == "confidence" and confidence_test is not None:
            ax.axhline(float(confidence_test), color="k", ls="--", lw=1, label="test images")
        ax.set_xlabel("chain step")
        ax.set_ylabel(ylabel)
        ax.set_title(what)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path, dpi)

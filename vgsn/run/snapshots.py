"""The paper's snapshots and figures of a run, as functions of (model, data, folder, rng).

Each snapshot saves its arrays as ``evals/<kind>_<branch>_u<update>.npz`` (the
numbers behind a figure, kept for later plots) and, with ``figures``, redraws the
figure from every snapshot of that branch saved so far (``figures/*.png``):

- :func:`scatter`: (-log p(x|z), KL) of validation rows, and the KL per latent
  dimension (Fig. 4c);
- :func:`prior_samples`: x = E[p(x|z)], z ~ N(0, I) (Fig. 4d);
- :func:`chains`: chains from validation images, free and under partial control
  (Fig. 3, Fig. 4a);
- :func:`curves`: GPDE and the bound on validation data against updates (Fig. 4b);
- :func:`chain_score_figure`: cleanliness, switch rate and Frechet distance against
  chain step for each branch (Fig. 3 measured; ``vgsn.run.evaluate`` saves the scores).

A branch's figures show it together with the pre-training it grew from. The
generator ``rng`` is the caller's: ``vgsn.run.train`` fixes one per (branch, snapshot,
update), so a resumed run draws the same snapshots.
"""
from pathlib import Path

import numpy as np

from vgsn.eval import plots

__all__ = ["patch_mask", "saved", "scatter", "prior_samples", "chains", "curves",
           "chain_score_figure"]


def patch_mask(image_shape, rng, frac=16 / 28):
    """Mask (h*w,) for controlled chains: 1 = clamped to the data, 0 inside a random
    square patch of side ``frac * min(h, w)`` (the paper: 16x16 on 28x28), placed at
    least one pixel from the border as the 2015 code did."""
    h, w = (int(s) for s in image_shape)
    side = max(1, int(round(frac * min(h, w))))
    mask = np.ones((h, w), np.float32)
    r = rng.integers(1, max(2, h - side - 1))
    c = rng.integers(1, max(2, w - side - 1))
    mask[r:r + side, c:c + side] = 0.0
    return mask.reshape(h * w)


def _lineage(branch):
    """A branch and the pre-training it grew from (its figures show both)."""
    return ["pretrain"] if branch == "pretrain" else ["pretrain", branch]


def _path(out, kind, branch, update):
    return Path(out) / "evals" / f"{kind}_{branch}_u{int(update):07d}.npz"


def saved(out, kind, branch):
    """[(update, path)] of a branch's saved ``kind`` arrays, pre-training ones first."""
    found = {}
    for b in _lineage(branch):
        for p in (Path(out) / "evals").glob(f"{kind}_{b}_u*.npz"):
            found[int(p.stem.rsplit("_u", 1)[1])] = p
    return sorted(found.items())


def scatter(model, X, out, branch, update, rng, passes, figures=True, idx=None):
    """Fig. 4c: one point per row of ``X`` (the paper: 150 validation rows drawn at
    random), its (-log p(x|z), KL) averaged over ``passes`` z draws (the paper: 10;
    WalkoutResults.py l. 261-268), and the KL per latent dimension. ``idx``: the
    rows' indices in the validation set, saved beside the points."""
    nll, kl = zip(*(model.free_energy_terms(X, rng=rng) for _ in range(int(passes))))
    kl_dim = model.posterior_kl(X).mean(axis=0)
    np.savez(_path(out, "scatter", branch, update), nll=np.mean(nll, axis=0),
             kl=np.mean(kl, axis=0), kl_per_dim=kl_dim, passes=int(passes),
             idx=np.arange(len(X)) if idx is None else np.asarray(idx))
    if figures:
        loaded = [(u, np.load(p)) for u, p in saved(out, "scatter", branch)]
        figs = Path(out) / "figures"
        plots.kl_nll_scatter([d["nll"] for _, d in loaded], [d["kl"] for _, d in loaded],
                             figs / f"scatter_{branch}.png",
                             labels=[f"{u:,} updates" for u, _ in loaded],
                             title=f"-log p(x|z) vs KL, {branch} (Fig. 4c)")
        u, last = loaded[-1]
        plots.kl_stems(last["kl_per_dim"], figs / f"kl_stems_{branch}.png",
                       title=f"KL per latent dimension, {branch}, {u:,} updates")


def prior_samples(model, image_shape, out, branch, update, rng, n=100, figures=True):
    """Fig. 4d: ``n`` prior samples x = E[p(x|z)], z ~ N(0, I)."""
    X = model.sample_prior(int(n), rng=rng)
    np.savez(_path(out, "samples", branch, update), samples=X)
    if figures:
        snaps = {u: np.load(p)["samples"] for u, p in saved(out, "samples", branch)}
        plots.prior_samples_at_updates(snaps, image_shape,
                                       Path(out) / "figures" / f"samples_{branch}.png")


def chains(model, data, out, branch, update, rng, rows, length, figures=True, patch_side=None):
    """Fig. 3 / 4a: ``rows`` chains of ``length`` steps from validation images of
    ``data``, free and under partial control (a random square patch occluded and
    painted in by the chain, the rest clamped to the image): ``model.run_chain``."""
    X0 = data.valid[np.linspace(0, len(data.valid) - 1, int(rows)).astype(int)]
    free = model.run_chain(X0, length, rng=rng)
    frac = 16 / 28 if patch_side is None else int(patch_side) / min(data.image_shape)
    mask = np.broadcast_to(patch_mask(data.image_shape, rng, frac), X0.shape)
    # Occluded pixels start at the mean grey and are painted in by the chain.
    start = np.full_like(X0, float(data.train.mean()))
    controlled = model.run_chain(start, length, mask=mask, control=X0, rng=rng)
    path = _path(out, "chains", branch, update)
    np.savez(path, free=free, controlled=controlled, mask=mask)
    if figures:
        shape = data.image_shape
        plots.chains_side_by_side(
            free, controlled, shape, Path(out) / "figures" / f"{path.stem}.png",
            every=max(1, int(length) // 10), mask=1 - mask[0],   # tint the painted-in patch
            scale=max(1, 56 // min(shape)))


def curves(rows, out):
    """Fig. 4b: GPDE and bound on validation data against updates, one line per
    branch (with its pre-training), from the evaluation ``rows`` (metrics dicts)."""
    rows = [r for r in rows if r["kind"] in ("eval", "final")]
    if not rows:
        return
    branches = {r["branch"] for r in rows}
    series = {}
    for branch in [b for b in ("guided", "vae") if b in branches] or ["pretrain"]:
        mine = [r for r in rows if r["branch"] in _lineage(branch)]
        if mine:
            x = [r["update"] for r in mine]
            series[f"GPDE valid ({branch})"] = (x, [r["gpde_valid"] for r in mine])
            series[f"bound valid ({branch})"] = (x, [r["bound_valid"] for r in mine])
    plots.curves([], series, Path(out) / "figures" / "curves.png", ylabel="GPDE [nats]",
                 secondary=[k for k in series if k.startswith("bound")],
                 ylabel2="variational bound [nats]",
                 title="validation log-likelihood bounds (Fig. 4b)")


def chain_score_figure(out):
    """Fig. 3 measured: the latest chain scores of every branch
    (``evals/chainscores_<branch>_u*.npz``, written by ``vgsn.run.evaluate``) against chain
    step, in ``figures/chainscores.png``; nothing when none are saved."""
    latest = {}
    for p in sorted((Path(out) / "evals").glob("chainscores_*_u*.npz")):
        branch, u = p.stem[len("chainscores_"):].rsplit("_u", 1)
        if branch not in latest or int(u) >= latest[branch][0]:
            latest[branch] = (int(u), p)
    if not latest:
        return None
    scores, conf_test = {}, None
    for branch in [b for b in ("pretrain", "guided", "vae") if b in latest]:
        u, p = latest[branch]
        with np.load(p) as d:
            scores[f"{branch} ({u:,} updates)"] = {k: d[k] for k in d.files}
            if np.isfinite(d["confidence_test"]):
                conf_test = float(d["confidence_test"])
    return plots.chain_scores(scores, Path(out) / "figures" / "chainscores.png",
                              confidence_test=conf_test)

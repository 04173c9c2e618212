"""The training loop: schedules, evaluation, metrics, figures, checkpoints, report.

``run(config, out)`` runs one experiment of ``vgsn.presets`` end to end, and
``resume(out)`` continues a stopped run exactly where its last checkpoint left it.
The command-line scripts (``run_mnist.py``, ``run_tfd.py``) are thin wrappers
around :func:`cli_main`.

A run, one update counter ``u`` over both phases
------------------------------------------------
- ``0 <= u < pretrain_updates``: the 1-step VAE (branch ``pretrain``).
- then the fork: the pre-trained model is trained as the guided chain (branch
  ``guided``, ``VCGLoop``) and, with ``vae_branch``, a copy continues as the 1-step
  VAE (branch ``vae``). The two take their updates in turn, one each per ``u``,
  so their rows line up in the metrics.

Schedules are pure functions of the update index: :func:`lr_at` (linear warm-up,
then x decay every N updates) and :func:`kl_weight_at` (1 -> lambda linearly).

The run folder
--------------
``config.json``        the settings (also stored in every checkpoint)
``metrics.jsonl``      every row: training costs (``kind='train'``, means over
                       ``log_every`` updates), evaluations (``'eval'``), the final
                       evaluation (``'final'``)
``train_<branch>.csv`` the training rows of one branch
``eval.csv``           the evaluation rows (periodic and final)
``checkpoint.h5``      the last checkpoint (``pretrained.h5``: the one at the fork)
``evals/*.npz``        the arrays behind the figures (samples, scatter, KL per dim)
``figures/*.png``      the figures; ``report.md`` embeds them
``log.txt``            the human log, with times; ``timing.json`` seconds per phase

The metrics files hold no times or rates, so an interrupted and resumed run writes
them byte for byte as an uninterrupted run with the same seed does: every noise is
drawn on the host from seeded NumPy generators whose states are checkpointed, and
resuming cuts the metrics files back to their sizes at the checkpoint.

Testing aids
------------
``Preset.fault_at = k`` runs update k with a NaN learning rate (the run must stop
as diverged). The environment variable ``VGSN_TEST_KILL_AT=k`` makes the process
SIGKILL itself right after update k (the resume test's crash); neither is for
real runs.
"""
import argparse
import csv
import io
import json
import math
import os
import signal
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from vgsn import presets as P
from vgsn.checkpoints import CheckpointError, load_run_checkpoint, save_run_checkpoint
from vgsn.datasets import DatasetError, load_dataset, resolve_data_dir

__all__ = ["TrainingError", "Diverged", "Interrupted", "lr_at", "kl_weight_at", "patch_mask", "Run",
           "run", "resume", "load_models", "cli_main", "build_parser"]


class TrainingError(RuntimeError):
    """A run cannot go on; the message is one line saying why and what to do."""


class Diverged(TrainingError):
    """A cost or a parameter became NaN or infinite."""


class Interrupted(TrainingError):
    """The user stopped the run (Ctrl-C); the last checkpoint stays."""


# ---------------------------------------------------------------------------
# schedules (pure functions of the update index within a phase)
# ---------------------------------------------------------------------------

def lr_at(update, base, warmup=0, decay=1.0, decay_every=0):
    """Learning rate for the 0-based ``update`` of a phase.

    ``base * min(1, (update + 1) / warmup) * decay ** (update // decay_every)``;
    ``warmup = 0`` skips the warm-up and ``decay_every = 0`` never decays
    (SPEC.md section 6: MNIST 5e-4, warm-up 10k, x0.9 every 20k).
    """
    update = int(update)
    if update < 0:
        raise ValueError(f"update must be >= 0, got {update}")
    scale = 1.0 if warmup <= 0 else min(1.0, (update + 1) / float(warmup))
    drops = update // int(decay_every) if decay_every > 0 else 0
    return float(base) * scale * float(decay) ** drops


def kl_weight_at(update, lam, warmup=0):
    """Eq. 5's lambda at ``update``: linear from 1 to ``lam`` over ``warmup`` updates
    (the 2015 code's ``1 + scale * (lam - 1)``, ``scale = min(1, update / warmup)``)."""
    update = int(update)
    if update < 0:
        raise ValueError(f"update must be >= 0, got {update}")
    if warmup <= 0:
        return float(lam)
    return 1.0 + min(1.0, update / float(warmup)) * (float(lam) - 1.0)


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


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------

def _model_args(c):
    """The ``OneStageModel`` arguments a preset fixes (all but x_dim and the data-
    and schedule-dependent ones): one list for a new run and for ``load_models``."""
    return dict(z_dim=c.z_dim, q_hidden=c.hidden, p_hidden=c.hidden, x_type=c.x_type,
                init_scale=c.init_scale, logvar_bound=c.logvar_bound,
                batch_repeat=c.batch_repeat, momentum=c.momentum, max_norm=c.max_norm,
                l2_on=c.l2_on, seed=c.seed)


def load_data(config, data_dir=None):
    """Load the config's dataset, falling back as the demo presets allow.

    Returns
    -------
    data : vgsn.datasets.Dataset
    note : str or None
        Why a fallback was used ("mnist not found in <folder>"), said to the user
        and written in the report.

    Raises
    ------
    TrainingError
        The dataset is missing and no fallback applies (the message says where
        it was looked for and what the alternatives are).
    """
    name = config.dataset
    fallbacks = [f for f in (config.fallback_dataset or "").split(",") if f]
    options = {}
    if name == "mnist":
        # The demos never touch the network: MNIST is used when it is on disk.
        options = dict(download=not fallbacks, progress=sys.stderr.isatty())
    try:
        return load_dataset(name, data_dir, **options), None
    except DatasetError as exc:
        first = exc
    for alt in fallbacks:
        try:
            data = load_dataset(alt, data_dir)
        except DatasetError:
            continue
        return data, f"{name} not found in {resolve_data_dir(data_dir)}"
    if name == "tfd":
        raise TrainingError(
            f"{str(first).split('. Fix')[0]}. TFD is not public: if you have it, point --data-dir "
            f"at the folder holding TFD_48x48.mat; otherwise run on a public face stand-in: "
            f"--dataset olivetti (olivettifaces.mat) or --dataset frey (frey_rawface.mat), "
            f"see data/README.md") from None
    raise TrainingError(str(first)) from None


# ---------------------------------------------------------------------------
# metrics files
# ---------------------------------------------------------------------------

EVAL_COLUMNS = ["update", "phase", "branch", "kind", "gpde_sigma", "gpde_sigma_at_edge",
                "gpde_valid", "gpde_test", "gpde_test_stderr", "bound_valid", "nll_valid",
                "kl_valid", "bound_test", "iwll_test", "iwll_k"]


def _plain(value):
    """Python scalars for JSON / CSV (float repr is exact and stable)."""
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class Metrics:
    """Append-only metrics files of a run folder, resumable by truncation.

    Every row goes to ``metrics.jsonl`` and to one CSV (``train_<branch>.csv`` or
    ``eval.csv``), each written and closed at once so a kill loses nothing
    written before. ``sizes()`` records the files' byte sizes (stored in a
    checkpoint); ``truncate(sizes)`` cuts them back on resume.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.rows = []
        path = self.folder / "metrics.jsonl"
        if path.exists():
            with open(path) as f:
                self.rows = [json.loads(line) for line in f if line.strip()]

    def files(self):
        return sorted(p.name for p in self.folder.iterdir()
                      if p.name == "metrics.jsonl" or p.suffix == ".csv")

    def sizes(self):
        return {name: (self.folder / name).stat().st_size for name in self.files()}

    def truncate(self, sizes):
        for name in self.files():
            path = self.folder / name
            if name not in sizes:
                path.unlink()
            elif path.stat().st_size < sizes[name]:
                raise TrainingError(f"{path}: {path.stat().st_size} bytes, shorter than the "
                                    f"{sizes[name]} the checkpoint recorded; cannot resume exactly")
            else:
                os.truncate(path, sizes[name])
        self.__init__(self.folder)

    def write(self, row):
        row = {k: _plain(v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if row["kind"] == "train":
            name, columns = f"train_{row['branch']}.csv", list(row)
        else:
            name, columns = "eval.csv", EVAL_COLUMNS
        path = self.folder / name
        new = not path.exists()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, restval="", extrasaction="ignore",
                                lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        with open(path, "a") as f:
            f.write(buf.getvalue())

    def select(self, kind):
        return [r for r in self.rows if r["kind"] == kind]


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------

def _finite_results(result):
    return all(np.isfinite(v) for v in result.values() if isinstance(v, (float, np.floating)))


class Run:
    """One experiment in one folder: build, train, evaluate, checkpoint, report.

    Use :func:`run` and :func:`resume`; this class holds the state between them.

    Parameters
    ----------
    config : vgsn.presets.Preset
    out : Path
        The run folder (created).
    data : vgsn.datasets.Dataset
    data_note : str or None
        Why a fallback dataset is used.
    data_dir : str or None
        Where the data came from (stored, so ``resume`` finds it again).
    quiet : bool
        No progress bar and no messages (errors still raise).
    """

    def __init__(self, config, out, data, data_note=None, data_dir=None, quiet=False):
        from vgsn.models import OneStageModel

        self.config = config.validate()
        self.out = Path(out)
        self.data, self.data_note, self.data_dir = data, data_note, data_dir
        self.quiet = quiet
        for sub in ("figures", "evals"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics(self.out)
        c = config
        self.x_dim = data.n_pixels
        self.model = OneStageModel(
            self.x_dim, **_model_args(c), x_mean=data.train.mean(axis=0), lr=c.pretrain_lr,
            lam_kl=kl_weight_at(0, c.lam_kl, c.kl_warmup), gamma_kl=c.gamma_kl, l2=c.pretrain_l2)
        self.loop = None   # the guided chain after the fork
        self.vae = None    # the 1-step VAE branch after the fork (vae_branch)
        self.data_rng = np.random.default_rng([c.seed, 2])
        self.update = 0
        self.acc = {}      # branch -> {"n": int, key: sum}
        self.last_checkpoint = None
        self.timing = {"compile_s": 0.0, "pretrain_s": 0.0, "fork_s": 0.0, "eval_s": 0.0,
                       "final_eval_s": 0.0, "pretrain_updates": 0, "fork_updates": 0}
        self._bar = None
        self._eval_sets()

    # ---- fixed evaluation rows --------------------------------------------
    def _eval_sets(self):
        c, d = self.config, self.data

        def first(X, n):
            return X if n is None else X[:int(n)]
        self.X_gpde_valid = first(d.valid, c.gpde_valid_rows)
        self.X_gpde_test = first(d.test, c.gpde_test_rows)
        self.X_bound_valid = first(d.valid, c.bound_rows)
        self.X_bound_test = first(d.test, c.bound_rows)
        self.X_iwll = first(d.test, c.iwll_rows)
        self.X_scatter = first(d.valid, c.scatter_rows)
        from vgsn.evaluation import MNIST_SIGMAS, TFD_SIGMAS
        self.sigmas = TFD_SIGMAS if c.sigmas == "tfd" else MNIST_SIGMAS

    # ---- messages ----------------------------------------------------------
    def say(self, message):
        """One line to log.txt (with the time) and, unless quiet, to stderr."""
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.out / "log.txt", "a") as f:
            f.write(f"{stamp}  {message}\n")
        if not self.quiet:
            if self._bar is not None and not self._bar.disable:
                self._bar.write(message, file=sys.stderr)
            else:
                print(message, file=sys.stderr, flush=True)

    # ---- branches ------------------------------------------------------------
    @property
    def pretrain_end(self):
        return int(self.config.pretrain_updates)

    @property
    def total(self):
        return self.config.total_updates

    def phase_at(self, u):
        return "pretrain" if u < self.pretrain_end else "fork"

    def branches(self):
        """(name, model) of the models being trained now, in update order."""
        if self.loop is None:
            return [("pretrain", self.model)]
        out = [("guided", self.model)]
        if self.vae is not None:
            out.append(("vae", self.vae))
        return out

    def fork(self):
        """The paper's fork: the pre-trained model goes into the guided chain and,
        with ``vae_branch``, a copy continues as the 1-step VAE."""
        t0 = time.time()
        if self.config.vae_branch:
            self.vae = self.model.fork()
            self.vae.compile(("train_step",))
        self.loop = self._make_loop()
        self.loop.compile(("train_step",))
        self.timing["compile_s"] += time.time() - t0

    def _make_loop(self):
        from vgsn.models import VCGLoop

        c = self.config
        loop = VCGLoop(
            self.model, steps=c.chain_steps, walkback=c.walkback, step_decay=c.step_decay,
            gen_loss=c.gen_loss, chain_gamma=c.chain_gamma, lr_gen=c.chain_lr,
            lr_guide=c.guide_lr or c.chain_lr,
            gen_weight=c.gen_weight, guide_weight=c.guide_weight, lam_l2d=c.guide_l2,
            l2=c.chain_l2, guide_units=c.guide_units, guide_pool=c.guide_pool,
            guide_init_scale=c.guide_init_scale, guide_input_noise=c.guide_input_noise,
            momentum=c.momentum, max_norm=c.max_norm, seed=c.seed + 2)
        return loop

    # ---- schedules -------------------------------------------------------------
    def _set_schedules(self, u):
        c = self.config
        if self.loop is None:
            self.model.hyper.set(
                lr=lr_at(u, c.pretrain_lr, c.pretrain_warmup, c.pretrain_lr_decay,
                         c.pretrain_lr_decay_every),
                lam_kl=kl_weight_at(u, c.lam_kl, c.kl_warmup), gamma_kl=c.gamma_kl,
                l2=c.pretrain_l2)
            return
        i = u - self.pretrain_end
        lr = lr_at(i, c.chain_lr, c.chain_warmup, c.chain_lr_decay, c.chain_lr_decay_every)
        glr = lr if c.guide_lr is None else lr * c.guide_lr / c.chain_lr
        self.loop.hyper.set(lr_gen=lr, lr_guide=glr)
        self.model.hyper.set(lam_kl=c.lam_kl, gamma_kl=c.gamma_kl, l2=c.chain_l2)
        if self.vae is not None:   # the VAE branch continues the pre-training schedule
            self.vae.hyper.set(
                lr=lr_at(u, c.pretrain_lr, c.pretrain_warmup, c.pretrain_lr_decay,
                         c.pretrain_lr_decay_every),
                lam_kl=kl_weight_at(u, c.lam_kl, c.kl_warmup), gamma_kl=c.gamma_kl,
                l2=c.pretrain_l2)

    def _poison(self):
        """Testing aid (``fault_at``): a NaN learning rate for this update."""
        hypers = [self.model.hyper] if self.loop is None else [self.loop.hyper]
        if self.vae is not None:
            hypers.append(self.vae.hyper)
        for hp in hypers:
            for name in hp.names():
                if name.startswith("lr"):
                    var = getattr(hp, name)
                    var.set_value(np.asarray(np.nan, dtype=var.dtype))

    def _hyper_now(self, branch):
        if branch == "guided":
            return {"lr": self.loop.hyper["lr_gen"], "lam_kl": self.model.hyper["lam_kl"]}
        model = self.vae if branch == "vae" else self.model
        return {"lr": model.hyper["lr"], "lam_kl": model.hyper["lam_kl"]}

    # ---- one update ------------------------------------------------------------
    def _batch(self, rows):
        idx = self.data_rng.integers(0, len(self.data.train), size=int(rows))
        return self.data.train[idx]

    def step(self):
        """One update of every active branch; returns {branch: result dict}."""
        c, u = self.config, self.update
        self._set_schedules(u)
        if c.fault_at is not None and u + 1 == int(c.fault_at):
            self._poison()
        results = {}
        for name, model in self.branches():
            X = self._batch(c.batch_size)
            if name == "guided":
                results[name] = self.loop.train_step(X, self._batch(c.guide_data_rows))
            else:
                results[name] = model.train_step(X)
        for name, result in results.items():
            if not _finite_results(result):
                bad = ", ".join(f"{k}={v}" for k, v in result.items()
                                if isinstance(v, float) and not np.isfinite(v))
                raise Diverged(f"update {u + 1}: the {name} cost is not finite ({bad}); stopped. "
                               f"{self._last_good()}")
        return results

    def _last_good(self):
        if self.last_checkpoint is None:
            return "No checkpoint had been written yet."
        path, u = self.last_checkpoint
        return f"Last good checkpoint: {path} (update {u}); resume with --resume {self.out}"

    def _accumulate(self, results):
        for name, result in results.items():
            acc = self.acc.setdefault(name, {"n": 0})
            acc["n"] += 1
            for k, v in result.items():
                if isinstance(v, (float, np.floating)):
                    acc[k] = acc.get(k, 0.0) + float(v)

    def _write_train_rows(self):
        u = self.update
        for name, _ in self.branches():
            acc = self.acc.get(name)
            if not acc or acc["n"] == 0:
                continue
            row = {"update": u, "phase": self.phase_at(u - 1), "branch": name, "kind": "train",
                   "updates_averaged": acc["n"], **self._hyper_now(name)}
            row.update({k: v / acc["n"] for k, v in acc.items() if k != "n"})
            self.metrics.write(row)
        self.acc = {}

    # ---- evaluation --------------------------------------------------------------
    def _eval_rng(self, branch, purpose):
        """A generator fixed by (seed, branch, purpose, update): evaluations never
        consume training noise, and give the same numbers on resume."""
        b = {"pretrain": 0, "guided": 1, "vae": 2}[branch]
        return np.random.default_rng([self.config.seed, 7, b, purpose, self.update])

    def evaluate(self, final=False):
        """GPDE (sigma on validation rows), the bound (and at the end the test bound
        and the importance-weighted LL) for every active branch; writes the rows."""
        from vgsn import evaluation as ev

        c, u = self.config, self.update
        t0 = time.time()
        rows = []
        for name, model in self.branches():
            centres = model.sample_prior(c.gpde_samples, rng=self._eval_rng(name, 0))
            g = ev.gpde(centres, self.X_gpde_valid, self.X_gpde_test, sigmas=self.sigmas)
            nll, kl = model.free_energy_terms(self.X_bound_valid, n_samples=c.bound_samples,
                                              rng=self._eval_rng(name, 1))
            row = {"update": u, "phase": self.phase_at(max(u - 1, 0)), "branch": name,
                   "kind": "final" if final else "eval", "gpde_sigma": g["sigma"],
                   "gpde_sigma_at_edge": bool(g["sigma_at_edge"]),
                   "gpde_valid": float(np.max(g["valid_ll_per_sigma"])),
                   "gpde_test": g["test_mean"], "gpde_test_stderr": g["test_stderr"],
                   "bound_valid": -float(np.mean(nll + kl)), "nll_valid": float(np.mean(nll)),
                   "kl_valid": float(np.mean(kl)), "bound_test": None, "iwll_test": None,
                   "iwll_k": None}
            if final:
                row["bound_test"] = float(np.mean(ev.variational_bound(
                    model, self.X_bound_test, k=c.bound_samples, rng=self._eval_rng(name, 2))))
                row["iwll_test"] = float(np.mean(ev.importance_weighted_ll(
                    model, self.X_iwll, c.iwll_k, rng=self._eval_rng(name, 3))))
                row["iwll_k"] = int(c.iwll_k)
            self.metrics.write(row)
            rows.append(row)
            edge = ", at the grid edge" if row["gpde_sigma_at_edge"] else ""
            self.say(f"update {u:,} {name}: GPDE valid {row['gpde_valid']:.1f} test "
                     f"{row['gpde_test']:.1f} +- {row['gpde_test_stderr']:.1f} (sigma "
                     f"{row['gpde_sigma']:.3g}{edge}), bound valid {row['bound_valid']:.1f}"
                     + (f", bound test {row['bound_test']:.1f}, IWLL(k={c.iwll_k}) test "
                        f"{row['iwll_test']:.1f}" if final else ""))
        self.timing["final_eval_s" if final else "eval_s"] += time.time() - t0
        if c.figures:
            self.figure_curves()
        return rows

    def snapshot_scatter(self):
        """Fig. 4c: (-log p(x|z), KL) over ``scatter_passes`` passes of
        ``scatter_rows`` validation rows; and the KL per latent dimension."""
        c, u = self.config, self.update
        for name, model in self.branches():
            rng = self._eval_rng(name, 4)
            nll, kl = zip(*(model.free_energy_terms(self.X_scatter, rng=rng)
                            for _ in range(c.scatter_passes)))
            kl_dim = model.posterior_kl(self.X_scatter).mean(axis=0)
            np.savez(self.out / "evals" / f"scatter_{name}_u{u:07d}.npz",
                     nll=np.concatenate(nll), kl=np.concatenate(kl), kl_per_dim=kl_dim)
            if c.figures:
                self.figure_scatter(name)

    def snapshot_samples(self):
        """Fig. 4d: prior samples x = E[p(x|z)], z ~ N(0, I)."""
        u = self.update
        for name, model in self.branches():
            X = model.sample_prior(100, rng=self._eval_rng(name, 5))
            np.savez(self.out / "evals" / f"samples_{name}_u{u:07d}.npz", samples=X)
            if self.config.figures:
                self.figure_samples(name)

    def snapshot_chains(self):
        """Fig. 3 / 4a: chains from validation images, free and under partial control
        (a random square patch occluded, the rest clamped to the image)."""
        from vgsn.chain import run_chain

        c, u = self.config, self.update
        X0 = self.data.valid[np.linspace(0, len(self.data.valid) - 1, c.chain_rows).astype(int)]
        for name, model in self.branches():
            rng = self._eval_rng(name, 6)
            free = run_chain(model, X0, c.chain_length, rng=rng)
            mask = np.broadcast_to(patch_mask(self.data.image_shape, rng), X0.shape)
            # Occluded pixels start at the mean grey and are painted in by the chain.
            start = np.full_like(X0, float(self.data.train.mean()))
            controlled = run_chain(model, start, c.chain_length, mask=mask, control=X0, rng=rng)
            np.savez(self.out / "evals" / f"chains_{name}_u{u:07d}.npz", free=free,
                     controlled=controlled, mask=mask)
            if c.figures:
                self.figure_chains(name, u)

    # ---- figures ------------------------------------------------------------------
    @staticmethod
    def _lineage(branch):
        """A branch and the pre-training it grew from (its figures show both)."""
        return ["pretrain"] if branch == "pretrain" else ["pretrain", branch]

    def _evals(self, prefix, branch):
        """[(update, path)] of a branch's saved arrays, pre-training snapshots first."""
        found = {}
        for b in self._lineage(branch):
            for p in (self.out / "evals").glob(f"{prefix}_{b}_u*.npz"):
                found[int(p.stem.rsplit("_u", 1)[1])] = p
        return sorted(found.items())

    def figure_curves(self):
        from vgsn import plots

        rows = [r for r in self.metrics.rows if r["kind"] in ("eval", "final")]
        if not rows:
            return
        branches = {r["branch"] for r in rows}
        series = {}
        for branch in [b for b in ("guided", "vae") if b in branches] or ["pretrain"]:
            mine = [r for r in rows if r["branch"] in self._lineage(branch)]
            if mine:
                x = [r["update"] for r in mine]
                series[f"GPDE valid ({branch})"] = (x, [r["gpde_valid"] for r in mine])
                series[f"bound valid ({branch})"] = (x, [r["bound_valid"] for r in mine])
        plots.curves([], series, self.out / "figures" / "curves.png", ylabel="GPDE [nats]",
                     secondary=[k for k in series if k.startswith("bound")],
                     ylabel2="variational bound [nats]",
                     title="validation log-likelihood bounds (Fig. 4b)")

    def figure_scatter(self, branch):
        from vgsn import plots

        snaps = self._evals("scatter", branch)
        loaded = [(u, np.load(p)) for u, p in snaps]
        plots.kl_nll_scatter([d["nll"] for _, d in loaded], [d["kl"] for _, d in loaded],
                             self.out / "figures" / f"scatter_{branch}.png",
                             labels=[f"{u:,} updates" for u, _ in loaded],
                             title=f"-log p(x|z) vs KL, {branch} (Fig. 4c)")
        u, last = loaded[-1]
        plots.kl_stems(last["kl_per_dim"], self.out / "figures" / f"kl_stems_{branch}.png",
                       title=f"KL per latent dimension, {branch}, {u:,} updates")

    def figure_samples(self, branch):
        from vgsn import plots

        snaps = {u: np.load(p)["samples"] for u, p in self._evals("samples", branch)}
        plots.prior_samples_at_updates(snaps, self.data.image_shape,
                                       self.out / "figures" / f"samples_{branch}.png")

    def figure_chains(self, branch, u):
        from vgsn import plots

        d = np.load(self.out / "evals" / f"chains_{branch}_u{u:07d}.npz")
        length = d["free"].shape[0] - 1
        plots.chains_side_by_side(
            d["free"], d["controlled"], self.data.image_shape,
            self.out / "figures" / f"chains_{branch}_u{u:07d}.png",
            every=max(1, length // 10), mask=1 - d["mask"][0],   # tint the painted-in patch
            scale=max(1, 56 // min(self.data.image_shape)))

    # ---- checkpoints ----------------------------------------------------------------
    def state_arrays(self):
        arrays = {f"model/{k}": v for k, v in self.model.get_state().items()}
        if self.loop is not None:
            arrays.update({f"loop/{k}": v for k, v in self.loop.get_state().items()})
        if self.vae is not None:
            arrays.update({f"vae/{k}": v for k, v in self.vae.get_state().items()})
        return arrays

    def rngs(self):
        out = {"data": self.data_rng, "model": self.model.rng}
        if self.loop is not None:
            out["loop"] = self.loop.rng
        if self.vae is not None:
            out["vae"] = self.vae.rng
        return out

    def checkpoint(self, also=None):
        arrays = self.state_arrays()
        bad = [k for k, v in arrays.items() if not np.all(np.isfinite(v))]
        if bad:
            raise Diverged(f"update {self.update}: parameters became non-finite "
                           f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); stopped "
                           f"before checkpointing them. {self._last_good()}")
        meta = {"update": self.update, "forked": self.loop is not None,
                "config": self.config.to_dict(), "data_dir": self.data_dir,
                "data_note": self.data_note, "data_source": self.data.source,
                "rng": {k: r.bit_generator.state for k, r in self.rngs().items()},
                "acc": self.acc, "metrics_sizes": self.metrics.sizes(),
                "timing": self.timing}
        path = save_run_checkpoint(self.out / "checkpoint.h5", arrays, meta)
        if also:
            save_run_checkpoint(self.out / also, arrays, meta)
        self.last_checkpoint = (path, self.update)

    def restore(self, arrays, meta):
        """Load a checkpoint's state into this freshly built run."""
        self.update = int(meta["update"])
        self.model.compile(("train_step",))
        if meta["forked"]:
            self.fork()
        parts = {"model": self.model, "loop": self.loop, "vae": self.vae}
        for prefix, obj in parts.items():
            if obj is None:
                continue
            mine = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
            obj.set_state(mine)
        for name, rng in self.rngs().items():
            rng.bit_generator.state = meta["rng"][name]
        self.acc = meta["acc"]
        self.timing = meta.get("timing", self.timing)
        self.metrics.truncate(meta["metrics_sizes"])
        for p in (self.out / "evals").glob("*_u*.npz"):
            if int(p.stem.rsplit("_u", 1)[1]) > self.update:
                p.unlink()
        for p in self.out.glob(".*.h5.tmp-*"):   # a write the crash cut short
            p.unlink()
        self.last_checkpoint = (self.out / "checkpoint.h5", self.update)

    # ---- the loop -------------------------------------------------------------------
    def _due(self, every, u):
        return every and every > 0 and u % every == 0

    def after_update(self):
        """Logging, evaluation, figures and checkpoints once ``self.update`` updates
        are done (the order is fixed, so a resumed run writes the same rows)."""
        c, u = self.config, self.update
        phase_end = u == self.pretrain_end or u == self.total
        if self._due(c.log_every, u) or phase_end:
            self._write_train_rows()
        if self._due(c.eval_every, u) and u < self.total:
            self.evaluate()
        if self._due(c.scatter_every, u) or phase_end:
            self.snapshot_scatter()
        if u in tuple(c.samples_at) or phase_end:
            self.snapshot_samples()
        if phase_end:
            self.snapshot_chains()
        if self._due(c.checkpoint_every, u) or phase_end:
            self.checkpoint(also="pretrained.h5" if u == self.pretrain_end and
                            c.chain_updates > 0 else None)

    def train(self):
        """Run the remaining updates, then the final evaluation and the report."""
        from tqdm import tqdm

        c = self.config
        kill_at = os.environ.get("VGSN_TEST_KILL_AT")
        kill_at = int(kill_at) if kill_at else None
        self._bar = tqdm(total=self.total, initial=self.update, unit="upd", file=sys.stderr,
                         disable=self.quiet or not _interactive(), dynamic_ncols=True,
                         smoothing=0.05, desc=self.phase_at(self.update))
        self._running = {}
        plain_every = max(c.log_every, self.total // 20)
        t0 = time.time()
        self.model.compile(("train_step",))
        self.timing["compile_s"] += time.time() - t0
        t_line, u_line = time.time(), self.update
        try:
            while True:
                if self.loop is None and self.update >= self.pretrain_end and c.chain_updates:
                    if self.pretrain_end:
                        self.say(f"update {self.update:,}: pre-training done; forking into the "
                                 f"guided chain{' and the 1-step VAE' if c.vae_branch else ''}")
                    self.fork()
                if self.update >= self.total:
                    break
                phase = self.phase_at(self.update)
                t0 = time.time()
                results = self.step()
                self.timing[f"{phase}_s"] += time.time() - t0
                self.timing[f"{phase}_updates"] += 1
                self._accumulate(results)
                self.update += 1
                self._bar.update(1)
                postfix = self._postfix(results)
                if self.update % max(1, min(c.log_every, 50)) == 0:
                    self._bar.set_description(phase)
                    self._bar.set_postfix(postfix, refresh=False)
                self.after_update()
                if kill_at is not None and self.update == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if self._bar.disable and not self.quiet and (
                        self.update % plain_every == 0 or self.update == self.total):
                    t = time.time()
                    rate = (self.update - u_line) / max(t - t_line, 1e-9)
                    eta = (self.total - self.update) / max(rate, 1e-9)
                    costs = ", ".join(f"{k} {v}" for k, v in postfix.items())
                    self.say(f"update {self.update:,}/{self.total:,} ({phase}) {rate:.1f} upd/s, "
                             f"ETA {_hms(eta)}; {costs}")
                    t_line, u_line = t, self.update
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted at update {self.update:,}; "
                              f"{self._last_good()}") from None
        finally:
            self._bar.close()
            self._bar = None
        self.evaluate(final=True)
        with open(self.out / "timing.json", "w") as f:
            json.dump(self.timing, f, indent=1)
        return self.write_report()

    # ---- the report ------------------------------------------------------------------
    def write_report(self):
        """``report.md``: settings, this run's numbers beside the paper's, the figures."""
        from vgsn.backend import NAME, library_version

        c, out = self.config, self.out
        final = {r["branch"]: r for r in self.metrics.select("final")}
        evals = self.metrics.select("eval")
        paper = P.PAPER_GPDE.get(c.name)
        t = self.timing
        lines = [f"# vgsn run: {c.name}", "", c.summary or "(custom settings)", ""]
        lines += [f"- dataset: {self.data.source} ({len(self.data.train):,} train / "
                  f"{len(self.data.valid):,} valid / {len(self.data.test):,} test, "
                  f"{self.data.image_shape[0]}x{self.data.image_shape[1]})"]
        if self.data_note:
            lines += [f"- {self.data_note}: the preset's fallback above was used"]
        after = (f"the guided {c.chain_steps}-step chain"
                 + (" and the 1-step VAE, one update each per step" if c.vae_branch else ""))
        lines += [f"- updates: {c.pretrain_updates:,} pre-training (1-step VAE) + "
                  f"{c.chain_updates:,} after the fork ({after})",
                  f"- backend: {NAME} {library_version}, Python {sys.version.split()[0]}, "
                  f"seed {c.seed}",
                  f"- time: compiling {_hms(t['compile_s'])}, pre-training {_hms(t['pretrain_s'])} "
                  f"({_per_update(t['pretrain_s'], t['pretrain_updates'])}), after the fork "
                  f"{_hms(t['fork_s'])} ({_per_update(t['fork_s'], t['fork_updates'])}), "
                  f"periodic evaluation {_hms(t['eval_s'])}, final evaluation "
                  f"{_hms(t['final_eval_s'])}", ""]
        lines += ["## Results on the test set", "",
                  f"GPDE: {c.gpde_samples:,} prior samples as Parzen centres, sigma chosen on "
                  f"{len(self.X_gpde_valid):,} validation rows, mean log-density of "
                  f"{len(self.X_gpde_test):,} test rows (nats, +- standard error). Bound: "
                  f"-F(x) of Eq. 2 on {len(self.X_bound_test):,} test rows. IWLL: "
                  f"importance-weighted log-likelihood, k = {c.iwll_k}, on "
                  f"{len(self.X_iwll):,} test rows. Higher is better for all three.", "",
                  "| branch | GPDE test | sigma | bound test | IWLL test | paper GPDE |",
                  "|---|---|---|---|---|---|"]
        for branch, r in final.items():
            ref = f"{paper:g}" if paper is not None and branch in ("guided", "pretrain") else "-"
            edge = " (grid edge)" if r["gpde_sigma_at_edge"] else ""
            lines.append(f"| {branch} | {r['gpde_test']:.1f} +- {r['gpde_test_stderr']:.1f} | "
                         f"{r['gpde_sigma']:.3g}{edge} | {r['bound_test']:.1f} | "
                         f"{r['iwll_test']:.1f} | {ref} |")
        best = {}
        for r in evals:
            if r["branch"] not in best or r["gpde_valid"] > best[r["branch"]]["gpde_valid"]:
                best[r["branch"]] = r
        if best:
            lines += ["", "Best during training (the evaluation with the highest validation "
                      "GPDE; the paper reports each model's best):", ""]
            for branch, r in best.items():
                lines.append(f"- {branch}: update {r['update']:,}, GPDE valid "
                             f"{r['gpde_valid']:.1f}, test {r['gpde_test']:.1f} +- "
                             f"{r['gpde_test_stderr']:.1f}")
        comparable = (c.name in P.PAPER_GPDE and self.data.name == P.PRESETS[c.name].dataset
                      and c.gpde_samples == 10_000 and c.gpde_test_rows is None)
        lines += ["", "### The paper's numbers (GPDE on the test set, nats; SPEC.md section 7)", "",
                  "| experiment | GPDE |", "|---|---|"]
        lines += [f"| {name}{' (this preset)' if name == c.name else ''} | {v:g} |"
                  for name, v in P.PAPER_GPDE.items()]
        for fam, refs in P.REFERENCE_GPDE.items():
            lines += [f"| {fam.upper()} {label} | {v:g} |" for label, v in refs]
        lines += ["", "These numbers compare with this run's only for a paper preset run in full "
                  "on the paper's data (10,000 samples, the whole test set)"
                  + (": this run is one." if comparable else
                     ": this run is not, so read its numbers as a check of the pipeline.")]
        figs = sorted((out / "figures").glob("*.png"))
        if figs:
            lines += ["", "## Figures", ""]
            for f in figs:
                lines += [f"### {_figure_title(f.stem)}", "", f"![{f.stem}](figures/{f.name})", ""]
        lines += ["", "## Settings", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in c.to_dict().items() if k not in ("summary",)]
        lines += ["", f"Metrics: `metrics.jsonl`, `train_*.csv`, `eval.csv`; checkpoint: "
                  f"`checkpoint.h5` (update {self.update:,}); log: `log.txt`.", ""]
        path = out / "report.md"
        path.write_text("\n".join(lines))
        self.say(f"report: {path}")
        return path

    def _postfix(self, results):
        """Running costs for the progress display (a moving average over about the
        last 20 updates; display only, never saved)."""
        out = {}
        for name, result in results.items():
            for k in ("cost", "gen_cost", "nll", "kl", "guide_loss", "guide_acc"):
                if k in result:
                    key = f"{name[0]}.{k}"
                    old = self._running.get(key, result[k])
                    self._running[key] = 0.95 * old + 0.05 * result[k]
                    out[key] = f"{self._running[key]:.3g}"
        return out


def _interactive():
    """A progress bar can be drawn: stderr is a terminal with a width."""
    try:
        return sys.stderr.isatty() and os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _per_update(seconds, updates):
    return f"{seconds / updates:.3f} s/update" if updates else "no updates"


def _figure_title(stem):
    kind, _, rest = stem.partition("_")
    titles = {"curves": "GPDE and variational bound on validation data (Fig. 4b)",
              "scatter": "-log p(x|z) against KL(q(z|x) || p(z)) (Fig. 4c)",
              "kl": "KL per latent dimension",
              "samples": "prior samples at several updates (Fig. 4d)",
              "chains": "chains from data: free (left), under partial control (right) (Fig. 3, 4a)"}
    return f"{titles.get(kind, kind)}{': ' + rest.replace('_', ' ') if rest else ''}"


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------

def _check_out(out):
    """Create the run folder and prove it writable; ``TrainingError`` otherwise.
    Returns True when this call created it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out}: exists and is not a folder")
    if (out / "checkpoint.h5").exists() or (out / "metrics.jsonl").exists():
        raise TrainingError(f"--out {out}: already holds a run; continue it with --resume {out} "
                            f"or choose another folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return created


def run(config, out, data_dir=None, quiet=False):
    """Run the experiment ``config`` in the folder ``out``; returns the report's path.

    Raises
    ------
    TrainingError
        One-line reasons: the folder cannot be written or already holds a run,
        the data are missing, the run diverged (the last good checkpoint stays).
    """
    config = config.validate()
    out = Path(out)
    created = _check_out(out)
    try:
        data, note = load_data(config, data_dir)
    except TrainingError:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    config = replace(config, dataset=data.name, fallback_dataset=None)
    data_dir = None if data.name == "digits" else str(resolve_data_dir(data_dir))
    with open(out / "config.json", "w") as f:
        json.dump(config.to_dict(), f, indent=1)
    r = Run(config, out, data, note, data_dir, quiet)
    r.say(f"preset {config.name}: {config.pretrain_updates:,} pre-training + "
          f"{config.chain_updates:,} chain updates -> {out}")
    r.say(f"dataset: {note}; using {data.source}" if note else f"dataset: {data.source}")
    return r.train()


def _open_checkpoint(run_dir):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TrainingError(f"--resume {run_dir}: no such run folder")
    try:
        return load_run_checkpoint(run_dir / "checkpoint.h5")
    except CheckpointError as exc:
        raise TrainingError(f"cannot resume: {exc}") from None


def resume(run_dir, quiet=False):
    """Continue the run in ``run_dir`` from its checkpoint, exactly as if it had
    never stopped; returns the report's path. A finished run is evaluated and
    reported again."""
    arrays, meta = _open_checkpoint(run_dir)
    config = P.Preset.from_dict(meta["config"])
    try:
        data = load_dataset(config.dataset, meta.get("data_dir"))
    except DatasetError as exc:
        raise TrainingError(f"cannot resume: {exc}") from None
    r = Run(config, run_dir, data, meta.get("data_note"), meta.get("data_dir"), quiet)
    x_dim = arrays["model/q.h0.W"].shape[0]
    if x_dim != data.n_pixels:
        raise TrainingError(f"cannot resume: the checkpoint's model has {x_dim} inputs, the "
                            f"dataset {data.source} {data.n_pixels} pixels")
    r.restore(arrays, meta)
    r.say(f"resuming {run_dir} at update {r.update:,} of {r.total:,}")
    return r.train()


def load_models(path):
    """The models of a run (folder or checkpoint file), ready to sample or evaluate.

    Returns
    -------
    dict branch -> OneStageModel
        ``'model'``: the pre-trained model (after the fork: the guided chain's q and
        p); ``'vae'``: the 1-step VAE branch when there is one.
    """
    from vgsn.models import OneStageModel

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.h5"
    try:
        arrays, meta = load_run_checkpoint(path)
    except CheckpointError as exc:
        raise TrainingError(str(exc)) from None
    c = P.Preset.from_dict(meta["config"])
    models = {}
    for prefix in ("model", "vae"):
        mine = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
        if not mine:
            continue
        m = OneStageModel(mine["q.h0.W"].shape[0], **_model_args(c))
        m.set_state(mine)
        models[prefix] = m
    return models


# ---------------------------------------------------------------------------
# the command line (run_mnist.py, run_tfd.py)
# ---------------------------------------------------------------------------

SCRIPT_DATASETS = {"mnist": ("mnist", "digits"), "tfd": ("tfd", "olivetti", "frey")}

# CLI flag -> preset field, for the options that change the settings.
_FLAG_FIELDS = {"updates": None, "pretrain_updates": "pretrain_updates",
                "chain_updates": "chain_updates", "dataset": "dataset", "seed": "seed",
                "momentum": "momentum", "step_decay": "step_decay", "lam_kl": "lam_kl",
                "gamma_kl": "gamma_kl", "eval_every": "eval_every",
                "checkpoint_every": "checkpoint_every"}


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``run_mnist.py: error: --updates must be >= 0, got -5``."""

    def error(self, message):
        if message.startswith("argument "):
            flag, _, rest = message[len("argument "):].partition(": ")
            if rest.startswith("invalid choice: "):
                value, _, choices = rest[len("invalid choice: "):].partition(" (choose from ")
                rest = f"{value} is unknown; choose from {choices.rstrip(')')}"
            message = f"{flag.split('/')[-1]} {rest}"
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(script):
    """The argparse parser of ``run_<script>.py`` (script: 'mnist' or 'tfd')."""
    names = P.preset_names(script)
    width = max(len(n) for n in names)
    listing = "\n".join(f"  {n:<{width}}  {P.PRESETS[n].summary}" for n in names)
    quick = P.quick_for(script)
    data_word = {"mnist": "MNIST", "tfd": "TFD"}[script]
    alternatives = {"mnist": "digits is the bundled demo",
                    "tfd": "olivetti and frey are public face stand-ins"}[script]
    parser = _Parser(
        prog=f"run_{script}.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Run the paper's {data_word} experiments (Bachman & Precup, ICML 2015, "
                    f"Sec. 7) end to end: pre-training, the fork, the guided chain, GPDE / bound "
                    f"/ IWLL, figures, checkpoints and report.md in the run folder.",
        epilog=f"presets:\n{listing}\n\n--quick is --preset {quick}. Settings not listed as "
               f"options are set with --set FIELD=VALUE (see vgsn/presets.py). A run stopped "
               f"for any reason continues exactly with --resume RUN_DIR.")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--preset", choices=names, metavar="NAME",
                      help=f"the experiment to run (one of: {', '.join(names)})")
    what.add_argument("--quick", action="store_true",
                      help=f"the small demo of the whole pipeline (--preset {quick}), minutes "
                           f"on a CPU")
    what.add_argument("--resume", metavar="RUN_DIR",
                      help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--updates", type=_count, metavar="N",
                        help="total updates, split between pre-training and the chain phase in "
                             "the preset's proportion (schedules unchanged)")
    parser.add_argument("--pretrain-updates", type=_count, metavar="N")
    parser.add_argument("--chain-updates", type=_count, metavar="N",
                        help="updates after the fork (each branch)")
    parser.add_argument("--dataset", choices=SCRIPT_DATASETS[script],
                        help=f"the data (default: the preset's); {alternatives}")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder holding the data files (default: $VGSN_DATA or ./data)")
    parser.add_argument("--out", metavar="RUN_DIR",
                        help="the run folder (default: runs/<preset>-<date>-<time>)")
    parser.add_argument("--seed", type=_count, metavar="N")
    parser.add_argument("--momentum", type=_number, metavar="BETA",
                        help="SGD momentum (paper: 0 = plain SGD; 2015 code: 0.5)")
    parser.add_argument("--step-decay", type=_number, metavar="D",
                        help="step t's VAE cost weighs D**t, normalised (default 0.1; the "
                             "2015 MNIST script: 0)")
    parser.add_argument("--lam-kl", type=_number, metavar="L", help="Eq. 5's lambda")
    parser.add_argument("--gamma-kl", type=_number, metavar="G", help="Eq. 5's gamma")
    parser.add_argument("--eval-every", type=_count, metavar="N",
                        help="GPDE and bound every N updates (0: only at the end)")
    parser.add_argument("--checkpoint-every", type=_count, metavar="N")
    parser.add_argument("--code2015", action="store_true",
                        help="the 2015 code's choices where it differs from the paper "
                             "(momentum 0.5, step-cost decay, ...; see vgsn/presets.py)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any preset field, e.g. --set hidden=500,500 (repeatable)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    return parser


def config_from_args(args, parser, script):
    """The preset named by ``args`` with every override applied (parser.error on
    a bad value)."""
    name = P.quick_for(script) if args.quick else args.preset
    config = P.get_preset(name)
    if args.code2015:
        config = P.code2015(config)
    changes = {}
    for flag, fieldname in _FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None and fieldname is not None:
            changes[fieldname] = value
    if args.dataset is not None and args.dataset != config.dataset:
        changes["fallback_dataset"] = None
    if args.no_figures:
        changes["figures"] = False
    for item in args.set:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            parser.error(f"--set needs FIELD=VALUE, got {item!r}")
        try:
            changes[key] = P.parse_value(key, value)
        except ValueError as exc:
            parser.error(f"--set {item}: {exc}")
    if args.updates is not None:
        total = config.total_updates
        pre = int(round(args.updates * config.pretrain_updates / total)) if total else args.updates
        changes.setdefault("pretrain_updates", pre)
        changes.setdefault("chain_updates", args.updates - changes["pretrain_updates"])
    try:
        return P.apply_overrides(config, changes).validate()
    except ValueError as exc:
        parser.error(str(exc))


def cli_main(argv, script):
    """``run_<script>.py``: parse ``argv``, run or resume; returns the exit status
    (0 done, 1 the run failed or diverged, 2 bad arguments, 130 interrupted)."""
    parser = build_parser(script)
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.resume is not None:
        given = [f"--{k.replace('_', '-')}" for k in list(_FLAG_FIELDS) + ["data_dir", "out"]
                 if getattr(args, k) is not None]
        given += [f for f, on in (("--code2015", args.code2015), ("--no-figures", args.no_figures),
                                  ("--set", bool(args.set))) if on]
        if given:
            parser.error(f"--resume continues a run with its own settings; drop {', '.join(given)}")
    elif args.preset is None and not args.quick:
        parser.error("choose an experiment: --preset NAME (listed by --help), --quick, "
                     "or --resume RUN_DIR")
    else:
        config = config_from_args(args, parser, script)
        out = Path(args.out or Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}")
        try:
            if _check_out(out):   # run() creates it again; nothing is left behind on errors
                out.rmdir()
        except TrainingError as exc:
            parser.error(str(exc))
    try:
        if args.resume is not None:
            report = resume(args.resume, quiet=args.quiet)
        else:
            report = run(config, out, data_dir=args.data_dir, quiet=args.quiet)
    except Interrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 130
    except TrainingError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # before training started: nothing to resume from
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    if args.quiet:
        print(report)
    return 0

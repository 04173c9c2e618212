"""The training loop: schedules, the fork, one update, evaluation, checkpoints.

``run(config, out)`` runs one experiment of ``vgsn.presets`` end to end, and
``resume(out)`` continues a stopped run exactly where its last checkpoint left it.
The run folder's files are ``vgsn.runfiles``' (listed there), the snapshots and
figures ``vgsn.snapshots``', the command line ``vgsn.cli``'.

A run, one update counter ``u`` over both phases
------------------------------------------------
- ``0 <= u < pretrain_updates``: the 1-step VAE (branch ``pretrain``).
- then the fork: the pre-trained model is trained as the guided chain (branch
  ``guided``, ``VCGLoop``) and, with ``vae_branch``, a copy continues as the 1-step
  VAE (branch ``vae``). The two take their updates in turn, one each per ``u``,
  so their rows line up in the metrics.

Schedules are pure functions of the update index: :func:`lr_at` (linear warm-up,
then x decay every N updates) and :func:`kl_weight_at` (1 -> lambda linearly);
:meth:`Run.set_schedules` writes them into the models' hyperparameters before
every update (the loop never sets the model's; this is the one place).

Every noise is drawn on the host from seeded NumPy generators whose states are
checkpointed, so a resumed run writes the metrics files and the parameters bit
for bit as an uninterrupted run with the same seed does.

Hooks
-----
``run``, ``resume`` and ``Run`` take ``hooks``, an object with the methods of
:class:`Hooks` (``before_step(run)``, ``after_update(run)``): the tests use them to
poison an update or to SIGKILL the process; real runs pass none.
"""
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vgsn import evaluation as ev
from vgsn import presets as P
from vgsn import snapshots
from vgsn.backend import NAME, library_version
from vgsn.checkpoints import CheckpointError, load_run_checkpoint, save_run_checkpoint
from vgsn.datasets import DatasetError, load_dataset, resolve_data_dir
from vgsn.models import OneStageModel, VCGLoop
from vgsn.nets import MaxoutGuide
from vgsn.runfiles import (Diverged, Interrupted, Metrics, Progress, RunLog, TrainingError,
                           check_out, rewind, write_report, write_timing)

__all__ = ["TrainingError", "Diverged", "Interrupted", "Hooks", "lr_at", "kl_weight_at",
           "load_data", "Run", "run", "resume", "load_models"]


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


def vae_hyper_at(c, u):
    """The 1-step VAE's hyperparameters at update ``u`` of preset ``c``: the
    pre-training schedule, which the ``vae`` branch continues after the fork."""
    return dict(lr=lr_at(u, c.pretrain_lr, c.pretrain_warmup, c.pretrain_lr_decay,
                         c.pretrain_lr_decay_every),
                lam_kl=kl_weight_at(u, c.lam_kl, c.kl_warmup), gamma_kl=c.gamma_kl,
                l2=c.pretrain_l2)


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------

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


def _first(X, n):
    return X if n is None else X[:int(n)]


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------

class Hooks:
    """What a caller (the tests) may run inside the loop; the defaults do nothing.

    ``before_step(run)``: the schedules of update ``run.update + 1`` are set, its
    batches not yet drawn. ``after_update(run)``: update ``run.update`` and all that
    is due at it (rows, evaluation, snapshots, checkpoint) are done.
    """

    def before_step(self, run):
        pass

    def after_update(self, run):
        pass


_BRANCH_CODES = {"pretrain": 0, "guided": 1, "vae": 2}


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
    hooks : Hooks, optional
    """

    def __init__(self, config, out, data, data_note=None, data_dir=None, quiet=False,
                 hooks=None):
        self.config = c = config.validate()
        self.out = Path(out)
        self.data, self.data_note, self.data_dir = data, data_note, data_dir
        self.hooks = hooks or Hooks()
        for sub in ("figures", "evals"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics(self.out)
        self.log = RunLog(self.out, quiet)
        self.model = OneStageModel(data.n_pixels, x_mean=data.train.mean(axis=0),
                                   **P.model_args(c), **vae_hyper_at(c, 0))
        self.loop = None   # the guided chain after the fork
        self.vae = None    # the 1-step VAE branch after the fork (vae_branch)
        self.data_rng = np.random.default_rng([c.seed, 2])
        self.update = 0
        self.acc = {}      # branch -> {"n": int, key: sum}
        self.last_checkpoint = None
        self.timing = {"compile_s": 0.0, "pretrain_s": 0.0, "fork_s": 0.0, "eval_s": 0.0,
                       "final_eval_s": 0.0, "pretrain_updates": 0, "fork_updates": 0}
        # The fixed evaluation rows.
        self.X_gpde_valid = _first(data.valid, c.gpde_valid_rows)
        self.X_gpde_test = _first(data.test, c.gpde_test_rows)
        self.X_bound_valid = _first(data.valid, c.bound_rows)
        self.X_bound_test = _first(data.test, c.bound_rows)
        self.X_iwll = _first(data.test, c.iwll_rows)
        self.X_scatter = _first(data.valid, c.scatter_rows)
        self.sigmas = ev.TFD_SIGMAS if c.sigmas == "tfd" else ev.MNIST_SIGMAS

    def say(self, message):
        self.log.say(message)

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
        c = self.config
        t0 = time.time()
        if c.vae_branch:
            self.vae = self.model.fork()
            self.vae.compile(("train_step",))
        guide = MaxoutGuide(self.model.x_dim, np.random.default_rng([P.loop_seed(c), 2]),
                            **P.guide_args(c))
        self.loop = VCGLoop(self.model, guide, **P.loop_args(c))
        self.loop.compile(("train_step",))
        self.timing["compile_s"] += time.time() - t0

    # ---- one update ------------------------------------------------------------
    def set_schedules(self, u):
        """Every scheduled hyperparameter for update ``u`` (0-based, whole run)."""
        c = self.config
        if self.loop is None:
            self.model.hyper.set(**vae_hyper_at(c, u))
            return
        lr = lr_at(u - self.pretrain_end, c.lr_gen, c.chain_warmup, c.chain_lr_decay,
                   c.chain_lr_decay_every)
        self.loop.hyper.set(lr_gen=lr, lr_guide=lr if c.lr_guide is None
                            else lr * c.lr_guide / c.lr_gen)
        self.model.hyper.set(lam_kl=c.lam_kl, gamma_kl=c.gamma_kl, l2=c.chain_l2)
        if self.vae is not None:   # the VAE branch continues the pre-training schedule
            self.vae.hyper.set(**vae_hyper_at(c, u))

    def _batch(self, rows):
        idx = self.data_rng.integers(0, len(self.data.train), size=int(rows))
        return self.data.train[idx]

    def step(self):
        """One update of every active branch; returns {branch: result dict}."""
        c, u = self.config, self.update
        self.set_schedules(u)
        self.hooks.before_step(self)
        results = {}
        for name, model in self.branches():
            X = self._batch(c.batch_size)
            if name == "guided":
                results[name] = self.loop.train_step(X, self._batch(c.data_rows))
            else:
                results[name] = model.train_step(X)
        for name, result in results.items():
            bad = [f"{k}={v}" for k, v in result.items()
                   if isinstance(v, (float, np.floating)) and not np.isfinite(v)]
            if bad:
                raise Diverged(f"update {u + 1}: the {name} cost is not finite "
                               f"({', '.join(bad)}); stopped. {self._last_good()}")
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
        for name, model in self.branches():
            acc = self.acc.get(name)
            if not acc or acc["n"] == 0:
                continue
            lr = self.loop.hyper["lr_gen"] if name == "guided" else model.hyper["lr"]
            row = {"update": u, "phase": self.phase_at(u - 1), "branch": name, "kind": "train",
                   "updates_averaged": acc["n"], "lr": lr, "lam_kl": model.hyper["lam_kl"]}
            row.update({k: v / acc["n"] for k, v in acc.items() if k != "n"})
            self.metrics.write(row)
        self.acc = {}

    # ---- evaluation and snapshots -------------------------------------------------
    def eval_rng(self, branch, purpose):
        """A generator fixed by (seed, branch, purpose, update): evaluations never
        consume training noise, and give the same numbers on resume."""
        return np.random.default_rng([self.config.seed, 7, _BRANCH_CODES[branch], purpose,
                                      self.update])

    def _eval_row(self, name, model, final):
        """One evaluation row of a branch (``vgsn.evaluation``'s numbers)."""
        c, u = self.config, self.update
        g = ev.model_gpde(model, self.X_gpde_valid, self.X_gpde_test, n_samples=c.gpde_samples,
                          sigmas=self.sigmas, rng=self.eval_rng(name, 0))
        # The bound's two terms, from the same draws (variational_bound gives their sum).
        nll, kl = model.free_energy_terms(self.X_bound_valid, n_samples=c.bound_samples,
                                          rng=self.eval_rng(name, 1))
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
                model, self.X_bound_test, k=c.bound_samples, rng=self.eval_rng(name, 2))))
            row["iwll_test"] = float(np.mean(ev.importance_weighted_ll(
                model, self.X_iwll, c.iwll_k, rng=self.eval_rng(name, 3))))
            row["iwll_k"] = int(c.iwll_k)
        return row

    def evaluate(self, final=False):
        """GPDE (sigma on validation rows), the bound (and at the end the test bound
        and the importance-weighted LL) for every active branch; writes the rows."""
        c = self.config
        t0 = time.time()
        rows = []
        for name, model in self.branches():
            row = self._eval_row(name, model, final)
            self.metrics.write(row)
            rows.append(row)
            edge = ", at the grid edge" if row["gpde_sigma_at_edge"] else ""
            self.say(f"update {self.update:,} {name}: GPDE valid {row['gpde_valid']:.1f} test "
                     f"{row['gpde_test']:.1f} +- {row['gpde_test_stderr']:.1f} (sigma "
                     f"{row['gpde_sigma']:.3g}{edge}), bound valid {row['bound_valid']:.1f}"
                     + (f", bound test {row['bound_test']:.1f}, IWLL(k={c.iwll_k}) test "
                        f"{row['iwll_test']:.1f}" if final else ""))
        self.timing["final_eval_s" if final else "eval_s"] += time.time() - t0
        if c.figures:
            snapshots.curves(self.metrics.rows, self.out)
        return rows

    def snapshot(self, kind):
        """Save the ``kind`` snapshot ('scatter', 'samples', 'chains') of every branch."""
        c, u, figs = self.config, self.update, self.config.figures
        for name, model in self.branches():
            if kind == "scatter":
                snapshots.scatter(model, self.X_scatter, self.out, name, u,
                                  self.eval_rng(name, 4), c.scatter_passes, figs)
            elif kind == "samples":
                snapshots.prior_samples(model, self.data.image_shape, self.out, name, u,
                                        self.eval_rng(name, 5), figures=figs)
            else:
                snapshots.chains(model, self.data, self.out, name, u, self.eval_rng(name, 6),
                                 c.chain_rows, c.chain_length, figs)

    # ---- checkpoints ----------------------------------------------------------------
    def _parts(self):
        """The objects whose state a checkpoint holds, by prefix."""
        return {k: v for k, v in (("model", self.model), ("loop", self.loop),
                                  ("vae", self.vae)) if v is not None}

    def _rngs(self):
        out = {"data": self.data_rng}
        out.update({k: v.rng for k, v in self._parts().items()})
        return out

    def checkpoint(self, also=None):
        arrays = {f"{prefix}/{k}": v for prefix, obj in self._parts().items()
                  for k, v in obj.get_state().items()}
        bad = [k for k, v in arrays.items() if not np.all(np.isfinite(v))]
        if bad:
            raise Diverged(f"update {self.update}: parameters became non-finite "
                           f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); stopped "
                           f"before checkpointing them. {self._last_good()}")
        meta = {"update": self.update, "forked": self.loop is not None,
                "config": self.config.to_dict(), "data_dir": self.data_dir,
                "data_note": self.data_note, "data_source": self.data.source,
                "rng": {k: r.bit_generator.state for k, r in self._rngs().items()},
                "acc": self.acc, "metrics_sizes": self.metrics.sizes(),
                "timing": self.timing}
        path = save_run_checkpoint(self.out / "checkpoint.h5", arrays, meta)
        if also:
            save_run_checkpoint(self.out / also, arrays, meta)
        self.last_checkpoint = (path, self.update)

    def restore(self, arrays, meta):
        """Load a checkpoint's state into this freshly built run."""
        self.update = int(meta["update"])
        # Compile first: the momentum velocities exist once train_step is built.
        self.model.compile(("train_step",))
        if meta["forked"]:
            self.fork()
        for prefix, obj in self._parts().items():
            obj.set_state({k.split("/", 1)[1]: v for k, v in arrays.items()
                           if k.startswith(prefix + "/")})
        for name, rng in self._rngs().items():
            rng.bit_generator.state = meta["rng"][name]
        self.acc = meta["acc"]
        self.timing = meta.get("timing", self.timing)
        rewind(self.out, self.metrics, meta["metrics_sizes"], self.update)
        self.last_checkpoint = (self.out / "checkpoint.h5", self.update)

    # ---- the loop -------------------------------------------------------------------
    def after_update(self):
        """Logging, evaluation, snapshots and checkpoints once ``self.update`` updates
        are done (the order is fixed, so a resumed run writes the same rows)."""
        c, u = self.config, self.update

        def due(every):
            return every > 0 and u % every == 0
        phase_end = u == self.pretrain_end or u == self.total
        if due(c.log_every) or phase_end:
            self._write_train_rows()
        if due(c.eval_every) and u < self.total:
            self.evaluate()
        if due(c.scatter_every) or phase_end:
            self.snapshot("scatter")
        if u in tuple(c.samples_at) or phase_end:
            self.snapshot("samples")
        if phase_end:
            self.snapshot("chains")
        if due(c.checkpoint_every) or phase_end:
            self.checkpoint(also="pretrained.h5" if u == self.pretrain_end and
                            c.chain_updates > 0 else None)

    def train(self):
        """Run the remaining updates, then the final evaluation and the report."""
        c = self.config
        progress = Progress(self.log, self.total, self.update, max(c.log_every, self.total // 20),
                            self.phase_at(self.update))
        t0 = time.time()
        self.model.compile(("train_step",))
        self.timing["compile_s"] += time.time() - t0
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
                progress.tick(self.update, phase, results, min(c.log_every, 50))
                self.after_update()
                self.hooks.after_update(self)
                progress.line(self.update, phase)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted at update {self.update:,}; "
                              f"{self._last_good()}") from None
        finally:
            progress.close()
        self.evaluate(final=True)
        write_timing(self.out, self.timing)
        rows = {"gpde_valid": len(self.X_gpde_valid), "gpde_test": len(self.X_gpde_test),
                "bound_test": len(self.X_bound_test), "iwll": len(self.X_iwll)}
        path = write_report(self.out, c, self.data, self.data_note, self.metrics, self.timing,
                            rows, self.update, f"{NAME} {library_version}")
        self.say(f"report: {path}")
        return path


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------

def run(config, out, data_dir=None, quiet=False, hooks=None):
    """Run the experiment ``config`` in the folder ``out``; returns the report's path.

    Raises
    ------
    TrainingError
        One-line reasons: the folder cannot be written or already holds a run,
        the data are missing, the run diverged (the last good checkpoint stays).
    """
    config = config.validate()
    out = Path(out)
    created = check_out(out)
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
    r = Run(config, out, data, note, data_dir, quiet, hooks)
    r.say(f"preset {config.name}: {config.pretrain_updates:,} pre-training + "
          f"{config.chain_updates:,} chain updates -> {out}")
    r.say(f"dataset: {note}; using {data.source}" if note else f"dataset: {data.source}")
    return r.train()


def _open_checkpoint(path, what):
    try:
        return load_run_checkpoint(path)
    except CheckpointError as exc:
        raise TrainingError(f"{what}{exc}") from None


def resume(run_dir, quiet=False, hooks=None):
    """Continue the run in ``run_dir`` from its checkpoint, exactly as if it had
    never stopped; returns the report's path. A finished run is evaluated and
    reported again."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TrainingError(f"--resume {run_dir}: no such run folder")
    arrays, meta = _open_checkpoint(run_dir / "checkpoint.h5", "cannot resume: ")
    config = P.Preset.from_dict(meta["config"])
    try:
        data = load_dataset(config.dataset, meta.get("data_dir"))
    except DatasetError as exc:
        raise TrainingError(f"cannot resume: {exc}") from None
    r = Run(config, run_dir, data, meta.get("data_note"), meta.get("data_dir"), quiet, hooks)
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
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.h5"
    arrays, meta = _open_checkpoint(path, "")
    c = P.Preset.from_dict(meta["config"])
    models = {}
    for prefix in ("model", "vae"):
        mine = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
        if not mine:
            continue
        m = OneStageModel(mine["q.h0.W"].shape[0], **P.model_args(c))
        m.set_state(mine)
        models[prefix] = m
    return models

"""The training loop (:class:`Run`): schedules, the fork, one update, evaluation, checkpoints.

:mod:`vgsn.run.train` starts (``run``) or resumes (``resume``) a :class:`Run`. The run
folder's files are ``vgsn.run.folder``'s (listed there), the snapshots and figures
``vgsn.run.snapshots``', the command line ``vgsn.run.cli``'.

A run, one update counter ``u`` over both phases
------------------------------------------------
- ``0 <= u < pretrain_updates``: the 1-step VAE (branch ``pretrain``).
- then the fork: the pre-trained model is trained as the guided chain (branch
  ``guided``, ``VCGLoop``) and, with ``vae_branch``, a copy continues as the 1-step
  VAE (branch ``vae``). The two take their updates in turn, one each per ``u``,
  so their rows line up in the metrics.

Schedules are pure functions of the update index (``vgsn.run.schedules``: ``lr_at``,
``kl_weight_at``, ``vae_hyper_at``); :meth:`Run.set_schedules` writes them into the
models' hyperparameters before every update (the loop never sets the model's; this
is the one place). The data and their digest come from ``vgsn.run.data``.

Every noise is drawn on the host from seeded NumPy generators whose states are
checkpointed, so a resumed run writes the metrics files and the parameters bit
for bit as an uninterrupted run with the same seed does.

Hooks
-----
``run``, ``resume`` and ``Run`` take ``hooks``, an object with the methods of
:class:`Hooks` (``before_step(run)``, ``after_update(run)``): the tests use them to
poison an update or to SIGKILL the process; real runs pass none.
"""
import time
from pathlib import Path

import numpy as np

from vgsn import backend
from vgsn.model.nets import MaxoutGuide
from vgsn.model.options import GUIDE_LOSS_NAMES
from vgsn.model.vae import OneStageModel
from vgsn.model.vcg import VCGLoop
from vgsn.run import evaluate as runeval
from vgsn.run import presets as P
from vgsn.run import snapshots
from vgsn.run.checkpoints import CheckpointError, save_run_checkpoint
from vgsn.run.data import data_digest
from vgsn.run.folder import (Diverged, Interrupted, Metrics, Progress, RunLog, WriteFailed,
                             rewind, write_timing)
from vgsn.run.report import write_report
from vgsn.run.schedules import lr_at, vae_hyper_at
from vgsn.run.signals import StopSignals, Stopped
from vgsn.run.tracking import TensorBoard

__all__ = ["Hooks", "Run", "guided_loop"]


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


def guided_loop(c, model, init_weights=True):
    """The guided chain of preset ``c`` around ``model``: its fresh guide and ``VCGLoop``."""
    guide = MaxoutGuide(model.x_dim, np.random.default_rng([P.loop_seed(c), 2]),
                        **P.guide_args(c), init_weights=init_weights)
    return VCGLoop(model, guide, **P.loop_args(c))


class Run:
    """One experiment in one folder: build, train, evaluate, checkpoint, report.

    Use :func:`run` and :func:`resume`; this class holds the state between them.

    Parameters
    ----------
    config : vgsn.run.presets.Preset
    out : Path
        The run folder (created).
    data : vgsn.data.datasets.Dataset
    data_note : str or None
        Why a fallback dataset is used.
    data_dir : str or None
        Where the data came from (stored, so ``resume`` finds it again).
    quiet : bool
        No progress bar and no messages (errors still raise).
    hooks : Hooks, optional
    restoring : bool
        A checkpoint fills the models next (:meth:`restore`): they are built without
        the orthogonal init's SVDs, which it would overwrite.
    """

    def __init__(self, config, out, data, data_note=None, data_dir=None, quiet=False,
                 hooks=None, restoring=False):
        self.config = c = config.validate()
        self.out = Path(out)
        self.data, self.data_note, self.data_dir = data, data_note, data_dir
        self.hooks = hooks or Hooks()
        for sub in ("figures", "evals"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics(self.out)
        self.log = RunLog(self.out, quiet)
        # vae_hyper_at's momentum (a scheduled one) replaces model_args' starting value.
        self.model = OneStageModel(data.n_pixels, x_mean=data.train.mean(axis=0),
                                   **{**P.model_args(c), **vae_hyper_at(c, 0)},
                                   init_weights=not restoring)
        self.loop = None   # the guided chain after the fork
        self.vae = None    # the 1-step VAE branch after the fork (vae_branch)
        self.data_rng = np.random.default_rng([c.seed, 2])
        self.update = 0
        self.acc = {}      # branch -> {"n": int, key: sum}
        self.last_checkpoint = None
        self._data_digest = None
        self.overrides = []   # [{"update", "field", "old", "new"}] set on resume (--set)
        self.timing = {"compile_s": 0.0, "pretrain_s": 0.0, "fork_s": 0.0, "eval_s": 0.0,
                       "final_eval_s": 0.0, "pretrain_updates": 0, "fork_updates": 0}
        self.sets = runeval.EvalSets(c, data)     # the fixed evaluation rows
        # The chain scorer (a cached digit classifier or a PCA of the faces), built on
        # first use so a run without chain scores never trains a classifier.
        self.scorer = runeval.ChainScorer(data, data_dir) if c.score_chains else None

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

    def fork(self, init_weights=True):
        """The paper's fork: the pre-trained model goes into the guided chain and,
        with ``vae_branch``, a copy continues as the 1-step VAE (``init_weights``
        False: the guide without its SVD init, for :meth:`restore`)."""
        c = self.config
        t0 = time.time()
        if P.rebuilt_at_fork(c):
            # The chain's pixel model / z samples / momentum (or schedule) differ from
            # pre-training's (the TFD script): a model built anew takes the pre-trained
            # weights (a Gaussian's shared log-variance, absent before, starts at 0).
            hyper = {k: v for k, v in self.model.hyper.values().items() if k != "momentum"}
            new = OneStageModel(self.data.n_pixels, x_mean=self.data.train.mean(axis=0),
                                **P.chain_model_args(c), **hyper, init_weights=init_weights)
            new.set_state({p.name: p.get_value() for p in self.model.params}, strict=False)
            new.compile(("train_step",))
            self.model = new
        if c.vae_branch:   # continues pre-training's momentum schedule, if any
            self.vae = self.model.fork(momentum_scheduled=c.momentum_scheduled)
            self.vae.compile(("train_step",))
        self.loop = guided_loop(c, self.model, init_weights)
        self.loop.compile(("train_step",))
        self.timing["compile_s"] += time.time() - t0

    # ---- one update ------------------------------------------------------------
    def set_schedules(self, u):
        """Every scheduled hyperparameter for update ``u`` (0-based, whole run); a
        scheduled momentum (``vae_hyper_at``) in pre-training and the ``vae`` branch."""
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
        n = len(self.data.train)
        if self.config.distinct_rows:   # without repeats (the 2015 code drew with them)
            idx = self.data_rng.choice(n, size=int(rows), replace=False)
        else:
            idx = self.data_rng.integers(0, n, size=int(rows))
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
                               f"({', '.join(bad)}); stopped. {self._diverged_hint(name)}")
        return results

    def _diverged_hint(self, branch):
        """What helps after a divergence: the same run resumed as it is diverges again
        at the same update, so say which learning rate to lower, and how."""
        c = self.config
        field = "lr_gen" if branch == "guided" else "pretrain_lr"
        lower = f"--set {field}={float(getattr(c, field)) / 2:.3g}"
        if self.last_checkpoint is None:
            return (f"No checkpoint had been written yet; start again with a lower learning "
                    f"rate ({lower}).")
        path, u = self.last_checkpoint
        return (f"Last good checkpoint: {path} (update {u}); resuming it unchanged diverges "
                f"again, so lower the learning rate: --resume {self.out} {lower}")

    def _last_good(self):
        if self.last_checkpoint is None:
            return "No checkpoint had been written yet."
        path, u = self.last_checkpoint
        return f"Last good checkpoint: {path} (update {u}); resume with --resume {self.out}"

    def _accumulate(self, results):
        # Rebuilt in the result's key order: a checkpoint's copy comes back with its
        # keys sorted, and the order is the order of the metrics files' columns.
        for name, result in results.items():
            old = self.acc.get(name, {"n": 0})
            acc = {"n": old["n"] + 1}
            for k, v in result.items():
                if isinstance(v, (float, np.floating)):
                    acc[k] = old.get(k, 0.0) + float(v)
            self.acc[name] = acc

    def _write_train_rows(self):
        u = self.update
        for name, model in self.branches():
            acc = self.acc.get(name)
            if not acc or acc["n"] == 0:
                continue
            lr = self.loop.hyper["lr_gen"] if name == "guided" else model.hyper["lr"]
            row = {"update": u, "phase": self.phase_at(u - 1), "branch": name, "kind": "train",
                   "updates_averaged": acc["n"], "lr": lr, "lam_kl": model.hyper["lam_kl"]}
            if "momentum" in model.hyper:   # a scheduled momentum (pretrain, vae)
                row["momentum"] = model.hyper["momentum"]
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
        """One evaluation row of a branch (``vgsn.run.evaluate.eval_row``: both GPDE
        protocols, the bound, at the end the IWLLs, the chain scores)."""
        u = self.update
        row = runeval.eval_row(self.config, self.sets, self.scorer, model, name, u,
                               self.phase_at(max(u - 1, 0)), final,
                               lambda purpose: self.eval_rng(name, purpose), self.out)
        row["test_overlaps_train"] = bool(getattr(self.data, "test_overlaps_train", False))
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
            self.say(runeval.log_line(c, row, self.update, name, final))
        self.timing["final_eval_s" if final else "eval_s"] += time.time() - t0
        if c.figures:
            snapshots.curves(self.metrics.rows, self.out)
            if self.scorer is not None:
                snapshots.chain_score_figure(self.out)
        return rows

    def snapshot(self, kind):
        """Save the ``kind`` snapshot ('scatter', 'samples', 'chains') of every branch."""
        c, u, figs = self.config, self.update, self.config.figures
        for name, model in self.branches():
            if kind == "scatter":
                snapshots.scatter(model, self.sets.scatter, self.out, name, u,
                                  self.eval_rng(name, 4), c.scatter_passes, figs,
                                  idx=self.sets.scatter_idx)
            elif kind == "samples":
                snapshots.prior_samples(model, self.data.image_shape, self.out, name, u,
                                        self.eval_rng(name, 5), figures=figs)
            else:
                snapshots.chains(model, self.data, self.out, name, u, self.eval_rng(name, 6),
                                 c.chain_rows, c.chain_length, figs, patch_side=c.patch_side)

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
                           f"before checkpointing them. "
                           f"{self._diverged_hint('guided' if self.loop else 'pretrain')}")
        meta = {"update": self.update, "forked": self.loop is not None,
                "config": self.config.to_dict(), "data_dir": self.data_dir,
                "data_note": self.data_note, "data_source": self.data.source,
                "rng": {k: r.bit_generator.state for k, r in self._rngs().items()},
                "acc": self.acc, "metrics_sizes": self.metrics.sizes(),
                "metrics_digests": self.metrics.digests(),
                "data_digest": self.data_digest(), "overrides": self.overrides,
                "timing": self.timing, "backend": backend.MODE,
                "numerics": backend.numerics()}
        try:
            # ``also`` (pretrained.h5 at the fork) first: a checkpoint.h5 at or past the
            # fork then proves it complete; a kill before leaves the previous
            # checkpoint, and the resumed run writes both again.
            if also:
                save_run_checkpoint(self.out / also, arrays, meta)
            path = save_run_checkpoint(self.out / "checkpoint.h5", arrays, meta)
        except CheckpointError as exc:
            raise WriteFailed(f"update {self.update}: {exc}; stopped. "
                              f"{self._write_hint()}") from None
        self.last_checkpoint = (path, self.update)

    def data_digest(self):
        if self._data_digest is None:
            self._data_digest = data_digest(self.data)
        return self._data_digest

    def _write_hint(self):
        if self.last_checkpoint is None:
            return ("No checkpoint had been written yet: free some space (or make the folder "
                    "writable) and start the run again.")
        path, u = self.last_checkpoint
        return (f"Last good checkpoint: {path} (update {u}), still loadable; free some space "
                f"(or make the folder writable), then --resume {self.out}")

    def restore(self, arrays, meta):
        """Load a checkpoint's state into this freshly built run."""
        self.update = int(meta["update"])
        # Compile first: the momentum velocities exist once train_step is built.
        self.model.compile(("train_step",))
        if meta["forked"]:
            self.fork(init_weights=False)
        for prefix, obj in self._parts().items():
            obj.set_state({k.split("/", 1)[1]: v for k, v in arrays.items()
                           if k.startswith(prefix + "/")})
        for name, rng in self._rngs().items():
            rng.bit_generator.state = meta["rng"][name]
        self.acc = meta["acc"]
        self.timing = meta.get("timing", self.timing)
        self.overrides = list(meta.get("overrides", []))
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
        """Run the remaining updates, then the final evaluation and the report.

        A file that cannot be written (full disk, read-only folder or mount) stops
        the run with :class:`WriteFailed`: one line naming the update, the file and
        the last good checkpoint, which stays loadable."""
        try:
            return self._train()
        except OSError as exc:
            what = exc.filename or "a file of the run"
            raise WriteFailed(f"update {self.update}: cannot write {what} "
                              f"({exc.strerror or exc}); stopped. {self._write_hint()}") from None

    def _train(self):
        c = self.config
        if self.update == 0 and getattr(self.data, "note", ""):
            self.say(f"data: {self.data.note}")
        progress = Progress(self.log, self.total, self.update, max(c.log_every, self.total // 20),
                            self.phase_at(self.update), pretrain_end=self.pretrain_end)
        tb = None
        t0 = time.time()
        stop = StopSignals().__enter__()   # SIGTERM / SIGINT / SIGUSR1: save, then stop
        try:
            if c.tensorboard:      # events after the checkpoint (if resumed) are dropped
                tb = TensorBoard(self.out, purge_step=self.update)
                self.metrics.sinks.append(tb.row)
            self.model.compile(("train_step",))
            self.timing["compile_s"] += time.time() - t0
            while True:
                if self.loop is None and self.update >= self.pretrain_end and c.chain_updates:
                    if self.pretrain_end:
                        self.say(f"update {self.update:,}: pre-training done; forking into the "
                                 f"guided chain{' and the 1-step VAE' if c.vae_branch else ''} "
                                 f"(guide loss: {GUIDE_LOSS_NAMES[c.guide_loss]})")
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
                if tb is not None and c.figures and self.update % max(1, c.log_every) == 0:
                    tb.figures(self.update)
                if stop.received:
                    self._stop_saved(stop)
            stop.immediate = True      # the final evaluation: the checkpoint is written
            progress.close()
            self.evaluate(final=True)
            if tb is not None:
                tb.figures(self.update)
            write_timing(self.out, self.timing)
            path = write_report(self.out, c, self.data, self.data_note, self.metrics,
                                self.timing, self.sets.counts(), self.update,
                                backend.describe(), sigmas=self.sets.sigmas,
                                paper_sigmas=self.sets.paper_sigmas)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted at update {self.update:,}; "
                              f"{self._last_good()}") from None
        except Stopped as exc:
            if str(exc).startswith("stopped by"):
                raise
            raise Stopped(f"stopped by {stop.name or str(exc)} at update {self.update:,}; "
                          f"{self._last_good()}", exc.signum) from None
        finally:
            stop.__exit__(None, None, None)
            progress.close()
            if tb is not None:
                self.metrics.sinks.remove(tb.row)
                tb.close()
        self.say(f"report: {path}")
        return path

    def _stop_saved(self, stop):
        """A stop signal came: checkpoint this update (unless just written), then stop."""
        if self.last_checkpoint is None or self.last_checkpoint[1] != self.update:
            self.checkpoint()
        self.say(f"update {self.update:,}: {stop.name} received; checkpoint saved")
        raise Stopped(f"stopped by {stop.name} at update {self.update:,}; checkpoint saved "
                      f"({self.out / 'checkpoint.h5'}); continue with --resume {self.out}",
                      stop.received)

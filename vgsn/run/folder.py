"""The run folder's files: metrics, the log, timing and ``report.md``.

Nothing here is symbolic or trains anything: ``vgsn.run.train`` hands this module
rows, messages and numbers, and it writes them where a reader looks.

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
them byte for byte as an uninterrupted run with the same seed does: resuming cuts
them back to their sizes at the checkpoint (:func:`rewind`).
"""
import csv
import hashlib
import io
import json
import os
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from vgsn.run import presets as P
from vgsn.run.settings import MAX_UPDATES
from vgsn.run.config import apply_overrides
from vgsn.run.checkpoints import CheckpointError, load_run_checkpoint
from vgsn.run.progress import Progress  # noqa: F401  (the progress display, named here before)

__all__ = ["TrainingError", "BadInput", "Diverged", "Interrupted", "WriteFailed", "EVAL_COLUMNS", "BRANCHES",
           "RESUME_FIELDS",
           "is_metrics_file", "Metrics", "RunLog", "Progress", "check_out", "finished_update",
           "extended", "rewind", "write_timing", "write_report",
           "open_checkpoint", "resume_config", "check_metrics", "check_pretrained"]


class TrainingError(RuntimeError):
    """A run cannot go on; the message is one line saying why and what to do."""


class BadInput(TrainingError):
    """A file, flag or value does not fit; refused before anything was done (exit
    status 2, as a bad argument)."""

    status = 2


class Diverged(TrainingError):
    """A cost or a parameter became NaN or infinite."""


class Interrupted(TrainingError):
    """The user stopped the run (Ctrl-C); the last checkpoint stays."""


class WriteFailed(TrainingError):
    """A file of the run could not be written (full disk, read-only folder or
    mount); the last good checkpoint stays loadable."""


# ---------------------------------------------------------------------------
# metrics files
# ---------------------------------------------------------------------------

# New columns are appended, never inserted, so the eval.csv of older runs keeps parsing:
# the paper's GPDE protocol, the TFD overlap flag, what the IWLL is and the binarised
# IWLL, then the chain scores (vgsn.run.evaluate.SCORE_COLUMNS), then which Parzen engine
# ran the GPDE ('numpy' or 'jax').
EVAL_COLUMNS = ["update", "phase", "branch", "kind", "gpde_sigma", "gpde_sigma_at_edge",
                "gpde_valid", "gpde_test", "gpde_test_stderr", "bound_valid", "nll_valid",
                "kl_valid", "bound_test", "iwll_test", "iwll_k",
                "gpde_paper_sigma", "gpde_paper_sigma_at_edge", "gpde_paper_test",
                "gpde_paper_test_stderr", "gpde_paper_valid", "gpde_paper_valid_sigma",
                "test_overlaps_train", "iwll_kind", "iwll_bin_test",
                "score_chains", "score_steps", "confidence_test", "confidence_start",
                "confidence_final", "switch_rate_mean", "classes_visited_mean",
                "never_switched", "frechet_start", "frechet_final", "frechet_mean",
                "frechet_pca_start", "frechet_pca_final", "frechet_pca_mean",
                "prior_confidence", "prior_frechet", "prior_frechet_pca",
                "gpde_engine", "class_tv_start", "class_tv_final", "class_tv_mean",
                "digit_score_test", "digit_score_start", "digit_score_final", "digit_score_mean",
                "top_class_final", "top_class_frac_final", "confidence_outside_top_final",
                "prior_class_tv", "prior_digit_score"]


def _plain(value):
    """Python scalars for JSON / CSV (float repr is exact and stable)."""
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


#: The settings ``--resume`` may change (``--set FIELD=VALUE``): schedules and step
#: sizes, never a shape, a seed or what the run writes, so the checkpoint's state
#: still fits (and ``tensorboard``, which only adds event files). Lowering a learning
#: rate is what helps after a divergence.
RESUME_FIELDS = ("pretrain_lr", "pretrain_warmup", "pretrain_lr_decay", "pretrain_lr_decay_every",
                 "lr_gen", "lr_guide", "chain_warmup", "chain_lr_decay", "chain_lr_decay_every",
                 "pretrain_l2", "chain_l2", "max_norm", "checkpoint_every", "tensorboard")

#: The branches a run trains (``train_<branch>.csv``); ``vgsn.run.train`` names them so.
BRANCHES = ("pretrain", "guided", "vae")


def is_metrics_file(name):
    """True for the metrics files a run writes (and so owns): ``metrics.jsonl``,
    ``eval.csv``, ``train_<branch>.csv``. Nothing else in the folder is touched."""
    return (name in ("metrics.jsonl", "eval.csv")
            or (name.startswith("train_") and name.endswith(".csv") and name[6:-4] in BRANCHES))


class Metrics:
    """Append-only metrics files of a run folder, resumable by truncation.

    Every row goes to ``metrics.jsonl`` and to one CSV (``train_<branch>.csv`` or
    ``eval.csv``), each written and closed at once so a kill loses nothing
    written before. ``sizes()`` records the files' byte sizes (stored in a
    checkpoint); ``truncate(sizes)`` cuts them back on resume, then reads the rows.
    Only the files of :func:`is_metrics_file` are ever written, cut or removed.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.rows = []
        self.sinks = []      # callables given every row written (``--tensorboard``)

    def files(self):
        """The run's metrics files present in the folder."""
        return sorted(p.name for p in self.folder.iterdir()
                      if p.is_file() and is_metrics_file(p.name))

    def sizes(self):
        return {name: (self.folder / name).stat().st_size for name in self.files()}

    def digests(self):
        """sha256 of each metrics file as it is now (a checkpoint records them beside
        the sizes, so a resume knows the files are this run's)."""
        return {name: hashlib.sha256((self.folder / name).read_bytes()).hexdigest()
                for name in self.files()}

    def truncate(self, sizes):
        """Put the metrics files back to ``sizes`` (a checkpoint's), then read them.

        Checks every file before changing any: a file the checkpoint recorded that
        is gone or shorter refuses (``TrainingError``, one line) with nothing
        changed. A torn last line (a crash or a full disk mid-write) is cut with
        the rest of what came after the checkpoint. The run's metrics files the
        checkpoint does not list were written after it and are removed.
        """
        sizes = {k: int(v) for k, v in sizes.items() if is_metrics_file(k)}
        for name, size in sorted(sizes.items()):
            path = self.folder / name
            if not path.is_file():
                raise TrainingError(f"cannot resume: {path} is gone (the checkpoint recorded "
                                    f"{size:,} bytes of it); put it back, or start the run "
                                    f"again in a new folder")
            if path.stat().st_size < size:
                raise TrainingError(f"cannot resume: {path} has {path.stat().st_size:,} bytes, "
                                    f"fewer than the {size:,} the checkpoint recorded; put the "
                                    f"whole file back, or start the run again in a new folder")
        for name in self.files():
            path = self.folder / name
            if name not in sizes:
                path.unlink()
            elif path.stat().st_size != sizes[name]:
                os.truncate(path, sizes[name])
        self.load()

    def load(self):
        """Read ``metrics.jsonl``'s rows (after :meth:`truncate`)."""
        self.rows = []
        path = self.folder / "metrics.jsonl"
        if not path.exists():
            return self
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    self.rows.append(json.loads(line))
                except ValueError:
                    raise TrainingError(f"{path}: line {i} is not a JSON row (the file was "
                                        f"changed by hand?)") from None
        return self

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
        for sink in self.sinks:
            sink(row)

    def select(self, *kinds):
        return [r for r in self.rows if r["kind"] in kinds]


_SNAPSHOT_KINDS = ("scatter", "samples", "chains", "chainscores")


def rewind(out, metrics, sizes, update):
    """Put the run folder back as it was at the checkpoint of ``update``: the
    metrics files cut to ``sizes``, the run's later snapshot arrays and any
    checkpoint write a crash cut short removed. Files the run did not write (their
    names are not the run's) are never touched."""
    out = Path(out)
    metrics.truncate(sizes)
    for p in (out / "evals").glob("*_u*.npz"):
        kind, _, rest = p.stem.partition("_")
        branch, _, u = rest.rpartition("_u")
        if kind in _SNAPSHOT_KINDS and branch in BRANCHES and u.isdigit() and int(u) > update:
            p.unlink()
    for p in out.glob(".*.h5.tmp-*"):
        p.unlink()


# ---------------------------------------------------------------------------
# the log and the progress display
# ---------------------------------------------------------------------------

class RunLog:
    """``log.txt`` of a run folder; ``say`` also writes to stderr unless ``quiet``
    (through the progress bar while one is drawn)."""

    def __init__(self, out, quiet=False):
        self.path = Path(out) / "log.txt"
        self.quiet = quiet
        self.bar = None

    def say(self, message):
        """One line to log.txt (with the time) and, unless quiet, to stderr."""
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a") as f:
            f.write(f"{stamp}  {message}\n")
        if not self.quiet:
            if self.bar is not None and not self.bar.disable:
                self.bar.write(message, file=sys.stderr)
            else:
                print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# the folder itself, timing, the report
# ---------------------------------------------------------------------------

def check_out(out):
    """Create the run folder and prove it writable; ``TrainingError`` otherwise.
    Returns True when this call created it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out}: exists and is not a folder")
    if (out / "checkpoint.h5").exists():
        raise TrainingError(f"--out {out}: already holds a run; continue it with --resume {out} "
                            f"or choose another folder")
    if (out / "metrics.jsonl").exists():
        raise TrainingError(f"--out {out}: holds a run stopped before its first checkpoint "
                            f"(nothing to resume from); choose another folder, or delete it")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return created


def finished_update(run_dir):
    """The last update of a finished run in ``run_dir`` (its ``config.json``'s total,
    a final evaluation row there in ``metrics.jsonl`` and ``report.md`` written), else
    None. Reads only; a folder it cannot read is not finished."""
    run_dir = Path(run_dir)
    try:
        stored = json.loads((run_dir / "config.json").read_text())
        total = int(stored["pretrain_updates"]) + int(stored["chain_updates"])
        if not (run_dir / "report.md").is_file():
            return None
        with open(run_dir / "metrics.jsonl") as f:
            for line in f:
                if '"final"' in line:
                    row = json.loads(line)
                    if row.get("kind") == "final" and int(row.get("update", -1)) == total:
                        return total
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


def extended(config, updates, done):
    """``config`` lengthened to ``updates`` in all (``--resume DIR --updates N``): the
    chain phase grows (pre-training, when the run has no chain phase); one-line
    ``TrainingError`` when ``updates`` is fewer than the run's own."""
    total = config.total_updates
    if updates < total:
        raise TrainingError(f"--updates {updates:,}: the run has {total:,} updates (done "
                            f"{done:,}); --resume --updates only extends a run")
    if updates > MAX_UPDATES:
        raise TrainingError(f"--updates must be at most {MAX_UPDATES:,}, got {updates:,}")
    if int(config.chain_updates) > 0:
        return replace(config, chain_updates=updates - int(config.pretrain_updates))
    return replace(config, pretrain_updates=updates)


def write_timing(out, timing):
    with open(Path(out) / "timing.json", "w") as f:
        json.dump(timing, f, indent=1)


# The report lives in vgsn.run.report (it grew with the evaluation protocols and the chain
# scores); the name stays importable from here.
from vgsn.run.report import write_report  # noqa: E402


# ---- resume: what the checkpoint must hold before anything in the folder changes ----

def open_checkpoint(path, what):
    try:
        return load_run_checkpoint(path)
    except CheckpointError as exc:
        raise TrainingError(f"{what}{exc}") from None


def resume_config(meta, overrides, where):
    """The checkpoint's config with the ``overrides`` a resume may apply
    (``runfiles.RESUME_FIELDS``); one-line ``TrainingError`` otherwise."""
    try:
        config = P.Preset.from_dict(meta["config"]).validate()
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"cannot resume: {where}: the stored settings do not load "
                            f"({exc})") from None
    overrides = dict(overrides or {})
    fixed = sorted(set(overrides) - set(RESUME_FIELDS))
    if fixed:
        raise TrainingError(f"cannot resume with --set {', '.join(fixed)}: it changes the "
                            f"trained state or the run's files; on resume only "
                            f"{', '.join(RESUME_FIELDS)} may change")
    try:
        return apply_overrides(config, overrides).validate(), config
    except ValueError as exc:
        raise TrainingError(f"cannot resume: {exc}") from None


def check_metrics(run_dir, meta, ckpt):
    """Everything :func:`rewind` will do to the metrics files, checked before it does
    any of it: the checkpoint names only the run's metrics files, each is there, at
    least as long as recorded, and its first bytes are the ones the checkpoint saw
    (their sha256, recorded since checkpoints carry ``metrics_digests``; for older ones
    the cut falls at a line's end and ``metrics.jsonl`` up to it holds rows up to the
    checkpoint's update). A checkpoint of another run copied into the folder, or a
    metrics file edited, is refused in one line with nothing changed."""
    sizes, digests = meta.get("metrics_sizes"), meta.get("metrics_digests") or {}
    bad = ([k for k, v in sizes.items() if not is_metrics_file(k) or not isinstance(v, int)
            or v < 0] if isinstance(sizes, dict) else [sizes])
    if bad or not isinstance(digests, dict):
        what = bad[0] if bad else digests
        raise TrainingError(f"cannot resume: {ckpt}: its metadata lists {what} among the run's "
                            f"metrics files (damaged or edited); resume from the run's own "
                            f"checkpoint, or start the run again in a new folder")
    for name, size in sorted(sizes.items()):
        path = Path(run_dir) / name
        if not path.is_file():
            raise TrainingError(f"cannot resume: {path} is gone (the checkpoint recorded "
                                f"{size:,} bytes of it); put it back, or start the run "
                                f"again in a new folder")
        with open(path, "rb") as f:
            head = f.read(size)
        if len(head) < size:
            raise TrainingError(f"cannot resume: {path} has {path.stat().st_size:,} bytes, "
                                f"fewer than the {size:,} the checkpoint recorded; put the "
                                f"whole file back, or start the run again in a new folder")
        if name in digests:
            same = hashlib.sha256(head).hexdigest() == digests[name]
        else:
            same = size == 0 or head.endswith(b"\n")
            if same and name == "metrics.jsonl":
                try:
                    last = max((json.loads(line).get("update", 0)
                                for line in head.decode().splitlines() if line.strip()),
                               default=0)
                    same = int(last) <= int(meta.get("update", 0))
                except (ValueError, TypeError, AttributeError):
                    same = False
        if not same:
            raise TrainingError(f"cannot resume: the first {size:,} bytes of {path} are not "
                                f"the ones {ckpt} recorded (a checkpoint of another run, or "
                                f"the file was edited); put the run's own {Path(ckpt).name} "
                                f"and {name} back, or start the run again in a new folder")


def check_pretrained(run_dir, config, meta):
    """``pretrained.h5`` (the model at the fork) must be there once the checkpoint
    is at or past the fork: it was written before that checkpoint."""
    fork = int(config.pretrain_updates)
    if not (fork > 0 and config.chain_updates > 0 and int(meta["update"]) >= fork):
        return
    path = run_dir / "pretrained.h5"
    try:
        _, pre = load_run_checkpoint(path)
    except CheckpointError as exc:
        raise TrainingError(f"cannot resume: {exc} (pretrained.h5 is the model at the fork, "
                            f"update {fork:,}; put the run's copy back, or start the run "
                            f"again in a new folder)") from None
    if int(pre.get("update", -1)) != fork:
        raise TrainingError(f"cannot resume: {path} holds update {pre.get('update')}, not the "
                            f"fork's {fork:,}; put the run's copy back, or start the run again")

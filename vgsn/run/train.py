"""Start a run, resume one, load a run's models.

``run(config, out)`` runs one experiment of ``vgsn.run.presets`` end to end in the
folder ``out``; ``resume(out)`` continues a stopped run exactly where its last
checkpoint left it; ``load_models(out)`` gives a run's trained models (and guide).
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

from vgsn import backend
from vgsn.run import presets as P
from vgsn.run import provenance
from vgsn.run.data import data_digest, load_data
from vgsn.data.datasets import resolve_data_dir
from vgsn.run.folder import (BadInput, TrainingError, WriteFailed, check_metrics, check_out,
                             check_pretrained, extended, open_checkpoint, resume_config)
from vgsn.run.checkpoints import CheckpointError
from vgsn.run.lock import folder_lock
from vgsn.run.loop import Run, guided_loop
from vgsn.model.vae import OneStageModel

__all__ = ["run", "resume", "load_models"]



def _argv(argv):
    """The command line to record: ``argv`` (the caller's, program first) or this
    process's."""
    return list(argv) if argv is not None else [*sys.argv]


def run(config, out, data_dir=None, quiet=False, hooks=None, argv=None):
    """Run the experiment ``config`` in the folder ``out``; returns the report's path.
    ``argv`` (program first; default ``sys.argv``) is recorded in ``provenance.json``
    with the code's version and the machine.

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
        with folder_lock(out, "--out"):
            # Again under the lock: another process may have begun a run here meanwhile.
            check_out(out)
            return _run(config, out, data_dir, quiet, hooks, argv)
    except TrainingError:
        if created:       # a folder this call made goes again if nothing was written
            try:
                out.rmdir()
            except OSError:
                pass
        raise


def _run(config, out, data_dir, quiet, hooks, argv=None):
    data, note = load_data(config, data_dir)
    empty = [part for part in ("train", "valid", "test") if not len(getattr(data, part))]
    if empty:   # found now, not after hours of training when the evaluation needs them
        raise TrainingError(f"{data.source}: no {' and no '.join(empty)} images in the "
                            f"{data.name} split this run would use; choose another fold "
                            f"or data file")
    config = replace(config, dataset=data.name, fallback_dataset=None)
    data_dir = None if data.name == "digits" else str(resolve_data_dir(data_dir))
    try:
        with open(out / "config.json", "w") as f:      # + the back-end (cli's --resume reads it)
            json.dump(run_config(config), f, indent=1)
        provenance.record(out, provenance.entry(
            _argv(argv), backend.describe(), provenance.changed_from_preset(config, P.PRESETS)))
        r = Run(config, out, data, note, data_dir, quiet, hooks)
        r.say(f"preset {config.name}: {config.pretrain_updates:,} pre-training + "
              f"{config.chain_updates:,} chain updates -> {out}")
        r.say(f"dataset: {note}; using {data.source}" if note else f"dataset: {data.source}")
    except OSError as exc:
        raise WriteFailed(f"--out {out}: cannot write {exc.filename or 'there'} "
                          f"({exc.strerror or exc}); nothing was trained") from None
    return r.train()


def run_config(config):
    """What ``config.json`` holds: the settings, the back-end (cli's ``--resume`` reads it)
    and its numerics (``backend.numerics()``: matmul precision, XLA flags)."""
    return {**config.to_dict(), "backend": backend.MODE, **backend.numerics()}


def resume(run_dir, quiet=False, hooks=None, overrides=None, argv=None, updates=None):
    """Continue the run in ``run_dir`` from its checkpoint, exactly as if it had
    never stopped; returns the report's path. A finished run is evaluated and
    reported again.

    Before anything in the folder changes it checks the checkpoint (checksum),
    the data (the same content digest as when the run began), ``pretrained.h5``
    once past the fork, and the metrics files the checkpoint recorded; each
    refusal is one line. ``overrides`` ({field: value}, only
    ``runfiles.RESUME_FIELDS``: learning-rate schedules, L2, clipping, checkpoint
    interval) change the run from here on: said in ``log.txt``, recorded in the
    checkpoint (``overrides``) and in its config. ``updates`` (``--updates N``) extends
    the run to N updates in all (the chain phase grows; ``folder.extended``), recorded
    the same way; a finished run so extended drops its final evaluation rows and goes on.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TrainingError(f"--resume {run_dir}: no such run folder")
    with folder_lock(run_dir, "--resume"):
        return _resume(run_dir, quiet, hooks, overrides, argv, updates)


def _resume(run_dir, quiet, hooks, overrides, argv=None, updates=None):
    ckpt = run_dir / "checkpoint.h5"
    if not ckpt.exists():
        if (run_dir / "metrics.jsonl").exists() or (run_dir / "config.json").exists():
            raise TrainingError(f"cannot resume {run_dir}: it stopped before its first "
                                f"checkpoint, so there is nothing to resume from; start the "
                                f"run again in a new folder")
        raise TrainingError(f"cannot resume {run_dir}: no checkpoint.h5 there (not a run "
                            f"folder?)")
    arrays, meta = open_checkpoint(ckpt, "cannot resume: ")
    config, before = resume_config(meta, overrides, ckpt)
    if updates is not None:
        config = extended(config, int(updates), int(meta["update"])).validate()
    try:            # the same route as the fresh run (its config names the data it used)
        data, _ = load_data(config, meta.get("data_dir"))
    except TrainingError as exc:
        raise TrainingError(f"cannot resume: {exc}") from None
    x_dim = arrays["model/q.h0.W"].shape[0] if "model/q.h0.W" in arrays else None
    if x_dim != data.n_pixels:
        raise BadInput(f"cannot resume: the model in {ckpt} has {x_dim} inputs, the dataset "
                       f"{data.source} {data.n_pixels} pixels; resume with the data the run "
                       f"was trained on ({meta.get('data_source') or 'config.json'}), or start "
                       f"a new run")
    recorded = meta.get("data_digest")
    if recorded is not None and recorded != data_digest(data):
        raise TrainingError(f"cannot resume: the data ({data.source}) are not the data this run "
                            f"was trained on (content digest {data_digest(data)[:12]}, the "
                            f"checkpoint's {recorded[:12]}); put the original files back, or "
                            f"start a new run")
    check_pretrained(run_dir, config, meta)
    check_metrics(run_dir, meta, ckpt)
    # Everything is checked: from here on the folder changes.
    try:
        r = Run(config, run_dir, data, meta.get("data_note"), meta.get("data_dir"), quiet, hooks,
                restoring=True)
        r._data_digest = recorded
        try:
            r.restore(arrays, meta)   # sets every array (all checked first), then rewinds
        except ValueError as exc:
            raise BadInput(f"cannot resume: {ckpt}: {exc}; the checkpoint's arrays do not fit "
                           f"the model its own settings build (edited, or not this run's); "
                           f"resume from the run's own checkpoint, or start the run again "
                           f"in a new folder") from None
        r.say(f"resuming {run_dir} at update {r.update:,} of {r.total:,}")
        was = (meta.get("numerics") or {}).get("matmul_precision", "highest")
        now = backend.numerics()["matmul_precision"]
        if was != now:
            r.say(f"note: trained so far with matmul precision {was}, resumed with {now}: "
                  f"from here on it differs from an uninterrupted run")
        if meta.get("backend", "c") != backend.MODE:
            r.say(f"note: trained so far on the {meta.get('backend', 'c')} back-end, resumed on "
                  f"{backend.MODE}: from here on it matches an uninterrupted run to float32 "
                  f"rounding, not bit for bit")
        changed = {k: v for k, v in (overrides or {}).items() if getattr(before, k) != v}
        longer = {k: getattr(config, k) for k in ("pretrain_updates", "chain_updates")
                  if getattr(config, k) != getattr(before, k)}
        provenance.record(run_dir, provenance.entry(
            _argv(argv), backend.describe(), {k: f"{getattr(before, k)!r} -> {v!r}"
                                              for k, v in {**changed, **longer}.items()},
            update=r.update, what="resume"))
        for k, v in changed.items():
            r.overrides.append({"update": r.update, "field": k, "old": getattr(before, k),
                                "new": v})
            r.say(f"update {r.update:,}: --set {k}={v} on resume (was {getattr(before, k)}); "
                  f"from here on this run differs from an uninterrupted one")
        for k, v in longer.items():
            r.overrides.append({"update": r.update, "field": k, "old": getattr(before, k),
                                "new": v})
            r.say(f"update {r.update:,}: extended to {config.total_updates:,} updates "
                  f"(--updates {config.total_updates}: {k} {getattr(before, k):,} -> {v:,})")
        changed.update(longer)
        if changed:   # the override survives another stop: it is in the checkpoint now
            with open(run_dir / "config.json", "w") as f:
                json.dump(run_config(config), f, indent=1)
            r.checkpoint()
    except OSError as exc:
        raise WriteFailed(f"cannot resume {run_dir}: cannot write {exc.filename or 'there'} "
                          f"({exc.strerror or exc})") from None
    return r.train()


def load_models(path):
    """The models of a run (folder or checkpoint file), ready to sample or evaluate.

    Each is built as the checkpoint holds it: ``pretrained.h5`` (and any checkpoint
    before the fork) with pre-training's arguments (``presets.model_args``: the TFD
    script's Bernoulli model under ``--code2015``), the guided chain's model after the
    fork with ``chain_model_args``, the ``vae`` branch with ``vae_branch_model_args``.

    Returns
    -------
    dict
        ``'model'``: the pre-trained model (after the fork: the guided chain's q and
        p), a ``OneStageModel``; ``'vae'``: the 1-step VAE branch when there is one;
        after the fork ``'loop'``: the ``VCGLoop`` around ``'model'`` with its trained
        guide (``loop.guide``; ``loop.guide_output(X)`` scores images).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.h5"
    arrays, meta = open_checkpoint(path, "")
    c = P.Preset.from_dict(meta["config"])
    # ``forked``: the loop existed when it was written (pretrained.h5 is written just
    # before the fork, so it holds pre-training's model).
    built = {"model": P.chain_model_args(c) if meta.get("forked") else P.model_args(c),
             "vae": P.vae_branch_model_args(c)}
    models = {}
    for prefix, args in built.items():
        mine = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
        if not mine:
            continue
        try:
            m = OneStageModel(mine["q.h0.W"].shape[0], **args,
                              init_weights=False)   # filled next
            m.set_state(mine)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: {prefix}/{exc.args[0] if exc.args else exc}: the "
                                  f"checkpoint's arrays do not fit the model its own settings "
                                  f"build (edited, or not a run's?)") from None
        models[prefix] = m
    mine = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("loop/")}
    if mine and "model" in models:
        loop = guided_loop(c, models["model"], init_weights=False)   # filled next
        try:
            loop.set_state(mine, strict=False)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: loop/{exc.args[0] if exc.args else exc}: the "
                                  f"checkpoint's arrays do not fit the guided chain its own "
                                  f"settings build") from None
        models["loop"] = loop
    return models

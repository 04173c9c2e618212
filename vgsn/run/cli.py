"""The command line of ``run_mnist.py`` and ``run_tfd.py``.

``build_parser(script)`` is the argparse parser, ``config_from_args`` turns its
answer into a validated preset, and ``cli_main`` runs or resumes. Parsing needs
only the plain-data modules (``vgsn.run.presets``, ``vgsn.run.folder``): ``--help`` and
argument errors answer without importing the symbolic library, which
``cli_main`` imports (through ``vgsn.run.train``) once the arguments are good.

Following one setting from the command line to the graph: ``--lam-kl 4`` is
``args.lam_kl``; :func:`config_from_args` writes it into the preset's field
``lam_kl`` (``vgsn.run.config.apply_overrides``); ``loop.Run.set_schedules`` reads it
through ``schedules.kl_weight_at`` into ``model.hyper`` (``lam_kl``), the shared scalar
the model's graphs use (``OneStageModel.vae_cost``, ``VCGLoop``'s step costs).
"""
import argparse
import importlib.util
import json
import math
import shlex
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path

from vgsn.run import presets as P
from vgsn.run import settings as S
from vgsn.run.config import apply_overrides, dump_settings, parse_value, read_settings
from vgsn.run.folder import (RESUME_FIELDS, Interrupted, TrainingError, check_out,
                             finished_update)
from vgsn.run.lock import probe

__all__ = ["SCRIPT_DATASETS", "build_parser", "config_from_args", "cli_main"]

SCRIPT_DATASETS = {"mnist": ("mnist", "digits"), "tfd": ("tfd", "olivetti", "frey")}
BACKENDS = ("c", "jax", "numba")
# --matmul-precision -> jax's name (vgsn.backend.MATMUL_PRECISIONS, repeated here so that
# parsing the arguments imports no symbolic library).
MATMUL_PRECISION_NAMES = {"highest": "highest", "tf32": "tensorfloat32"}
MATMUL_PRECISIONS = tuple(MATMUL_PRECISION_NAMES)

# CLI option (argparse dest) -> preset field, for the options that change a setting;
# --updates splits between two fields (config_from_args).
_FLAG_FIELDS = {"updates": None, "pretrain_updates": "pretrain_updates",
                "chain_updates": "chain_updates", "dataset": "dataset", "seed": "seed",
                "momentum": "momentum", "step_decay": "step_decay", "lam_kl": "lam_kl",
                "gamma_kl": "gamma_kl", "eval_every": "eval_every",
                "checkpoint_every": "checkpoint_every", "gpde_protocol": "gpde_protocol",
                "fold": "tfd_fold"}


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
               f"options are set with --set FIELD=VALUE (see vgsn/run/settings.py). Precedence: "
               f"preset < --config FILE < flags < --set; a flag and a --set of the same field "
               f"are refused. A run stopped "
               f"after its first checkpoint continues exactly with --resume RUN_DIR (with "
               f"--set, only the schedule: {', '.join(RESUME_FIELDS)}); --resume RUN_DIR "
               f"--updates N extends a run to N updates. SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 "
               f"save a checkpoint at the next update boundary, then stop. Exit status: 0 "
               f"done, 1 the run failed (one line says why and what to do), 2 bad arguments, "
               f"130 interrupted (Ctrl-C), 143 / 138 stopped by SIGTERM / SIGUSR1.")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--preset", choices=names, metavar="NAME",
                      help=f"the experiment to run (one of: {', '.join(names)})")
    what.add_argument("--quick", action="store_true",
                      help=f"the small demo of the whole pipeline (--preset {quick}), minutes "
                           f"on a CPU")
    what.add_argument("--resume", metavar="RUN_DIR",
                      help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--config", metavar="FILE",
                        help="settings from a YAML file (FIELD: VALUE per line, any subset of "
                             "the fields; --print-config writes one); without --preset its "
                             "'name' picks the preset it starts from")
    parser.add_argument("--print-config", action="store_true",
                        help="print every setting of what would run (YAML, read back by "
                             "--config) and exit; trains nothing")
    parser.add_argument("--updates", type=_count, metavar="N",
                        help="total updates, split between pre-training and the chain phase in "
                             "the preset's proportion (schedules unchanged); with --resume: "
                             "extend the run to N updates (the chain phase grows)")
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
                             "(momentum 0.5, step-cost decay, L2 on all, no squared KL in the "
                             "chain, the guide penalty's code form, ...; TFD: the script's nets "
                             "z 50 / 2x1500, Bernoulli pre-training then a Gaussian chain, batch "
                             "400 x 6 then 400 x 5, pre-training momentum 0.5 then 0.9 from 50k "
                             "(x min(1, u/5000)), chain momentum 0.9, KL weight from 0, 5 "
                             "steps, 100k + 100k updates, a 25x25 patch; the published TFD script "
                             "stops on its first update (lam_kld_c): vgsn runs what it would "
                             "have run; see vgsn/presets.py code2015)")
    parser.add_argument("--gpde-protocol", choices=S.GPDE_HEADLINES,
                        help="which GPDE the report headlines (both are always computed): "
                             "vgsn's (sigma chosen on validation rows) or the paper-era "
                             "script's (sigma chosen on the scored rows); default both")
    parser.add_argument("--distinct-rows", action="store_true",
                        help="draw minibatch rows without repeats (default: with replacement, "
                             "as the 2015 code: about 9%% of 100-row MNIST batches repeat a row)")
    if script == "tfd":
        parser.add_argument("--fold", choices=S.TFD_FOLD_NAMES, metavar="K",
                            help="TFD fold: all (the 2015 code; its test images are training "
                                 "images of other folds) or 0..4, the held-out protocol: run "
                                 "all five and report the mean (vgsn.eval.bound.fold_summary)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any preset field, e.g. --set q_hidden=500,500 (repeatable)")
    parser.add_argument("--backend", choices=BACKENDS, type=str.lower,
                        help="where the graphs run: c (Aesara / PyTensor's C ops), jax (XLA: "
                             "CPU, or a GPU with pip install -e .[gpu]) or numba; default: "
                             "$VGSN_MODE, else the library's default (see README, Set-up); "
                             "--resume keeps the run's own unless given")
    parser.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, type=str.lower,
                        help="JAX mode: highest (full float32 products, the default) or tf32 "
                             "(faster on Ampere/Hopper GPUs, 10-bit mantissa: results drift "
                             "from the C mode's); the C and Numba modes always compute full "
                             "float32; --resume keeps the run's own unless given")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write every metric and figure as TensorBoard events into "
                             "the run folder as it goes (tensorboard --logdir runs/; needs "
                             "pip install -e .[tensorboard])")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    return parser


# preset field -> the flag that sets it (for the one-line refusal of a flag and a
# --set of the same field)
_FIELD_FLAGS = {field: "--" + ("fold" if flag == "fold" else flag.replace("_", "-"))
                for flag, field in _FLAG_FIELDS.items() if field is not None}
_FIELD_FLAGS.update({"figures": "--no-figures", "distinct_rows": "--distinct-rows",
                     "tensorboard": "--tensorboard"})


def _set_values(args, parser):
    """{field: typed value} of the ``--set FIELD=VALUE`` options (parser.error on a
    bad one)."""
    changes = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            parser.error(f"--set needs FIELD=VALUE, got {item!r}")
        try:
            changes[key] = parse_value(key, value)
        except ValueError as exc:
            parser.error(f"--set {item}: {exc}")
    return changes


def config_from_args(args, parser, script):
    """The preset named by ``args`` with every override applied (parser.error on
    a bad value)."""
    from_file = {}
    if args.config is not None:
        try:
            from_file = read_settings(args.config)
        except ValueError as exc:
            parser.error(str(exc))
    name = P.quick_for(script) if args.quick else args.preset
    if name is None and from_file.get("name") in P.PRESETS:
        name = from_file["name"]
    config = P.get_preset(name) if name is not None else P.Preset()
    if args.code2015:
        config = P.code2015(config)
    try:
        config = apply_overrides(config, from_file)
    except ValueError as exc:
        parser.error(f"--config {args.config}: {exc}")
    given = vars(args)
    changes = {field: given[flag] for flag, field in _FLAG_FIELDS.items()
               if field is not None and given.get(flag) is not None}   # --fold: run_tfd.py only
    if getattr(args, "distinct_rows", False):
        changes["distinct_rows"] = True
    if args.no_figures:
        changes["figures"] = False
    if args.tensorboard:
        changes["tensorboard"] = True
    sets = _set_values(args, parser)
    both = [k for k in sets if k in changes]
    if both:
        k = both[0]
        flag = _FIELD_FLAGS[k]
        shown = flag if flag in ("--no-figures", "--distinct-rows", "--tensorboard") \
            else f"{flag} {changes[k]}"
        parser.error(f"{shown} and --set {k}={sets[k]} both set {k}; give one of them")
    if args.dataset is not None:     # named: used or refused, never replaced by a stand-in
        changes["fallback_dataset"] = None
    changes.update(sets)
    if args.updates is not None:
        if args.updates > S.MAX_UPDATES:
            parser.error(f"--updates must be at most {S.MAX_UPDATES:,}, got {args.updates}")
        total = config.total_updates
        # Integer arithmetic (round half up): a float would mangle large counts.
        pre = ((2 * args.updates * int(config.pretrain_updates) + total) // (2 * total)
               if total else args.updates)
        changes.setdefault("pretrain_updates", pre)
        changes.setdefault("chain_updates", args.updates - changes["pretrain_updates"])
    try:
        return apply_overrides(config, changes).validate()
    except ValueError as exc:
        parser.error(str(exc))


def _show_blas_warning(backend):
    """The backend's one-line BLAS warning (if any) as a ``warnings`` warning,
    shown once per process by the default filter."""
    check = getattr(backend, "blas_warning", None)
    message = check() if check is not None else None
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=1)


def _recorded(run_dir, key):
    """``config.json``'s ``key`` in the run folder ``run_dir``, or None."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None                 # resume() says what is wrong with the folder


def _recorded_backend(run_dir):
    """The back-end a run was started on (``config.json``'s ``backend``), or None."""
    mode = _recorded(run_dir, "backend")
    return mode if mode in BACKENDS else None


def _header(script, argv):
    """The comment lines above ``--print-config``'s settings."""
    shown = shlex.join(a for a in argv if a != "--print-config")
    return (f"run_{script}.py {shown}".rstrip() + ": every setting (preset < --config < "
            f"flags < --set)", f"run it with: run_{script}.py --config THIS_FILE")


def _resumed_settings(run_dir, overrides, parser):
    """``--resume DIR --print-config``: the run's settings (its ``config.json``) with
    the schedule changes of ``--set``."""
    path = Path(run_dir) / "config.json"
    try:
        stored = json.loads(path.read_text())
        stored = {k: v for k, v in stored.items() if k in S.FIELD_TYPES or k in S.RENAMED}
        config = apply_overrides(S.Preset.from_dict(stored), overrides or {}).validate()
    except FileNotFoundError:
        parser.error(f"--resume {run_dir}: no config.json there (not a run folder?)")
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        parser.error(f"--resume {run_dir}: {path.name} does not load ({exc})")
    return dump_settings(config, (f"the settings of the run in {run_dir}",))


def _recorded_precision(run_dir):
    """The ``--matmul-precision`` a run was started with (from ``config.json``'s jax
    name), or None."""
    names = {jax_name: name for name, jax_name in MATMUL_PRECISION_NAMES.items()}
    return names.get(_recorded(run_dir, "matmul_precision"))


def _recorded_total(run_dir):
    """The updates of the run in ``run_dir`` (``config.json``), or None."""
    try:
        c = json.loads((Path(run_dir) / "config.json").read_text())
        return int(c["pretrain_updates"]) + int(c["chain_updates"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def cli_main(argv, script, hooks=None):
    """``run_<script>.py``: parse ``argv``, run or resume; returns the exit status
    (0 done, 1 the run failed or diverged, 2 bad arguments, 130 interrupted).
    ``hooks`` goes to ``vgsn.run.train.run`` / ``resume`` (tests only)."""
    parser = build_parser(script)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    prog = parser.prog
    # the command to record: the script as it was called (this process's argv[0] when it
    # is the script), then the arguments exactly
    called = sys.argv[0] if Path(sys.argv[0] or "").name == f"run_{script}.py" else prog
    command = [called, *argv]
    overrides = None
    if args.resume is not None:
        given = [f"--{k.replace('_', '-')}" for k in list(_FLAG_FIELDS) + ["data_dir", "out",
                                                                            "config"]
                 if k != "updates" and vars(args).get(k) is not None]
        given += [f for f, on in (("--code2015", args.code2015),
                                  ("--no-figures", args.no_figures),
                                  ("--distinct-rows", args.distinct_rows)) if on]
        if given:
            parser.error(f"--resume continues a run with its own settings; drop {', '.join(given)}"
                         f" (only --updates N and --set {'/'.join(RESUME_FIELDS[:2])}/... of the "
                         f"schedule may change)")
        overrides = _set_values(args, parser)
        if args.tensorboard:
            overrides["tensorboard"] = True
        fixed = [k for k in overrides if k not in RESUME_FIELDS]
        if fixed:
            parser.error(f"--resume keeps the run's state, so --set {fixed[0]} cannot change; "
                         f"on resume --set takes only {', '.join(RESUME_FIELDS)}")
        try:
            probe(args.resume, "--resume")
        except TrainingError as exc:
            parser.error(str(exc))
        if args.print_config:
            print(_resumed_settings(args.resume, overrides, parser), end="")
            return 0
        total = _recorded_total(args.resume)
        if args.updates is not None and total is not None and args.updates < total:
            parser.error(f"--updates {args.updates}: the run in {args.resume} has {total:,} "
                         f"updates; with --resume, --updates only extends a run")
        done = finished_update(args.resume)
        if done is not None and (args.updates is None or args.updates == done):
            print(f"{prog}: {args.resume} finished at update {done:,} (its report.md is "
                  f"written); nothing to do. For more updates: --resume {args.resume} "
                  f"--updates N", file=sys.stderr)
            return 0
    elif args.preset is None and not args.quick and args.config is None:
        parser.error("choose an experiment: --preset NAME (listed by --help), --quick, "
                     "--config FILE or --resume RUN_DIR")
    else:
        config = config_from_args(args, parser, script)
        if args.print_config:
            print(dump_settings(config, _header(script, argv)), end="")
            return 0
        if config.tensorboard and importlib.util.find_spec("tensorboardX") is None:
            parser.error("--tensorboard needs tensorboardX: pip install -e .[tensorboard] (or "
                         "pip install tensorboardX)")
        out = Path(args.out or Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}")
        try:
            if check_out(out):   # run() creates it again; nothing is left behind on errors
                out.rmdir()
            probe(out, "--out")
        except TrainingError as exc:
            parser.error(str(exc))
        except OSError:
            pass                 # another process put a file there: run() takes the lock
    data_dir = args.data_dir or (os.environ.get("VGSN_DATA") if args.resume is None else None)
    if data_dir and Path(data_dir).expanduser().exists() \
            and not Path(data_dir).expanduser().is_dir():
        parser.error(f"{'--data-dir' if args.data_dir else 'VGSN_DATA='}{' ' if args.data_dir else ''}"
                     f"{data_dir}: is a file, not a folder; give the folder that holds the "
                     f"data files")
    mode = args.backend or (_recorded_backend(args.resume) if args.resume is not None else None)
    where = (f"--backend {mode}" if args.backend else
             f"{Path(args.resume) / 'config.json'} says backend {mode}" if mode else None)
    if mode is not None:
        loaded = sys.modules.get("vgsn.backend")
        if loaded is not None and loaded.MODE != mode:
            parser.error(f"--backend {mode}: this process already runs vgsn in mode "
                         f"{loaded.MODE} (the mode is chosen once, at import)")
        os.environ["VGSN_MODE"] = mode      # read once, when vgsn.backend is imported
    precision = args.matmul_precision or (_recorded_precision(args.resume)
                                          if args.resume is not None else None)
    if precision is not None:
        os.environ["VGSN_MATMUL_PRECISION"] = precision   # read when the JAX mode starts
    try:
        # The arguments are good: now the symbolic library (seconds to import).
        from vgsn import backend
    except (ImportError, ValueError) as exc:   # a mode this install cannot run (one line)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if where:
            reason = message.split(" Fix: ")[0].removeprefix(f"VGSN_MODE={mode.upper()} ")
            fix = ("run it on Python >= 3.12 (PyTensor), or use --backend c" if args.backend
                   else f"--resume {args.resume} --backend c continues it on C")
            message = f"{where}, which this install cannot run: it {reason}. Fix: {fix}"
        parser.error(message)
    try:
        from vgsn.run import train
        _show_blas_warning(backend)
        if precision is not None:      # the JAX mode may have started before this run
            backend.set_matmul_precision(precision)
        if args.resume is not None:
            report = train.resume(args.resume, quiet=args.quiet, hooks=hooks,
                                  overrides=overrides, argv=command, updates=args.updates)
        else:
            report = train.run(config, out, data_dir=args.data_dir, quiet=args.quiet, hooks=hooks,
                               argv=command)
    except Interrupted as exc:     # Ctrl-C: 130; a signal that saved first: 128 + its number
        print(f"{prog}: {exc}", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    except TrainingError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return getattr(exc, "status", 1)     # 2: refused before anything was done
    except KeyboardInterrupt:   # before training started: nothing to resume from
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    if args.quiet:
        print(report)
    return 0

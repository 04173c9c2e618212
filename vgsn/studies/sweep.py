"""Many runs: a preset x a grid x seeds, locally or on Slurm (submitit), one report.

    python -m vgsn.sweep --preset mnist2-ork --grid lam_kl=1,4,24 --seeds 1-3 --out sweeps/kl \\
        --executor slurm --partition cpu --time 2-00:00:00 --cpus 8
    python -m vgsn.sweep --resume sweeps/kl          # only the points that have not finished
    python -m vgsn.sweep --report sweeps/kl          # sweep_report.md / sweep.csv from what is done

Every point of the grid and every seed is one ordinary run of ``run_mnist.py`` /
``run_tfd.py`` in its own folder under the sweep folder; its ``command.txt`` holds
the command that reproduces it by hand (run from the repository root), and the job
runs exactly that command. ``sweep.json`` records the whole sweep. A grid over
TFD's held-out folds (``--grid tfd_fold=0,1,2,3,4``) is the per-fold protocol: the
report adds each setting's mean over the folds (``vgsn.studies.sweepreport.fold_means``,
``vgsn.eval.bound.fold_summary``).

Executors: ``local`` (subprocesses, ``--jobs`` at a time; needs nothing extra),
``slurm`` (one job array through submitit; a job preempted or past its time limit
is requeued and continues from its checkpoint), ``submitit-local`` and
``submitit-debug`` (submitit's LocalExecutor / DebugExecutor: the Slurm code path
without a cluster). submitit is the optional extra ``pip install -e .[sweep]``.

Compile caches (``--compile-cache``): ``shared`` uses the user's cache and, with
more than one job at a time, runs the first point alone so its compiled modules
are on disk before the others start (Aesara/PyTensor hold one lock per cache
while compiling); ``per-job`` gives each job ``base_compiledir=<sweep>/.compile/<point>``
(added to ``AESARA_FLAGS`` / ``PYTENSOR_FLAGS`` unless the user set a compile
folder there): every job compiles cold, with no lock shared between nodes.
The README's "Studies on a cluster" has the measurements behind the defaults
(shared for local runs, per-job for Slurm).
"""
import argparse
import itertools
import json
import os
import re
import shlex
import shutil
import sys
from datetime import datetime
from pathlib import Path

from vgsn.run import presets as P
from vgsn.run import config
from vgsn.studies import executors as X
from vgsn.studies.executors import SweepError
from vgsn.studies.sweepreport import canonical_text, load_spec, point_status, write_report

__all__ = ["SweepError", "parse_grid", "plan", "main"]

ROOT = Path(__file__).resolve().parents[2]  # where run_mnist.py / run_tfd.py live
EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")


# ---------------------------------------------------------------------------
# the plan: grid, points, commands
# ---------------------------------------------------------------------------

def _split_setting(item, flag):
    key, sep, value = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise SweepError(f"{flag} needs FIELD=VALUE, got {item!r}")
    return key, value


def parse_grid(preset_name, grid_items=(), set_items=(), file_settings=None):
    """Check a grid against the preset; returns (grid, fixed) as canonical texts.

    Parameters
    ----------
    preset_name : str
    grid_items : sequence of 'FIELD=V1,V2,...'
        Values are comma-separated, or semicolon-separated when a value itself
        holds commas (``hidden=32,32;64,64``).
    set_items : sequence of 'FIELD=VALUE'
        Settings shared by every point (``figures=false``).
    file_settings : dict field -> typed value, optional
        A ``--config`` file's settings (``config.read_settings``): those that differ
        from the preset join ``fixed``; ``--set`` and ``--grid`` take precedence.

    Returns
    -------
    grid : dict field -> list of str
    fixed : dict field -> str

    Raises
    ------
    SweepError
        One line naming the unknown preset or field, or the bad value; every
        point's whole config is validated (``Preset.validate``).
    """
    try:
        base = P.get_preset(preset_name)
    except KeyError as exc:
        raise SweepError(str(exc.args[0])) from None
    fixed, grid = {}, {}
    grid_keys = {_split_setting(i, "--grid")[0] for i in grid_items}
    for key, value in (file_settings or {}).items():
        if key not in grid_keys and key != "seed" and getattr(base, key) != value:
            fixed[key] = canonical_text(value)
    from_file = set(fixed)
    try:
        for item in set_items:
            key, value = _split_setting(item, "--set")
            fixed[key] = canonical_text(config.parse_value(key, value))
        for item in grid_items:
            key, value = _split_setting(item, "--grid")
            if key == "seed":
                raise SweepError("--grid seed=...: give seeds with --seeds (1 2 3 or 1-3)")
            if key in grid or (key in fixed and key not in from_file):
                raise SweepError(f"--grid {key}: given twice (or also in --set)")
            parts = [v.strip() for v in value.split(";" if ";" in value else ",")]
            if not all(parts):
                raise SweepError(f"--grid {item}: an empty value")
            texts = [canonical_text(config.parse_value(key, v)) for v in parts]
            if len(set(texts)) != len(texts):
                raise SweepError(f"--grid {item}: a value is repeated")
            grid[key] = texts
        for combo in itertools.product(*grid.values()):
            settings = dict(fixed, **dict(zip(grid, combo)))
            _config(base, settings).validate()
    except SweepError:
        raise
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    return grid, fixed


def _config(base, settings, seed=None):
    changes = {k: config.parse_value(k, v) for k, v in settings.items()}
    if seed is not None:
        changes["seed"] = int(seed)
    return config.apply_overrides(base, changes)


def script_for(preset_name):
    """'tfd' for the presets run_tfd.py offers, else 'mnist'."""
    return "tfd" if preset_name in P.SCRIPT_PRESETS["tfd"] else "mnist"


def _slug(settings, seed, index):
    words = "_".join(f"{k}-{v}" for k, v in settings.items())
    words = re.sub(r"[^A-Za-z0-9.=-]+", "_", words.replace("=", "-"))[:80].strip("_")
    return f"{index:03d}_{words + '_' if words else ''}seed-{seed}"


def fresh_argv(spec, point, sweep_dir):
    """The run script's argv (script path relative to the repository root)."""
    argv = [f"run_{spec['script']}.py", "--preset", spec["preset"], "--seed", str(point["seed"])]
    for k, v in dict(spec["fixed"], **point["settings"]).items():
        argv += ["--set", f"{k}={v}"]
    if spec.get("data_dir"):
        argv += ["--data-dir", spec["data_dir"]]
    return argv + ["--out", str(Path(sweep_dir) / point["folder"]), "--quiet"]


def plan(preset_name, grid, fixed, seeds, sweep_dir, executor, data_dir=None):
    """The sweep's record (what ``sweep.json`` holds): one point per grid
    combination and seed, grid order first, seeds innermost."""
    spec = {"version": 1, "preset": preset_name, "script": script_for(preset_name),
            "grid": grid, "fixed": fixed, "seeds": [int(s) for s in seeds],
            "data_dir": data_dir, "executor": executor, "repo": str(ROOT),
            "python": sys.executable, "created": datetime.now().isoformat(timespec="seconds"),
            "submissions": [], "points": []}
    for combo in itertools.product(*grid.values()):
        settings = dict(zip(grid, combo))
        for seed in spec["seeds"]:
            point = {"index": len(spec["points"]), "settings": settings, "seed": int(seed)}
            point["folder"] = _slug(settings, seed, point["index"])
            point["command"] = "python " + shlex.join(fresh_argv(spec, point, sweep_dir))
            spec["points"].append(point)
    return spec


def _write_json(path, data):
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# the jobs
# ---------------------------------------------------------------------------

def _jobs(spec, sweep_dir, points):
    sweep_dir = Path(sweep_dir).resolve()
    per_job = spec["executor"].get("compile_cache") == "per-job"
    return [{"dir": str(sweep_dir / p["folder"]), "script": spec["script"],
             "argv": fresh_argv(spec, p, sweep_dir), "repo": spec.get("repo", str(ROOT)),
             "python": sys.executable,
             "compiledir": str(sweep_dir / ".compile" / p["folder"]) if per_job else None}
            for p in points]


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _count(text):
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def build_parser():
    parser = _Parser(
        prog="python -m vgsn.sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A study: one preset over a grid of settings and several seeds, each point "
                    "an ordinary run in its own folder, locally or as one Slurm job array "
                    "(submitit), then one aggregated report (sweep_report.md, sweep.csv).",
        epilog="example:\n  python -m vgsn.sweep --preset mnist2-ork --grid lam_kl=1,4,24 "
               "--seeds 1-3 --out sweeps/kl --executor slurm --partition cpu --time 2-00:00:00\n"
               "Grid values are comma-separated, or ';'-separated when a value holds commas "
               "(--grid hidden='500,500;1000,1000'). --grid tfd_fold=0,1,2,3,4 adds the "
               "held-out TFD protocol: the mean over the folds (fold_summary) in the report. "
               "Precedence of a run's settings: preset < --config FILE < --set / --grid.")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--preset", metavar="NAME", help=f"one of: {', '.join(P.PRESETS)}")
    what.add_argument("--resume", metavar="SWEEP_DIR",
                      help="run the points of SWEEP_DIR that have not finished")
    what.add_argument("--report", metavar="SWEEP_DIR",
                      help="rebuild sweep_report.md / sweep.csv from what has finished")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                        help="a swept preset field (repeatable: the grid is their product)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a preset field set the same in every run (repeatable)")
    parser.add_argument("--config", metavar="FILE",
                        help="settings of every run from a YAML file (as run_mnist.py "
                             "--print-config writes); without --preset its 'name' is the "
                             "preset")
    parser.add_argument("--print-config", action="store_true",
                        help="print the settings every run shares (YAML, read back by "
                             "--config) and exit; runs nothing")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", nargs="+", metavar="S",
                       help="the seeds: a list (1 2 3), a range (1-3) or both (default 1)")
    seeds.add_argument("--seed-list", metavar="S1,S2,...", help=argparse.SUPPRESS)
    parser.add_argument("--out", metavar="SWEEP_DIR", help="the sweep folder (new or empty)")
    parser.add_argument("--data-dir", metavar="DIR", help="passed to every run")
    parser.add_argument("--dry-run", action="store_true",
                        help="write sweep.json and the command.txt files, run nothing")
    parser.add_argument("--quiet", action="store_true")
    ex = parser.add_argument_group("executor (on --resume: the sweep's own unless given)")
    ex.add_argument("--executor", choices=EXECUTORS)
    ex.add_argument("--jobs", type=_count, metavar="N", help="local: runs at a time (1)")
    ex.add_argument("--compile-cache", choices=("shared", "per-job"),
                    help="shared (default for local: the first point fills it) or per-job "
                         "(default otherwise: <sweep>/.compile/<point>)")
    ex.add_argument("--partition", help="Slurm partition")
    ex.add_argument("--time", metavar="T", help="per job: minutes, HH:MM:SS or D-HH:MM:SS "
                                                "(default 2-00:00:00); requeued past it")
    ex.add_argument("--cpus", type=_count, metavar="N", help="CPUs per job (2)")
    ex.add_argument("--gpus", type=_count, metavar="N", help="GPUs per job (0)")
    ex.add_argument("--array-parallelism", type=_count, metavar="N",
                    help="jobs of the array running at once (64)")
    ex.add_argument("--max-requeue", type=_count, metavar="N",
                    help="requeues after preemption / time-out per job (5)")
    ex.add_argument("--slurm-extra", action="append", metavar="KEY=VALUE",
                    help="any other sbatch option, e.g. account=abc (repeatable)")
    ex.add_argument("--wait", action="store_true",
                    help="slurm: wait for the array, then write the report")
    return parser


_EX_DEFAULTS = {"jobs": 1, "time": "2-00:00:00", "cpus": 2, "gpus": 0, "array_parallelism": 64,
                "max_requeue": 5, "partition": None, "slurm_extra": None}


def executor_options(args, recorded=None):
    """The executor record: the recorded one (on --resume) with what was given on top."""
    ex = dict(recorded or {"name": "local", **_EX_DEFAULTS})
    if args.executor:
        ex["name"] = args.executor
    for k in _EX_DEFAULTS:
        v = getattr(args, k)
        if v is not None:
            ex[k] = v
    if args.slurm_extra:
        ex["slurm_extra"] = dict(_split_setting(i, "--slurm-extra") for i in args.slurm_extra)
    if args.compile_cache:
        ex["compile_cache"] = args.compile_cache
    elif not recorded or args.executor:
        ex["compile_cache"] = "shared" if ex["name"] == "local" else "per-job"
    if ex["name"] != "local":
        X.time_minutes(ex["time"])
        X.import_submitit()
    if ex["name"] == "slurm" and shutil.which("sbatch") is None:
        raise SweepError("--executor slurm: no sbatch here; submit from a Slurm "
                         "login node (or use --executor local / submitit-local)")
    return ex


def _seeds(args):
    """The sweep's seeds: ``--seeds`` (a list, ranges allowed; the old ``--seed-list``
    comma form too), default [1]."""
    if args.seed_list is not None:
        return config.parse_seeds([args.seed_list], "--seed-list")
    return config.parse_seeds(args.seeds or ["1"])


def _base(args):
    """(preset name, the --config file's typed settings) of a new sweep."""
    from_file = config.read_settings(args.config) if args.config else {}
    name = args.preset or from_file.get("name")
    if name not in P.PRESETS:
        raise SweepError("choose the runs: --preset NAME, or --config FILE naming one of "
                         f"{', '.join(P.PRESETS)} in its 'name'" if name is None else
                         f"--config {args.config}: name {name!r} is not a preset; add --preset "
                         f"NAME (one of {', '.join(P.PRESETS)})")
    return name, from_file


def _new_sweep(args):
    """Check everything, then write sweep.json and the command.txt files."""
    if not args.out:
        raise SweepError("--out SWEEP_DIR is needed for a new sweep")
    name, from_file = _base(args)
    grid, fixed = parse_grid(name, args.grid, args.set, from_file)
    seeds = _seeds(args)
    ex = executor_options(args)
    out = Path(args.out).resolve()
    if (out / "sweep.json").exists():
        raise SweepError(f"--out {args.out}: already holds a sweep; continue it with "
                         f"--resume {args.out}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SweepError(f"--out {args.out}: exists and is not an empty folder")
    spec = plan(name, grid, fixed, seeds, out, ex, data_dir=args.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    for p in spec["points"]:
        (out / p["folder"]).mkdir()
        (out / p["folder"] / "command.txt").write_text(p["command"] + "\n")
    _write_json(out / "sweep.json", spec)
    return out, spec


def _execute(out, spec, quiet, wait):
    """Run or submit the points that have not finished; returns the exit status."""
    pending = [p for p in spec["points"] if point_status(out / p["folder"]) != "finished"]
    ex = spec["executor"]
    n = len(spec["points"])
    if not pending:
        X.say(f"all {n} runs have finished", quiet)
    else:
        from_ckpt = sum(point_status(out / p["folder"]) == "checkpoint" for p in pending)
        X.say(f"{n - len(pending)} of {n} runs finished; running {len(pending)} "
             f"({from_ckpt} from their checkpoints) with {ex['name']}", quiet)
        record = {"at": datetime.now().isoformat(timespec="seconds"), "executor": ex["name"],
                  "points": [p["folder"] for p in pending]}
        spec["submissions"].append(record)
        _write_json(out / "sweep.json", spec)
        jobs = _jobs(spec, out, pending)
        if ex["name"] == "local":
            results = X.run_local(jobs, ex["jobs"], ex["compile_cache"] == "shared", quiet)
        else:
            record["job_ids"], results = X.run_submitit(
                jobs, ex, out, wait or ex["name"] != "slurm", quiet)
            _write_json(out / "sweep.json", spec)
            if results is None:
                X.say(f"follow with squeue; then python -m vgsn.sweep --report {out} (or "
                     f"--resume {out} for runs that failed)", quiet)
                return 0
        for r in results:
            if r["status"] != "finished":
                X.say(f"{r['folder']}: not finished ({r.get('error') or r['status']})", quiet)
    report = write_report(out, spec)
    done = sum(point_status(out / p["folder"]) == "finished" for p in spec["points"])
    X.say(f"{done} of {n} runs finished; report: {report}", quiet)
    return 0 if done == n else 1


def _print_config(args):
    """``--print-config``: the settings every point shares (the grid's fields at their
    first value), as YAML with the grid and seeds in the header."""
    name, from_file = _base(args)
    grid, fixed = parse_grid(name, args.grid, args.set, from_file)
    seeds = _seeds(args)
    first = {k: v[0] for k, v in grid.items()}
    settings = _config(P.get_preset(name), dict(fixed, **first), seeds[0]).validate()
    header = [f"python -m vgsn.sweep: the settings of its first run (preset < --config < "
              f"--set / --grid)", f"grid: {json.dumps(grid)}; seeds: {seeds}"]
    return config.dump_settings(settings, header)


def main(argv=None):
    """``python -m vgsn.sweep``; returns the exit status (0 all finished or submitted,
    1 some run failed, 2 bad arguments, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.report:
            if args.grid or args.set or args.out:
                raise SweepError("--report takes only the sweep folder")
            print(write_report(Path(args.report), load_spec(args.report)))
            return 0
        if not (args.preset or args.resume or args.report or args.config):
            raise SweepError("choose one: --preset NAME (or --config FILE), --resume SWEEP_DIR "
                             "or --report SWEEP_DIR")
        if args.print_config and not args.resume and not args.report:
            print(_print_config(args), end="")
            return 0
        if (args.resume or args.report) and args.config:
            raise SweepError("--config starts a new sweep; --resume and --report use the "
                             "sweep's own settings")
        if args.resume:
            if args.grid or args.set or args.out or args.seeds or args.seed_list:
                raise SweepError("--resume continues a sweep as planned; drop --grid, --set, "
                                 "--out and the seeds")
            out = Path(args.resume).resolve()
            spec = load_spec(out)
            spec["executor"] = executor_options(args, spec["executor"])
        else:
            out, spec = _new_sweep(args)
            if args.dry_run:
                X.say(f"planned {len(spec['points'])} runs in {out} (see command.txt in each "
                     f"folder); start them with --resume {out}", args.quiet)
                return 0
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        return _execute(out, spec, args.quiet, args.wait)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; continue with --resume {out}", file=sys.stderr)
        return 130

"""Many runs: a preset x a grid x seeds, locally or on Slurm (submitit), one report.

    python -m vgsn.sweep --preset mnist2-ork --grid lam_kl=1,4,24 --seeds 3 --out sweeps/kl \\
        --executor slurm --partition cpu --time 2-00:00:00 --cpus 8
    python -m vgsn.sweep --resume sweeps/kl          # only the points that have not finished
    python -m vgsn.sweep --report sweeps/kl          # sweep_report.md / sweep.csv from what is done

Every point of the grid and every seed is one ordinary run of ``run_mnist.py`` /
``run_tfd.py`` in its own folder under the sweep folder; its ``command.txt`` holds
the command that reproduces it by hand (run from the repository root), and the job
runs exactly that command. ``sweep.json`` records the whole sweep. A grid over
TFD's held-out folds (``--grid tfd_fold=0,1,2,3,4``) is the per-fold protocol: the
report adds each setting's mean over the folds (``vgsn.sweepreport.fold_means``,
``vgsn.evaluation.fold_summary``).

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
import ctypes
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from pathlib import Path

from vgsn import presets as P
from vgsn.sweepreport import KEEP, canonical_text, load_spec, point_status, write_report

__all__ = ["SweepError", "parse_grid", "plan", "job_argv", "run_point", "PointJob", "main"]

ROOT = Path(__file__).resolve().parent.parent   # where run_mnist.py / run_tfd.py live
EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")
SLURM_HINT = "pip install -e .[sweep]"


class SweepError(ValueError):
    """A sweep cannot be planned or continued; the message is one line."""


# ---------------------------------------------------------------------------
# the plan: grid, points, commands
# ---------------------------------------------------------------------------

def _split_setting(item, flag):
    key, sep, value = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise SweepError(f"{flag} needs FIELD=VALUE, got {item!r}")
    return key, value


def parse_grid(preset_name, grid_items=(), set_items=()):
    """Check a grid against the preset; returns (grid, fixed) as canonical texts.

    Parameters
    ----------
    preset_name : str
    grid_items : sequence of 'FIELD=V1,V2,...'
        Values are comma-separated, or semicolon-separated when a value itself
        holds commas (``hidden=32,32;64,64``).
    set_items : sequence of 'FIELD=VALUE'
        Settings shared by every point (``figures=false``).

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
    try:
        for item in set_items:
            key, value = _split_setting(item, "--set")
            fixed[key] = canonical_text(P.parse_value(key, value))
        for item in grid_items:
            key, value = _split_setting(item, "--grid")
            if key == "seed":
                raise SweepError("--grid seed=...: give seeds with --seeds N or --seed-list")
            if key in grid or key in fixed:
                raise SweepError(f"--grid {key}: given twice (or also in --set)")
            parts = [v.strip() for v in value.split(";" if ";" in value else ",")]
            if not all(parts):
                raise SweepError(f"--grid {item}: an empty value")
            texts = [canonical_text(P.parse_value(key, v)) for v in parts]
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
    changes = {k: P.parse_value(k, v) for k, v in settings.items()}
    if seed is not None:
        changes["seed"] = int(seed)
    return P.apply_overrides(base, changes)


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
# one point: status, command, the job itself
# ---------------------------------------------------------------------------

def job_argv(job):
    """What the job runs now: None when finished, ``--resume`` from a checkpoint,
    else the fresh command (clearing a start that died before its first checkpoint)."""
    d = Path(job["dir"])
    status = point_status(d)
    if status == "finished":
        return None
    if status == "checkpoint":
        return [f"run_{job['script']}.py", "--resume", str(d), "--quiet"]
    if status == "started":
        for p in d.iterdir():
            if p.name not in KEEP:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    return list(job["argv"])


def _flags_with(flags, key, value):
    """The user's flag string with ``key=value`` added unless a compile folder is set."""
    given = {item.split("=", 1)[0].strip() for item in flags.split(",") if "=" in item}
    if given & {"base_compiledir", "compiledir"}:
        return flags
    return ",".join(f for f in [flags.strip(","), f"{key}={value}"] if f)


def job_env(job):
    env = dict(os.environ)
    if job.get("compiledir"):
        for var in ("AESARA_FLAGS", "PYTENSOR_FLAGS"):
            env[var] = _flags_with(env.get(var, ""), "base_compiledir", job["compiledir"])
    return env


def _die_with_parent():
    """In the child: SIGTERM when the sweep process dies, so a killed sweep leaves no
    training orphaned (the run's last checkpoint stays; --resume continues it)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG (Linux)
    except (AttributeError, OSError):
        pass


def run_point(job):
    """Run (or continue) one point to its end; returns {'folder', 'returncode', 'status'}.

    ``job``: dict with 'dir', 'script', 'argv' (the fresh command), 'repo', 'python'
    and optional 'compiledir'. The output goes to ``<dir>/job.log``.
    """
    d = Path(job["dir"])
    argv = job_argv(job)
    if argv is None:
        return {"folder": d.name, "returncode": 0, "status": "finished"}
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "job.log", "a") as log:
        log.write(f"# {datetime.now().isoformat(timespec='seconds')}: python "
                  f"{shlex.join(argv)}\n")
        log.flush()
        rc = subprocess.call([job["python"]] + argv, cwd=job["repo"], env=job_env(job),
                             stdout=log, stderr=subprocess.STDOUT,
                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    return {"folder": d.name, "returncode": rc, "status": point_status(d)}


class PointJob:
    """The submitit job: runs one point; when Slurm preempts it or its time runs out,
    ``checkpoint`` asks submitit to requeue the same call, which continues from the
    run's checkpoint (``job_argv`` sees checkpoint.h5)."""

    def __call__(self, job):
        result = run_point(job)
        if result["returncode"] < 0 or result["returncode"] == 143:   # killed by a signal
            raise RuntimeError(f"{job['dir']}: the run was killed (status "
                               f"{result['returncode']}); --resume continues it")
        return result

    def checkpoint(self, job):
        import submitit
        return submitit.helpers.DelayedSubmission(self, job)


# ---------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------

def _jobs(spec, sweep_dir, points):
    sweep_dir = Path(sweep_dir).resolve()
    per_job = spec["executor"].get("compile_cache") == "per-job"
    return [{"dir": str(sweep_dir / p["folder"]), "script": spec["script"],
             "argv": fresh_argv(spec, p, sweep_dir), "repo": spec.get("repo", str(ROOT)),
             "python": sys.executable,
             "compiledir": str(sweep_dir / ".compile" / p["folder"]) if per_job else None}
            for p in points]


def _say(message, quiet):
    if not quiet:
        print(message, flush=True)


def run_local(jobs, n_jobs, shared_cache, quiet=False):
    """Local subprocesses, ``n_jobs`` at a time; with a shared cache and more than one
    at a time the first job runs alone first (it fills the compile cache)."""
    t0, done, results = time.time(), 0, []

    def finished(result):
        nonlocal done
        done += 1
        how = ("finished" if result["status"] == "finished"
               else f"FAILED (exit {result['returncode']}; see {result['folder']}/job.log)")
        _say(f"[{done}/{len(jobs)}] {result['folder']}: {how} after {time.time() - t0:.0f} s",
             quiet)
        results.append(result)

    rest = list(jobs)
    if n_jobs > 1 and shared_cache and len(rest) > 1:
        _say("warming the compile cache with the first point", quiet)
        finished(run_point(rest.pop(0)))
    pool = ThreadPoolExecutor(max_workers=max(1, n_jobs))
    try:
        for fut in as_completed([pool.submit(run_point, j) for j in rest]):
            finished(fut.result())
    finally:   # on Ctrl-C the runs stop with their checkpoints; start no queued one
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _time_minutes(text):
    """Slurm time ('90', 'HH:MM:SS', 'D-HH:MM:SS') in whole minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        raise SweepError(f"--time must be minutes, HH:MM:SS or D-HH:MM:SS, got {text!r}")
    d, a, b, c = (int(x) if x else None for x in m.groups())
    if b is None:                    # 'M' or 'D-H'
        minutes = (d or 0) * 1440 + (a * 60 if d is not None else a)
    elif c is None:                  # 'H:M' after a day, else 'M:S'
        minutes = d * 1440 + a * 60 + b if d is not None else a + (b > 0)
    else:
        minutes = (d or 0) * 1440 + a * 60 + b + (c > 0)
    return max(1, minutes)


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise SweepError(f"this executor needs submitit: {SLURM_HINT}") from None
    return submitit


def submitit_executor(ex, folder):
    """The submitit executor for the recorded options ``ex`` (dict)."""
    submitit = _import_submitit()
    kind = ex["name"]
    if kind == "submitit-debug":
        return submitit.DebugExecutor(folder=folder)
    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=ex["max_requeue"])
        executor.update_parameters(timeout_min=_time_minutes(ex["time"]))
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=ex["max_requeue"])
    params = {"job_name": ex.get("job_name") or "vgsn-sweep", "time": _time_minutes(ex["time"]),
              "cpus_per_task": ex["cpus"], "array_parallelism": ex["array_parallelism"],
              "additional_parameters": dict(ex.get("slurm_extra") or {})}
    if ex.get("partition"):
        params["partition"] = ex["partition"]
    if ex.get("gpus"):
        params["gpus_per_node"] = ex["gpus"]
    executor.update_parameters(**params)
    return executor


def run_submitit(jobs, ex, sweep_dir, wait, quiet=False):
    """One job array; returns (job ids, results or None when not waited for)."""
    executor = submitit_executor(ex, Path(sweep_dir) / ".submitit" / "%j")
    submitted = executor.map_array(PointJob(), jobs)
    ids = [str(j.job_id) for j in submitted]
    _say(f"submitted {len(ids)} job(s) ({ex['name']}): {ids[0]}"
         + (f" ... {ids[-1]}" if len(ids) > 1 else ""), quiet)
    if not wait:
        return ids, None
    results = []
    for job, j in zip(jobs, submitted):
        try:
            results.append(j.result())
        except Exception as exc:   # the job's own error, one line
            first = str(exc).strip().splitlines() or [type(exc).__name__]
            results.append({"folder": Path(job["dir"]).name, "returncode": 1,
                            "status": point_status(job["dir"]), "error": first[-1]})
    return ids, results



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
               "--seeds 3 --out sweeps/kl --executor slurm --partition cpu --time 2-00:00:00\n"
               "Grid values are comma-separated, or ';'-separated when a value holds commas "
               "(--grid hidden='500,500;1000,1000'). --grid tfd_fold=0,1,2,3,4 adds the "
               "held-out TFD protocol: the mean over the folds (fold_summary) in the report.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", metavar="NAME", help=f"one of: {', '.join(P.PRESETS)}")
    what.add_argument("--resume", metavar="SWEEP_DIR",
                      help="run the points of SWEEP_DIR that have not finished")
    what.add_argument("--report", metavar="SWEEP_DIR",
                      help="rebuild sweep_report.md / sweep.csv from what has finished")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                        help="a swept preset field (repeatable: the grid is their product)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a preset field set the same in every run (repeatable)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=_count, metavar="N", help="seeds 1..N (default 1)")
    seeds.add_argument("--seed-list", metavar="S1,S2,...", help="these seeds")
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
        _time_minutes(ex["time"])
        _import_submitit()
    if ex["name"] == "slurm" and shutil.which("sbatch") is None:
        raise SweepError("--executor slurm: no sbatch on this machine; submit from a Slurm "
                         "login node (or use --executor local / submitit-local)")
    return ex


def _seeds(args):
    if args.seed_list is None:
        n = 1 if args.seeds is None else args.seeds
        if n < 1:
            raise SweepError(f"--seeds must be >= 1, got {n}")
        return list(range(1, n + 1))
    try:
        seeds = [int(s) for s in args.seed_list.split(",") if s.strip()]
    except ValueError:
        raise SweepError(f"--seed-list must be whole numbers, got {args.seed_list!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise SweepError(f"--seed-list must be distinct whole numbers >= 0, got {args.seed_list!r}")
    return seeds


def _new_sweep(args):
    """Check everything, then write sweep.json and the command.txt files."""
    if not args.out:
        raise SweepError("--out SWEEP_DIR is needed for a new sweep")
    grid, fixed = parse_grid(args.preset, args.grid, args.set)
    seeds = _seeds(args)
    ex = executor_options(args)
    out = Path(args.out).resolve()
    if (out / "sweep.json").exists():
        raise SweepError(f"--out {args.out}: already holds a sweep; continue it with "
                         f"--resume {args.out}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SweepError(f"--out {args.out}: exists and is not an empty folder")
    spec = plan(args.preset, grid, fixed, seeds, out, ex, data_dir=args.data_dir)
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
        _say(f"all {n} runs have finished", quiet)
    else:
        from_ckpt = sum(point_status(out / p["folder"]) == "checkpoint" for p in pending)
        _say(f"{n - len(pending)} of {n} runs finished; running {len(pending)} "
             f"({from_ckpt} from their checkpoints) with {ex['name']}", quiet)
        record = {"at": datetime.now().isoformat(timespec="seconds"), "executor": ex["name"],
                  "points": [p["folder"] for p in pending]}
        spec["submissions"].append(record)
        _write_json(out / "sweep.json", spec)
        jobs = _jobs(spec, out, pending)
        if ex["name"] == "local":
            results = run_local(jobs, ex["jobs"], ex["compile_cache"] == "shared", quiet)
        else:
            record["job_ids"], results = run_submitit(
                jobs, ex, out, wait or ex["name"] != "slurm", quiet)
            _write_json(out / "sweep.json", spec)
            if results is None:
                _say(f"follow with squeue; then python -m vgsn.sweep --report {out} (or "
                     f"--resume {out} for runs that failed)", quiet)
                return 0
        for r in results:
            if r["status"] != "finished":
                _say(f"{r['folder']}: not finished ({r.get('error') or r['status']})", quiet)
    report = write_report(out, spec)
    done = sum(point_status(out / p["folder"]) == "finished" for p in spec["points"])
    _say(f"{done} of {n} runs finished; report: {report}", quiet)
    return 0 if done == n else 1


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
                _say(f"planned {len(spec['points'])} runs in {out} (see command.txt in each "
                     f"folder); start them with --resume {out}", args.quiet)
                return 0
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        return _execute(out, spec, args.quiet, args.wait)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; continue with --resume {out}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""SIGKILL a tiny run at random points, resume it, and check it against an
uninterrupted one bit for bit (issue 14).

    python benchmarks/fault_resume.py                       # 20 random points
    python benchmarks/fault_resume.py --points 5 --seed 3 --kinds checkpoint

Each point runs ``run_mnist.py --preset tiny`` in its own process and SIGKILLs it
at one of three kinds of moment:

- ``update``: right after update N and everything due at it;
- ``checkpoint``: half-way through the N-th write of a checkpoint file's bytes
  (``checkpoint.h5`` or ``pretrained.h5``; odd N: inside the header, even N:
  inside the HDF5 image), so a torn temporary file is left behind;
- ``metrics``: half-way through the N-th row written to a metrics file (a torn
  last line, what a crash or a full disk leaves).

then resumes it (``--resume``) to the end and compares with the reference run:
every metrics file byte for byte, every array of ``checkpoint.h5`` and
``pretrained.h5`` and of each ``evals/*.npz`` by value, and every promised file
present. All points lie after the first checkpoint (before it there is nothing to
resume: that refusal is tested in ``tests/test_reliability.py``). Exit status 1
when any point differs. About 50 s per point on two cores.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))   # _faults, when imported from elsewhere
ARGS = ["--preset", "tiny", "--quiet", "--no-figures"]
PROMISED = ("config.json", "metrics.jsonl", "eval.csv", "train_pretrain.csv",
            "train_guided.csv", "train_vae.csv", "checkpoint.h5", "pretrained.h5",
            "report.md", "timing.json", "log.txt")


# ---- the child: one run that kills itself -----------------------------------------------

def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def child(kind, n, argv):
    """Run ``run_mnist.py argv`` in this process, SIGKILLed at point (kind, n)."""
    from vgsn.run import checkpoints
    from vgsn.run import folder as runfiles
    from vgsn.run.cli import cli_main
    from vgsn.run.loop import Hooks

    hooks = None
    if kind == "update":
        class KillAt(Hooks):
            def after_update(self, run):
                if run.update == n:
                    _die()
        hooks = KillAt()
    elif kind == "checkpoint":
        real, count = checkpoints._write_all, [0]

        def write_all(fd, data):
            count[0] += 1
            if count[0] == n:
                real(fd, bytes(data)[:len(data) // 2])
                os.fsync(fd)
                _die()
            real(fd, data)
        checkpoints._write_all = write_all
    elif kind == "metrics":
        from _faults import torn_opener
        runfiles.open = torn_opener(open, lambda path: runfiles.is_metrics_file(path.name), n,
                                    _die)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    return cli_main(argv, "mnist", hooks=hooks)


# ---- the parent: points, runs, comparisons ---------------------------------------------------

def _run(args, timeout=900):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _arrays(path):
    from vgsn.run.checkpoints import load_run_checkpoint
    return load_run_checkpoint(path)[0]


def compare_runs(out, ref):
    """The differences between run folders ``out`` and ``ref`` (empty: bit for bit)."""
    from vgsn.run.folder import is_metrics_file

    problems = [f"{name} missing" for name in PROMISED if not (out / name).is_file()]
    names = {p.name for p in ref.iterdir() if is_metrics_file(p.name)}
    names |= {p.name for p in out.iterdir() if is_metrics_file(p.name)}
    problems += [f"{name} differs" for name in sorted(names)
                 if not (out / name).is_file() or not (ref / name).is_file()
                 or (out / name).read_bytes() != (ref / name).read_bytes()]
    for name in ("checkpoint.h5", "pretrained.h5"):
        if (out / name).is_file():
            a, b = _arrays(out / name), _arrays(ref / name)
            if sorted(a) != sorted(b):
                problems.append(f"{name}: other arrays")
            problems += [f"{name}: {k} differs" for k in sorted(a)
                         if k in b and not np.array_equal(a[k], b[k])]
    evals_out = sorted(p.name for p in (out / "evals").glob("*.npz"))
    evals_ref = sorted(p.name for p in (ref / "evals").glob("*.npz"))
    if evals_out != evals_ref:
        problems.append(f"evals/ holds {sorted(set(evals_out) ^ set(evals_ref))} in one run only")
    for name in set(evals_out) & set(evals_ref):
        with np.load(out / "evals" / name) as x, np.load(ref / "evals" / name) as y:
            if sorted(x.files) != sorted(y.files) or not all(   # NaN: "no value", equal
                    np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f")
                    for k in x.files):
                problems.append(f"evals/{name} differs")
    leftovers = [p.name for p in out.glob(".*tmp*")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return problems


def _ranges(ref):
    """Where each kind of kill can fall, after the first checkpoint is complete."""
    from vgsn.run import presets as P

    c = P.get_preset("tiny")
    first = c.checkpoint_every
    rows = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    before = sum(r["update"] <= first and r["kind"] != "final" for r in rows)
    checkpoints = sum(1 for u in range(1, c.total_updates + 1)
                      if u % c.checkpoint_every == 0 or u in (c.pretrain_updates, c.total_updates))
    files = checkpoints + 1          # pretrained.h5 at the fork
    # Each row is two writes (metrics.jsonl, then its CSV).
    return {"update": (first + 1, c.total_updates - 1), "checkpoint": (3, 2 * files),
            "metrics": (2 * before + 1, 2 * len(rows))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None, help="seed of the points (default: random)")
    ap.add_argument("--kinds", default="update,checkpoint,metrics")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), [a for a in rest if a != "--"])
    kinds = [k for k in args.kinds.split(",") if k]
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 10**6)
    rng = np.random.default_rng(seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="vgsn-fault-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ref = work / "reference"
    done = _run(["run_mnist.py", *ARGS, "--out", str(ref)])
    if done.returncode != 0:
        print(f"the reference run failed:\n{done.stderr[-3000:]}")
        return 1
    ranges = _ranges(ref)
    print(f"seed {seed}; reference in {time.time() - t0:.0f} s; kill ranges {ranges}")
    good = 0
    for i in range(args.points):
        kind = kinds[i % len(kinds)] if i < len(kinds) else str(rng.choice(kinds))
        lo, hi = ranges[kind]
        n = int(rng.integers(lo, hi + 1))
        out = work / f"point{i:02d}-{kind}-{n}"
        t = time.time()
        killed = _run([__file__, "--child", kind, str(n), "--", *ARGS, "--out", str(out)])
        if killed.returncode != -signal.SIGKILL:
            print(f"point {i} ({kind} {n}): not killed (exit {killed.returncode}) "
                  f"{killed.stderr[-500:]}")
            continue
        resumed = _run(["run_mnist.py", "--resume", str(out), "--quiet"])
        if resumed.returncode != 0:
            print(f"point {i} ({kind} {n}): resume failed (exit {resumed.returncode}): "
                  f"{resumed.stderr.strip()[-800:]}")
            continue
        problems = compare_runs(out, ref)
        print(f"point {i} ({kind} {n}): "
              f"{'bit for bit' if not problems else '; '.join(problems)} ({time.time() - t:.0f} s)",
              flush=True)
        good += not problems
        if not problems and not args.keep:
            shutil.rmtree(out)
    print(f"{good} of {args.points} points resumed bit for bit (seed {seed}, "
          f"{time.time() - t0:.0f} s)")
    return 0 if good == args.points else 1


if __name__ == "__main__":
    sys.exit(main())

"""Running a sweep's points: one point as a subprocess, and the executors (local
subprocesses, or a submitit job array on Slurm / submitit's local and debug executors).

A point's job is a dict: 'dir', 'script', 'argv' (the fresh command), 'repo', 'python'
and optional 'compiledir'; :func:`job_argv` turns it into what runs now (nothing when
finished, ``--resume`` from a checkpoint, else the fresh command).
"""
import ctypes
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

from vgsn.run.lock import holder
from vgsn.studies.sweepreport import KEEP, point_status

__all__ = ["SweepError", "SLURM_HINT", "job_argv", "job_env", "run_point", "PointJob",
           "run_local", "submitit_executor", "run_submitit", "time_minutes",
           "import_submitit", "say"]

SLURM_HINT = "pip install -e .[sweep]"


class SweepError(ValueError):
    """A sweep cannot be planned or continued; the message is one line."""


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
    if status == "started" and not _busy(d):
        for p in d.iterdir():
            if p.name not in KEEP:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    return list(job["argv"])


def _busy(folder):
    """Another process (a requeued job's predecessor not yet gone) holds the folder:
    its files are not cleared; the command then waits for the lock or refuses."""
    return holder(folder) is not None


def _flags_with(flags, key, value):
    """The user's flag string with ``key=value`` added unless a compile folder is set."""
    given = {item.split("=", 1)[0].strip() for item in flags.split(",") if "=" in item}
    if given & {"base_compiledir", "compiledir"}:
        return flags
    return ",".join(f for f in [flags.strip(","), f"{key}={value}"] if f)


def job_env(job):
    """The environment a point runs in: the user's, with the job's compile folder and,
    when several points run at once on one host (``job['shared_device']``), jax's
    GPU memory taken as needed rather than 75% of it per process up front (unless the
    user set ``XLA_PYTHON_CLIENT_PREALLOCATE``)."""
    env = dict(os.environ)
    if job.get("shared_device"):
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
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
        proc = subprocess.Popen([job["python"]] + argv, cwd=job["repo"], env=job_env(job),
                                stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        _RUNNING[str(d)] = proc
        try:
            # poll, not wait(): a signal handler of this process (submitit's, calling
            # PointJob.checkpoint) may then wait for the run itself
            while proc.poll() is None:
                time.sleep(0.2)
        finally:
            _RUNNING.pop(str(d), None)
    return {"folder": d.name, "returncode": proc.returncode, "status": point_status(d)}


#: run folder -> the run's process, while ``run_point`` waits for it
_RUNNING = {}

#: Seconds ``PointJob.checkpoint`` waits for the run to save and stop (Slurm's
#: ``--signal=USR1@90``, submitit's default, leaves 90 s before the kill).
STOP_WAIT_S = 75


class PointJob:
    """The submitit job: runs one point; when Slurm preempts it or its time runs out,
    submitit (on SIGUSR1) calls ``checkpoint``, which passes SIGUSR1 on to the run (it
    saves a checkpoint at its next update and stops), waits for it, and asks submitit
    to requeue the same call, which continues from that checkpoint (``job_argv`` sees
    checkpoint.h5)."""

    def __call__(self, job):
        result = run_point(job)
        # killed by a signal, or stopped by one after saving (128 + SIGTERM / SIGUSR1)
        if result["returncode"] < 0 or result["returncode"] in (143, 138):
            raise RuntimeError(f"{job['dir']}: the run was stopped by a signal (status "
                               f"{result['returncode']}); --resume continues it")
        return result

    def checkpoint(self, job):
        proc = _RUNNING.get(str(Path(job["dir"])))
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                pass          # requeued all the same: it resumes from its last checkpoint
        import submitit
        return submitit.helpers.DelayedSubmission(self, job)


def say(message, quiet):
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
        say(f"[{done}/{len(jobs)}] {result['folder']}: {how} after {time.time() - t0:.0f} s",
             quiet)
        results.append(result)

    rest = [dict(j, shared_device=True) for j in jobs] if n_jobs > 1 else list(jobs)
    if n_jobs > 1 and shared_cache and len(rest) > 1:
        say("warming the compile cache with the first point", quiet)
        finished(run_point(rest.pop(0)))
    pool = ThreadPoolExecutor(max_workers=max(1, n_jobs))
    try:
        for fut in as_completed([pool.submit(run_point, j) for j in rest]):
            finished(fut.result())
    finally:   # on Ctrl-C the runs stop with their checkpoints; start no queued one
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def time_minutes(text):
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


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise SweepError(f"this executor needs submitit: {SLURM_HINT}") from None
    return submitit


def submitit_executor(ex, folder):
    """The submitit executor for the recorded options ``ex`` (dict)."""
    submitit = import_submitit()
    kind = ex["name"]
    if kind == "submitit-debug":
        return submitit.DebugExecutor(folder=folder)
    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=ex["max_requeue"])
        executor.update_parameters(timeout_min=time_minutes(ex["time"]))
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=ex["max_requeue"])
    params = {"job_name": ex.get("job_name") or "vgsn-sweep", "time": time_minutes(ex["time"]),
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
    say(f"submitted {len(ids)} job(s) ({ex['name']}): {ids[0]}"
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

"""One process per run folder: an OS file lock on ``<run folder>/.lock``.

A run or a resume takes the lock before it reads anything of the folder for writing
and holds it until it returns (or the process dies: the kernel drops an ``flock``
with its last file descriptor, so a lock left by a killed process never blocks).
A second process, new run or ``--resume``, finds the lock taken and refuses with
:class:`FolderBusy`: one line naming the folder and the holder's pid and host
(which the holder writes into the lock file). Two processes never interleave the
folder's metrics files.

A Slurm job requeued by submitit keeps its job id; when the holder recorded the same
job id (its own predecessor, still being torn down, or on a dead node whose lock the
file server frees when its lease runs out), the new process waits up to
``VGSN_LOCK_WAIT`` seconds (default 90) for the lock instead of refusing.

The holder removes the lock file before it lets go, so a folder is left as the run
leaves it, and a refusal changes nothing (a killed process leaves the file behind;
the next run takes it over). Whoever takes the lock checks that the file it locked is
still the one under the name (not one removed while it waited), else tries again.
"""
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from vgsn.run.folder import BadInput, WriteFailed

try:
    import fcntl
except ImportError:          # not on Windows: no lock there
    fcntl = None

__all__ = ["LOCK_NAME", "FolderBusy", "folder_lock", "holder", "probe"]

LOCK_NAME = ".lock"
_WAIT_S = 90.0
_held = {}                   # resolved folder -> [fd, depth] (re-entrant in one process)


class FolderBusy(BadInput):
    """Another process holds the run folder's lock (exit status 2: nothing was done)."""


def _job_id():
    """The Slurm job (array task) this process belongs to, or None."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job or None


def _holder(path):
    """What the holder wrote into the lock file ({} when unreadable or mid-write)."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _busy(folder, flag, info):
    who = (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
           + (f", Slurm job {info['job']}" if info.get("job") else "")
           + (f", since {info['since']}" if info.get("since") else "")
           if info else "its pid is not written yet")
    return FolderBusy(f"{flag} {folder}: another vgsn process is using this run folder ({who}); "
                      f"wait for it to end (or stop it), or choose another folder")


def _try_lock(path):
    """An fd holding the lock of ``path``, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:       # still the file under the name (not one removed while we waited)?
            now = os.stat(path)
            mine = os.fstat(fd)
            if (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _acquire(folder, flag, wait):
    path = folder / LOCK_NAME
    deadline = None
    while True:
        try:
            fd = _try_lock(path)
        except OSError as exc:
            raise WriteFailed(f"{flag} {folder}: cannot write {path} "
                              f"({exc.strerror or exc}); nothing was changed") from None
        if fd is not None:
            return fd
        info = _holder(path)
        mine = _job_id()
        if not (wait and mine and info.get("job") == mine):
            raise _busy(folder, flag, info)
        # Our own job's predecessor (a requeue): wait a bounded time for it to go.
        if deadline is None:
            deadline = time.monotonic() + float(os.environ.get("VGSN_LOCK_WAIT", _WAIT_S))
        if time.monotonic() > deadline:
            raise _busy(folder, flag, info)
        time.sleep(0.5)


@contextmanager
def folder_lock(folder, flag="--out"):
    """Hold the lock of the run folder ``folder`` (which exists) for the ``with`` block.

    ``flag`` names the folder in the refusal (``--out`` or ``--resume``). Raises
    :class:`FolderBusy` when another process holds it, :class:`WriteFailed` when the
    lock file cannot be written. Re-entrant within one process.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    if fcntl is None:
        yield
        return
    if key in _held:
        _held[key][1] += 1
    else:
        fd = _acquire(folder, flag, wait=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "job": _job_id(),
                "since": datetime.now().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
        except OSError:
            pass           # the lock holds without it; a refusal then says pid unknown
        _held[key] = [fd, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            fd = _held.pop(key)[0]
            try:          # removed while held: one who opened it meanwhile sees it gone
                os.unlink(folder / LOCK_NAME)
            except OSError:
                pass
            os.close(fd)                     # closing drops the flock


def holder(folder):
    """What the process holding ``folder``'s lock wrote (a dict, maybe empty), or None
    when no other process holds it. Takes nothing and creates nothing."""
    folder = Path(folder)
    if fcntl is None or not (folder / LOCK_NAME).is_file() \
            or os.path.realpath(folder) in _held:
        return None
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None       # the real attempt says what is wrong
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(folder / LOCK_NAME)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def probe(folder, flag="--out"):
    """Refuse (:class:`FolderBusy`) now when another process holds the folder's lock
    (unless it is this Slurm job's predecessor, which :func:`folder_lock` waits for);
    the command line's early check."""
    info = holder(folder)
    if info is not None and not (_job_id() and info.get("job") == _job_id()):
        raise _busy(Path(folder), flag, info)

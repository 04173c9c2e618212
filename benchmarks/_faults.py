"""Fault injection shared by ``benchmarks/fault_resume.py`` and ``tests/test_reliability.py``:
an ``open`` whose files, opened for append, tear one write in half.

A crash or a full disk in the middle of a metrics row leaves half a line on disk;
both the SIGKILL sweep (``fault_resume.py``: the half is followed by SIGKILL) and the
in-process tests (the half is followed by ``OSError(ENOSPC)`` and the like) make
that state the same way, through :func:`torn_opener`. The tests import this module
with ``benchmarks/`` put on ``sys.path`` (it imports nothing of vgsn).
"""
from pathlib import Path

__all__ = ["torn_opener"]


def torn_opener(real_open, wanted, at, fail):
    """An ``open`` that tears the ``at``-th write to the files it picks.

    Parameters
    ----------
    real_open : callable
        The ``open`` to wrap (the builtin, captured before it is replaced).
    wanted : callable
        ``wanted(path)`` for a :class:`~pathlib.Path`: whether a file opened for
        append is one whose writes are counted.
    at : int
        Which write, counted from 1 over every picked file, is torn: its first
        half (``text[:len(text) // 2]``) is written and flushed, then ``fail()``
        is called.
    fail : callable
        Called after the half is on disk; it should not return (raise, or kill
        the process). If it returns, the write returns nothing more.

    Returns
    -------
    callable
        ``open(file, mode='r', ...)``: the real file, wrapped when picked.
    """
    count = [0]

    class Torn:
        """The picked file: a context manager with the one ``write`` the callers use."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            count[0] += 1
            if count[0] == at:
                self.f.write(text[:len(text) // 2])
                self.f.flush()       # the half line must be on disk before the fault
                fail()
                return None
            return self.f.write(text)

    def torn_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Torn(f) if "a" in mode and wanted(Path(file)) else f

    return torn_open

"""Stopping a run by a signal without losing work.

SIGTERM (what ``kill``, Slurm's time limit and pre-emption send), SIGINT (Ctrl-C) and
SIGUSR1 (Slurm's warning before the limit, ``--signal=USR1@90``, which submitit asks
for) set a flag; the training loop saves a checkpoint at the next update boundary and
stops with :class:`Stopped` (exit status 128 + the signal's number). A second Ctrl-C
stops at once, as before. Outside the update loop (the final evaluation) a signal stops
at once: the checkpoint of the last update is already written.
"""
import signal
import threading

from vgsn.run.folder import Interrupted

__all__ = ["SIGNALS", "Stopped", "StopSignals"]

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1")
                if hasattr(signal, name))


class Stopped(Interrupted):
    """A signal stopped the run; ``signum`` is which."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = int(signum)


class StopSignals:
    """``with StopSignals() as stop:`` the signals of :data:`SIGNALS` set ``stop.received``
    (the first one's number); ``stop.immediate = True`` makes the next one raise
    :class:`Stopped` at once. Only the main thread can take signals: elsewhere this
    does nothing."""

    def __init__(self):
        self.received = None
        self.immediate = False
        self._old = {}

    def _handle(self, signum, frame):
        if self.immediate or (self.received == signal.SIGINT and signum == signal.SIGINT):
            raise Stopped(f"{signal.Signals(signum).name}", signum)
        if self.received is None:
            self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
        return False

    @property
    def name(self):
        return signal.Signals(self.received).name if self.received else None

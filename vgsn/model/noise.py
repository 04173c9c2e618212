"""Host noise drawn ahead of the update that uses it, bit for bit the same numbers.

Every noise array of an update (the chain's eps, the guide's dropout masks and bias
noise) is drawn on the host from the owner's ``numpy`` Generator, so a seed gives the
same run on every back-end. On a CPU that costs about 0.08 s of a 0.6 s guided update
at the 2015 sizes (both cores are busy with the update itself, so nothing hides it).
On a GPU the update itself is milliseconds and the host noise would dominate; there
the next updates' noise is drawn while the device computes, on every host core.

Why the numbers do not change: a big array is filled in row blocks, each block from
its own generator seeded by integers drawn from the owner's generator
(``vgsn.model.layers._fill_rows``). The draws from the owner's generator (the seeds, and the
small arrays drawn from it directly) are cheap and are made in order, in the calling
thread, exactly as a plain draw makes them; only the block fills, which depend on
their seeds alone, run later on a thread pool. :class:`NoiseAhead` keeps the owner's
generator state from before each update it drew ahead, so :meth:`NoiseAhead.cancel`
puts the generator back where a consumer that never drew ahead would have it (what a
checkpoint must save, and what any other use of the generator must start from).

``VGSN_NOISE_AHEAD`` (read by :func:`updates_ahead`): a number of updates to draw
ahead, ``0`` to draw each update's noise when it starts; unset or ``auto``: 2 on a JAX
GPU/TPU, 0 elsewhere (on two CPU cores the pool only competes with the update).
"""
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

__all__ = ["deferred_fills", "pending_jobs", "wait_all", "NoiseAhead", "DrawsAhead",
           "updates_ahead"]

_STATE = threading.local()


def pending_jobs():
    """``(executor, jobs)`` when inside :func:`deferred_fills` in this thread, else None."""
    return getattr(_STATE, "deferred", None)


@contextmanager
def deferred_fills(executor):
    """Within this block, ``vgsn.model.layers._fill_rows`` draws its block seeds at once (from
    the generator it is given, in order) but submits the block fills to ``executor``;
    the list it yields collects their futures. The arrays returned inside the block
    hold their values once every future is done (:func:`wait_all`)."""
    jobs = []
    outer = pending_jobs()
    _STATE.deferred = (executor, jobs)
    try:
        yield jobs
    finally:
        _STATE.deferred = outer


def wait_all(jobs):
    """Wait for every future in ``jobs``; re-raise the first error (after all end, so no
    thread still writes into an array the caller drops)."""
    first = None
    for job in jobs:
        try:
            job.result()
        except BaseException as err:   # noqa: B902 - re-raised below
            first = first or err
    if first is not None:
        raise first


def _host_threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def updates_ahead(default=None):
    """Updates of noise to draw ahead: ``VGSN_NOISE_AHEAD`` (an int >= 0, or ``auto``),
    else ``default``, else 'auto' (2 when the JAX back-end runs on a GPU/TPU, else 0)."""
    raw = os.environ.get("VGSN_NOISE_AHEAD", "").strip().lower()
    if raw and raw != "auto":
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(f"VGSN_NOISE_AHEAD={raw!r} is not a count of updates: set it to "
                             "0, 1, 2, ... or auto")
        return n
    if default is not None:
        return int(default)
    from vgsn import backend
    if backend.MODE != "jax":
        return 0
    try:
        import jax
        return 2 if jax.default_backend() != "cpu" else 0
    except Exception:               # noqa: BLE001 - no usable jax: nothing to overlap with
        return 0


class _Item:
    __slots__ = ("key", "arrays", "jobs", "state_before")

    def __init__(self, key, arrays, jobs, state_before):
        self.key, self.arrays, self.jobs, self.state_before = key, arrays, jobs, state_before


class NoiseAhead:
    """The noise of the next ``ahead`` updates, drawn from ``rng`` by ``draw(*key)``.

    Parameters
    ----------
    rng : numpy.random.Generator
        The owner's generator: ``draw`` must take every number from it (directly, or
        through ``vgsn.model.layers``' noise helpers) and nothing else may use it while
        updates are queued, except through :meth:`cancel` first.
    draw : callable
        ``draw(*key)`` returns one update's noise (any structure of arrays).
    ahead : int
        Updates drawn ahead (0: :meth:`take` draws and fills in the calling thread).
    threads : int, optional
        Pool size (default: the host's cores).
    """

    def __init__(self, rng, draw, ahead, threads=None):
        if int(ahead) < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}")
        self.rng, self.draw, self.ahead = rng, draw, int(ahead)
        self._queue = deque()
        self._pool = None
        self._threads = int(threads or _host_threads())

    def _plan(self, key):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="vgsn-noise")
        state = self.rng.bit_generator.state
        with deferred_fills(self._pool) as jobs:
            arrays = self.draw(*key)
        return _Item(key, arrays, jobs, state)

    def take(self, *key):
        """The noise of the next update for ``key`` (e.g. its row counts), the very
        arrays a plain ``draw(*key)`` would give now."""
        if self.ahead == 0:
            self.cancel()
            return self.draw(*key)
        if self._queue and self._queue[0].key != key:
            self.cancel()
        item = self._queue.popleft() if self._queue else self._plan(key)
        while len(self._queue) < self.ahead:
            self._queue.append(self._plan(key))
        wait_all(item.jobs)
        return item.arrays

    def queued(self):
        """Updates whose noise is drawn ahead and not yet taken."""
        return len(self._queue)

    def cancel(self):
        """Drop the updates drawn ahead and put ``rng`` back to its state before the
        first of them: where it would be had nothing been drawn ahead."""
        if not self._queue:
            return
        for item in self._queue:
            try:
                wait_all(item.jobs)
            except BaseException:   # noqa: B902 - the arrays are dropped anyway
                pass
        self.rng.bit_generator.state = self._queue[0].state_before
        self._queue.clear()

    def close(self):
        """:meth:`cancel`, then stop the pool's threads."""
        self.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class DrawsAhead:
    """Mixin for an owner of a noise generator whose updates' noise may be drawn ahead.

    The owner stores its generator as ``self.rng = ...`` and defines
    ``_draw_noise(*key)``, which takes every number from ``self._rng``. ``take_noise(*key)``
    gives the next update's noise (drawn :func:`updates_ahead` updates ahead);
    reading ``self.rng`` (a checkpoint saving its state, a sampler, a test) first
    cancels what was drawn ahead, so it always sees the generator where a run that
    never drew ahead would have it.
    """

    _ahead = None

    @property
    def rng(self):
        if self._ahead is not None:
            self._ahead.cancel()
        return self._rng

    @rng.setter
    def rng(self, value):
        self.close_noise()
        self._rng = value

    def take_noise(self, *key):
        """The noise of the next update for ``key`` (``_draw_noise(*key)``'s result)."""
        if self._ahead is None:
            self._ahead = NoiseAhead(self._rng, self._draw_noise, updates_ahead())
        return self._ahead.take(*key)

    def close_noise(self):
        """Drop any noise drawn ahead (the generator put back) and stop its threads."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

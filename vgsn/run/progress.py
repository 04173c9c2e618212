"""The progress display of a run (:class:`Progress`): a tqdm bar on a terminal, else a
plain line through the run's log, with a steady ETA. Display only: nothing here is saved."""
import os
import sys
import time

from tqdm import tqdm

__all__ = ["Progress"]


def _interactive():
    """A progress bar can be drawn: stderr is a terminal with a width."""
    try:
        return sys.stderr.isatty() and os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """The progress display of a run: a tqdm bar on a terminal, else a plain line
    (rate, ETA, running costs) every ``every`` updates through ``log``. Display
    only: nothing here is saved.

    The ETA is steady: it averages over every update so far in this process (from the
    first one on, so compiling is left out). An interval over ``SLOW`` times the
    phase's mean is an update plus an evaluation (or snapshot, checkpoint): the mean
    goes into the phase's seconds per update, the rest into the seconds of those
    extras per update of the whole run, which every update left is charged. The chain
    phase, before it starts, costs pre-training's rate times ``CHAIN_FACTOR``.
    ``pretrain_end``: the update where the chain phase begins.
    """

    COSTS = ("cost", "gen_cost", "nll", "kl", "guide_loss", "guide_acc")
    #: A guided update's cost over a pre-training update's, before one is measured
    #: (the chain's 6 steps and the guide; measured 3 to 4 on the tiny and demo runs).
    CHAIN_FACTOR = 3.5
    SLOW = 3.0

    def __init__(self, log, total, initial, every, desc, pretrain_end=None):
        self.log, self.total, self.every = log, int(total), max(1, int(every))
        self.pretrain_end = self.total if pretrain_end is None else int(pretrain_end)
        self.bar = tqdm(total=total, initial=initial, unit="upd", file=sys.stderr,
                        disable=log.quiet or not _interactive(), dynamic_ncols=True,
                        smoothing=0, desc=desc)
        log.bar = self.bar
        self.running = {}
        self.postfix = {}
        self.t_line, self.u_line = time.time(), int(initial)
        self.t_tick = None
        self.spent = {"pretrain": [0.0, 0], "fork": [0.0, 0]}   # phase -> [seconds, updates]
        self.extra = 0.0          # seconds of evaluations etc. beyond the updates' own

    def tick(self, update, phase, results, refresh_every):
        """Update ``update`` (1-based count) of ``phase`` is done with ``results``."""
        now = time.time()
        if self.t_tick is not None:      # since the last tick: this step and what came after
            spent = self.spent["pretrain" if phase == "pretrain" else "fork"]
            dt = now - self.t_tick
            mean = spent[0] / spent[1] if spent[1] else None
            if mean is not None and dt > self.SLOW * mean:
                self.extra += dt - mean
                dt = mean
            spent[0] += dt
            spent[1] += 1
        self.t_tick = now
        self.bar.update(1)
        self.postfix = {}
        # A moving average over about the last 20 updates.
        for name, result in results.items():
            for k in self.COSTS:
                if k in result:
                    key = f"{name[0]}.{k}"
                    old = self.running.get(key, result[k])
                    self.running[key] = 0.95 * old + 0.05 * result[k]
                    self.postfix[key] = f"{self.running[key]:.3g}"
        if update % max(1, refresh_every) == 0:
            self.bar.set_description(phase)
            self.bar.set_postfix(self.postfix, refresh=False)

    def eta(self, update):
        """Seconds left after ``update`` updates (None before two updates are timed)."""
        (pre_s, pre_n), (fork_s, fork_n) = self.spent["pretrain"], self.spent["fork"]
        if pre_n + fork_n == 0:
            return None
        pre_rate = pre_s / pre_n if pre_n else None
        fork_rate = fork_s / fork_n if fork_n else None
        if pre_rate is None:
            pre_rate = fork_rate / self.CHAIN_FACTOR
        if fork_rate is None:
            fork_rate = pre_rate * self.CHAIN_FACTOR
        left_pre = max(0, self.pretrain_end - update)
        left_fork = max(0, self.total - max(update, self.pretrain_end))
        overhead = self.extra / (pre_n + fork_n)
        return left_pre * (pre_rate + overhead) + left_fork * (fork_rate + overhead)

    def line(self, update, phase):
        """Without a bar: a plain progress line every ``every`` updates and at the end."""
        if not self.bar.disable or self.log.quiet:
            return
        if update % self.every and update != self.total:
            return
        t = time.time()
        rate = (update - self.u_line) / max(t - self.t_line, 1e-9)
        eta = self.eta(update)
        costs = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        self.log.say(f"update {update:,}/{self.total:,} ({phase}) {rate:.1f} upd/s, "
                     f"ETA {'?' if eta is None else _hms(eta)}; {costs}")
        self.t_line, self.u_line = t, update

    def close(self):
        self.bar.close()
        self.log.bar = None

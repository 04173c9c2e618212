"""Shared by the resume tests: a hook that stops a run, and checkpoint equality."""
import numpy as np

from vgsn.run import train
from vgsn.run import loop
from vgsn.run.checkpoints import load_run_checkpoint


class StopAt(loop.Hooks):
    """Ctrl-C right after update ``k`` (the run stops as Interrupted)."""

    def __init__(self, k):
        self.k = k

    def after_update(self, run):
        if run.update == self.k:
            raise KeyboardInterrupt


def same_arrays(a_path, b_path):
    """Assert two run checkpoints hold the same names and bit-identical arrays."""
    a, _ = load_run_checkpoint(a_path)
    b, _ = load_run_checkpoint(b_path)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

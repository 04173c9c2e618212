"""Test driver: ``run_mnist.py``'s command line in this process, SIGKILLing itself
right after update K (the crash of the resume test).

    python tests/_kill_at.py K --preset tiny --out RUN_DIR --quiet
"""
import os
import signal
import sys

from vgsn.run.cli import cli_main
from vgsn.run.loop import Hooks


class KillAt(Hooks):
    """SIGKILL the process once update ``k`` and everything due at it are done."""

    def __init__(self, k):
        self.k = int(k)

    def after_update(self, run):
        if run.update == self.k:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[2:], "mnist", hooks=KillAt(sys.argv[1])))

"""Test driver: ``run_mnist.py``'s command line in this process, waiting after its
first update (lock held, folder in use) until the file GO exists.

    python tests/_gate.py GO --preset tiny --out RUN_DIR --quiet
"""
import sys
import time
from pathlib import Path

from vgsn.run.cli import cli_main
from vgsn.run.loop import Hooks


class Gate(Hooks):
    """Once, after the first update this process runs: wait for ``go`` (at most 10 min)."""

    def __init__(self, go):
        self.go, self.waited = Path(go), False

    def after_update(self, run):
        if not self.waited:
            self.waited = True
            deadline = time.monotonic() + 600
            while not self.go.exists() and time.monotonic() < deadline:
                time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[2:], "mnist", hooks=Gate(sys.argv[1])))

#!/usr/bin/env python
"""The paper's MNIST experiments (Sec. 7, Fig. 3 and Fig. 4a-d) end to end.

    python run_mnist.py --quick                  # the demo: minutes on a CPU
    python run_mnist.py --preset mnist2-ork      # a full experiment
    python run_mnist.py --resume runs/<run>      # continue a stopped run
    python run_mnist.py --help                   # the presets and every option
"""
import sys

from vgsn.run.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:], "mnist"))

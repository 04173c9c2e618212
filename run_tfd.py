#!/usr/bin/env python
"""The paper's TFD experiments (Sec. 7, Fig. 4e-h) end to end.

TFD is not public: put TFD_48x48.mat in --data-dir, or run on a public face
stand-in with --dataset olivetti / --dataset frey (see data/README.md).

    python run_tfd.py --preset tfd-ork --data-dir /path/to/tfd
    python run_tfd.py --quick --dataset olivetti --data-dir /path/to/faces
    python run_tfd.py --help
"""
import sys

from vgsn.run.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:], "tfd"))

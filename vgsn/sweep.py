"""``python -m vgsn.sweep``: the command line of :mod:`vgsn.studies.sweep`."""
import sys

from vgsn.studies.sweep import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m vgsn.reproduce``: the command line of :mod:`vgsn.studies.reproduce`."""
import sys

from vgsn.studies.reproduce import main

if __name__ == "__main__":
    sys.exit(main())

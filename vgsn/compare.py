"""``python -m vgsn.compare``: the command line of :mod:`vgsn.compat2015.compare`."""
import sys

from vgsn.compat2015.compare import main

if __name__ == "__main__":
    sys.exit(main())

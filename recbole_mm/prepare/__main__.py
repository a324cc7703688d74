"""Command line of :mod:`recbole_mm.prepare` (``python -m recbole_mm.prepare --help``)."""

import sys

from recbole_mm.prepare.cli import main

if __name__ == "__main__":
    sys.exit(main())

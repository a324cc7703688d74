"""``python -m recbole_mm.tuning``: the sweep command line (see :mod:`recbole_mm.tuning.cli`)."""

import sys

from recbole_mm.tuning.cli import main

sys.exit(main())

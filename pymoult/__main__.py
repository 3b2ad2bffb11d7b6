"""``python -m pymoult``: the ``pymoult`` command (see :mod:`pymoult.cli`)."""

import sys

from .cli import main

sys.exit(main())

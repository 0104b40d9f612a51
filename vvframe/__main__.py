"""``python -m vvframe`` is the ``vvframe`` command."""

import sys

from .cli import main

sys.exit(main())

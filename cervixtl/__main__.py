"""``python -m cervixtl`` = the ``cervixtl`` command."""

import sys

from .cli import main

sys.exit(main())

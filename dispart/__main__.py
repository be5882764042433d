"""``python -m dispart`` = the ``dispart`` command."""

import sys

from dispart.cli import main

sys.exit(main())

"""``python -m ml``: see ml.cli."""

import sys

from ml.cli import main

sys.exit(main())

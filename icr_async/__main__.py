"""``python -m icr_async``: the same command as ``icr-async``."""

import sys

from .cli import main

sys.exit(main())

"""``python -m icr_async.testing``: run the ICR emulator standalone."""

from __future__ import annotations

import sys

from ._main import main

if __name__ == "__main__":
    sys.exit(main())

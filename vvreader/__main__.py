"""``python -m vvreader``: run the command line."""

from __future__ import annotations

import sys

from vvreader.cli import main

if __name__ == "__main__":
    sys.exit(main())

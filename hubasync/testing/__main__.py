"""`python -m hubasync.testing serve --repo org/name=DIR ...`: a FakeHub in its own process."""

from __future__ import annotations

import sys

from hubasync.testing._cli import main

if __name__ == "__main__":
    sys.exit(main())

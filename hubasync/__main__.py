"""`python -m hubasync` is the `hubasync` command."""

from __future__ import annotations

from hubasync._cli import main

raise SystemExit(main())

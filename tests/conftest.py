from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import blockbuster_ctx


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_blocking_calls_in_hubasync() -> Iterator[None]:
    """Fail any test in which hubasync itself makes a blocking call on the event loop.

    Only frames inside the hubasync package are scanned (the test code and the FakeHub server
    may block); the disk work hubasync does in its worker threads is, by construction, fine.
    """
    with blockbuster_ctx(["hubasync"], excluded_modules=["hubasync.testing"]) as bb:
        # Building a config reads the token file and resolves the cache path once, by design
        # synchronous (it is how the docs build one, even inside async code).
        for func in bb.functions.values():
            func.can_block_in("hubasync/_config.py", {"from_env", "_select_token"})
        yield

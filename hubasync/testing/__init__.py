"""Test doubles shipped with hubasync: a fake Hugging Face Hub on loopback.

    from hubasync.testing import FakeHub, FakeRepo, FakeFile, Fault

    repo = FakeRepo("org/model")
    repo.commit({"config.json": b"{}", "model.safetensors": b"..."})
    async with FakeHub(repos=[repo]) as hub:
        ...  # point a client at hub.endpoint; inspect hub.requests

It speaks the wire protocol of huggingface.co (see docs/hub-protocol.md sections 1-3): repo
info, paginated trees, paths-info, resolve with 307/302 redirects, a pre-signed CDN host, Hub
error codes, and scripted faults. `python -m hubasync.testing serve --repo org/name=DIR` runs
one in its own process.
"""

from __future__ import annotations

from hubasync.testing._faults import Fault as Fault
from hubasync.testing._faults import FaultKind as FaultKind
from hubasync.testing._repo import LFS_SIZE_THRESHOLD as LFS_SIZE_THRESHOLD
from hubasync.testing._repo import LFS_SUFFIXES as LFS_SUFFIXES
from hubasync.testing._repo import Commit as Commit
from hubasync.testing._repo import FakeFile as FakeFile
from hubasync.testing._repo import FakeRepo as FakeRepo
from hubasync.testing._repo import is_auto_lfs as is_auto_lfs
from hubasync.testing._server import DEFAULT_TOKEN as DEFAULT_TOKEN
from hubasync.testing._server import FakeHub as FakeHub
from hubasync.testing._wire import RecordedRequest as RecordedRequest

__all__ = [
    "DEFAULT_TOKEN",
    "LFS_SIZE_THRESHOLD",
    "LFS_SUFFIXES",
    "Commit",
    "FakeFile",
    "FakeHub",
    "FakeRepo",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "is_auto_lfs",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("hubasync.testing._"):
        _obj.__module__ = "hubasync.testing"
del _name, _obj

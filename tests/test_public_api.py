"""The front door: exports, module hygiene, and the guard rails themselves."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from blockbuster import BlockingError

import hubasync
import hubasync.testing
from hubasync import _fileio, _threads

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(hubasync.__path__, "hubasync.")
    if m.name != "hubasync.__main__"
)


def test_all_is_sorted_and_complete() -> None:
    assert hubasync.__all__ == sorted(hubasync.__all__)
    public = {n for n in dir(hubasync) if not n.startswith("_")
              and not isinstance(getattr(hubasync, n), types.ModuleType)}  # submodules
    assert public <= {*hubasync.__all__, "annotations"}
    for name in hubasync.__all__:
        obj = getattr(hubasync, name)
        if isinstance(obj, type):
            assert obj.__module__ == "hubasync", name


def test_official_names_are_exported() -> None:
    for name in ("hf_hub_download", "snapshot_download", "list_repo_files", "list_repo_tree",
                 "RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError",
                 "EntryNotFoundError", "LocalEntryNotFoundError", "OfflineModeIsEnabled",
                 "HubHTTPError", "IntegrityError", "InsufficientDiskSpaceError"):
        assert name in hubasync.__all__
    for name in hubasync.__all__:
        obj = getattr(hubasync, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, hubasync.HubError), name


_IMPORT_EACH = """
import importlib, sys
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "hubasync" or m.startswith("hubasync.")]:
        del sys.modules[loaded]
    importlib.import_module(name)
"""


def test_every_module_imports_first() -> None:
    """Each module imports with no other hubasync module loaded before it (catches cycles)."""
    subprocess.run([sys.executable, "-c", _IMPORT_EACH, *MODULES], check=True, timeout=60)


def test_modules_stay_small() -> None:
    root = Path(hubasync.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert {n: s for n, s in sizes.items() if s > 500} == {}


def test_py_typed_is_shipped() -> None:
    assert (Path(hubasync.__file__).parent / "py.typed").is_file()


@pytest.mark.anyio
async def test_blocking_guard_is_live(tmp_path: Path) -> None:
    """The autouse blockbuster fixture really fails hubasync code that blocks the loop."""
    with pytest.raises(BlockingError):
        _fileio.write_atomic(str(tmp_path / "x"), b"data")
    await _threads.DiskIO(2).run(_fileio.write_atomic, str(tmp_path / "y"), b"data")
    assert (tmp_path / "y").read_bytes() == b"data"

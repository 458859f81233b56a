"""The command line, run as a real subprocess against FakeHub."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubasync.testing import FakeHub, FakeRepo


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    repo = FakeRepo("org/cli")
    repo.commit({"config.json": b'{"a": 1}', "weights.safetensors": b"W" * 300_000,
                 "docs/readme.md": b"# hi"})
    with FakeHub(repos=[repo]).run_in_thread() as fake:
        yield fake


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "hubasync", *args], capture_output=True,
                          text=True, timeout=60, env=full_env, check=False)


def test_download_file_prints_path_last(hub: FakeHub, tmp_path: Path) -> None:
    result = run("download", "org/cli", "config.json", "--cache-dir", str(tmp_path),
                 env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip().splitlines()[-1]
    assert Path(path).read_bytes() == b'{"a": 1}'
    assert path.startswith(str(tmp_path.resolve()))


def test_download_repo_with_patterns_quiet(hub: FakeHub, tmp_path: Path) -> None:
    result = run("download", "org/cli", "--include", "*.json", "docs/*", "--exclude", "*.md",
                 "--cache-dir", str(tmp_path), "--quiet", env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    folder = Path(result.stdout.strip())
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["config.json"]


def test_local_dir_and_python_m_and_progress_lines(hub: FakeHub, tmp_path: Path) -> None:
    result = run("download", "org/cli", "--local-dir", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "c"), env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str((tmp_path / "out").resolve())
    assert "\x1b[" not in result.stderr + result.stdout  # piped: no escape codes
    assert "finished:" in result.stderr
    assert (tmp_path / "out" / "weights.safetensors").stat().st_size == 300_000


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["download", "org/missing", "x.json"], "RepositoryNotFoundError"),
        (["download", "org/cli", "nope.json"], "RemoteEntryNotFoundError"),
        (["download", "org/cli", "--revision", "v404"], "RevisionNotFoundError"),
        (["download", "bad//id"], "InvalidRepoIdError"),
    ],
)
def test_errors_are_one_line(hub: FakeHub, tmp_path: Path, args: list[str],
                             fragment: str) -> None:
    result = run(*args, "--cache-dir", str(tmp_path), env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode != 0
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_offline_without_cache_is_a_clear_error(tmp_path: Path) -> None:
    result = run("download", "org/cli", "config.json", "--cache-dir", str(tmp_path),
                 env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert "LocalEntryNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exit_code() -> None:
    result = run("download")
    assert result.returncode == 2


def test_demo_runs_without_network(tmp_path: Path) -> None:
    result = run("demo", "--size-mib", "4", env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) == 4
    assert sum(p.stat().st_size for p in shards) == 4 * 1024 * 1024

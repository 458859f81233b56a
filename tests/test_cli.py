"""The command line, run as a real subprocess against FakeHub."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
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
    assert "finished files=3" in result.stderr
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


# -- progress and output modes --------------------------------------------------------------------

ESC = "\x1b"


def test_piped_download_logs_progress_fields_without_escape_codes(hub: FakeHub,
                                                                  tmp_path: Path) -> None:
    result = run("download", "org/cli", "--cache-dir", str(tmp_path),
                 env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    assert ESC not in result.stderr + result.stdout
    assert "plan repo=org/cli revision=main" in result.stderr
    assert "done path=weights.safetensors size=300.0 kB duration=" in result.stderr
    assert "finished files=3 downloaded_files=3" in result.stderr
    assert result.stdout.splitlines()[-1].endswith(hub.repos["org/cli"].try_resolve("main")
                                                   or "?")


@pytest.mark.parametrize("mode", ["bars", "json", "none"])
def test_progress_modes_when_piped(hub: FakeHub, tmp_path: Path, mode: str) -> None:
    result = run("download", "org/cli", "--progress", mode, "--cache-dir", str(tmp_path),
                 env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    assert ESC not in result.stderr + result.stdout
    assert Path(result.stdout.strip()).is_dir()
    if mode == "bars":  # not a terminal: rich draws no animation, only the summary
        assert "✔ org/cli@main" in result.stderr and "3 files, 300.0 kB" in result.stderr
    elif mode == "json":
        types = [msgspec.json.decode(line)["type"] for line in result.stderr.splitlines()]
        assert types[0] == "plan_ready" and types[-1] == "run_done"
    else:
        assert result.stderr == ""


def test_disable_progress_bars_env_silences_auto(hub: FakeHub, tmp_path: Path) -> None:
    result = run("download", "org/cli", "--cache-dir", str(tmp_path),
                 env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_download_json_result(hub: FakeHub, tmp_path: Path) -> None:
    args = ("download", "org/cli", "--cache-dir", str(tmp_path), "--json", "--quiet")
    first = run(*args, env={"HF_ENDPOINT": hub.endpoint})
    assert first.returncode == 0, first.stderr
    result = msgspec.json.decode(first.stdout)
    commit = hub.repos["org/cli"].try_resolve("main")
    assert result == {
        "path": result["path"], "repo_id": "org/cli", "repo_type": "model",
        "revision": "main", "commit": commit, "files": 3, "bytes": 300_012,
        "files_from_cache": 0, "bytes_downloaded": 300_012,
    }
    assert sum(p.stat().st_size for p in Path(result["path"]).rglob("*")
               if p.is_file()) == 300_012
    assert commit is not None
    again = run(*args[:-2], "--revision", commit, "--json",
                env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr
    cached = msgspec.json.decode(again.stdout)
    assert (cached["files"], cached["bytes"], cached["commit"]) == (3, 300_012, commit)
    assert cached["bytes_downloaded"] == 0


def test_single_file_json_result(hub: FakeHub, tmp_path: Path) -> None:
    result = run("download", "org/cli", "weights.safetensors", "--cache-dir", str(tmp_path),
                 "--json", env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    decoded = msgspec.json.decode(result.stdout)
    assert (decoded["files"], decoded["bytes"]) == (1, 300_000)
    assert decoded["path"].endswith("weights.safetensors")


# -- ls and info ----------------------------------------------------------------------------------


def test_ls_lists_sizes_and_lfs(hub: FakeHub) -> None:
    result = run("ls", "org/cli", env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    assert ESC not in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [["8", "B", "config.json"], ["4", "B", "docs/readme.md"],
                    ["300.0", "kB", "LFS", "weights.safetensors"]]
    assert result.stderr.strip() == "3 files, 300.0 kB (1 LFS)"


def test_ls_json(hub: FakeHub) -> None:
    result = run("ls", "org/cli", "--json", "--revision", "main",
                 env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    files = msgspec.json.decode(result.stdout)
    by_path = {f["path"]: f for f in files}
    assert by_path["weights.safetensors"]["size"] == 300_000
    assert by_path["weights.safetensors"]["lfs"]["sha256"]
    assert by_path["config.json"]["lfs"] is None


def test_info(hub: FakeHub) -> None:
    commit = hub.repos["org/cli"].try_resolve("main")
    result = run("info", "org/cli", env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(None, 1) if not line.startswith(("last ", "total "))
                  else line.rsplit("  ", 1) for line in result.stdout.splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["commit"] == commit
    assert fields["repo"] == "org/cli (model)"
    assert fields["private"] == "no" and fields["gated"] == "no"
    assert fields["files"] == "3 (1 LFS)"
    assert fields["total size"] == "300.0 kB (300,012 bytes)"
    assert fields["last modified"] != "-"
    as_json = msgspec.json.decode(run("info", "org/cli", "--json",
                                      env={"HF_ENDPOINT": hub.endpoint}).stdout)
    assert (as_json["commit"], as_json["total_bytes"], as_json["files"]) == (commit, 300_012, 3)


# -- errors and exit codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["ls", "org/missing"], 1, "RepositoryNotFoundError"),
        (["info", "org/cli", "--revision", "nope"], 1, "RevisionNotFoundError"),
        (["ls", "bad//id"], 2, "InvalidRepoIdError"),
        (["download", "org/cli", "--max-workers", "0"], 2, "--max-workers"),
        (["download", "org/cli", "--progress", "rainbow"], 2, "invalid choice"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_exit_codes(hub: FakeHub, tmp_path: Path, args: list[str], code: int,
                    fragment: str) -> None:
    result = run(*args, env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path)})
    assert result.returncode == code
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_anywhere_shows_the_traceback(hub: FakeHub, tmp_path: Path, where: str) -> None:
    args = ["ls", "org/missing"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    result = run(*args, env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: RepositoryNotFoundError")


def test_network_errors_are_one_line() -> None:
    result = run("info", "org/cli", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")


def test_ctrl_c_exits_130_and_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(TMPDIR=str(tmp_path), HF_PROGRESS_MODE="log")
    # capped at 16 MiB/s, the 256 MiB download lasts 16 s: the SIGINT always lands mid-way
    # (SIGINT as a terminal delivers it: a job started in the background of a script inherits
    # it ignored, and then neither Python nor asyncio installs a handler for it)
    child = subprocess.Popen([sys.executable, "-m", "hubasync", "demo", "--size-mib", "256",
                              "--max-bandwidth", "16M"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stderr is not None
    for line in child.stderr:
        if "start path=" in line:
            break
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert err.splitlines()[-1] == "interrupted"
    assert "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize(("text", "rate"), [("2048", 2048), ("500K", 500 * 1024),
                                            ("20M", 20 * 1024**2), ("1.5g", int(1.5 * 1024**3)),
                                            ("8MB/s", 8 * 1024**2)])
def test_rates(text: str, rate: int) -> None:
    from hubasync._cli import _rate

    assert _rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "10X", "100", "-5M", "nan"])
def test_bad_rates_are_usage_errors(text: str) -> None:
    result = run("demo", "--max-bandwidth", text)
    assert result.returncode == 2
    assert "--max-bandwidth" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_under_a_bandwidth_cap_takes_its_time(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(TMPDIR=str(tmp_path))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "hubasync", "demo", "--size-mib", "4",
                             "--max-bandwidth", "2M", "--quiet"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 1.0  # 4 MiB at 2 MiB/s, after a first burst of 2 MiB

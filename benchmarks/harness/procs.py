"""Child processes: a clean environment, and one measured run (wall, peak RSS, CPU) per child.

Each participant runs in its own process so that its memory and CPU are its own: `os.wait4`
returns the rusage of exactly that child (its own plus that of any children it waited for).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    import resource
    from collections.abc import Callable, Mapping, Sequence

BENCH_DIR: Final = Path(__file__).resolve().parent.parent
REPO_ROOT: Final = BENCH_DIR.parent
POLL_SECONDS: Final = 0.005
_DROPPED_ENV: Final = (
    "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE",
    "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_ENABLE_HF_TRANSFER", "HF_XET_HIGH_PERFORMANCE",
    "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_SYMLINKS", "TOKIO_WORKER_THREADS",
)


def child_env(hf_home: Path, hubasync_src: Path = REPO_ROOT,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: no HF settings from the caller, no progress bars, the
    harness and hubasync (from `hubasync_src`, the checkout by default) importable."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    paths = [str(BENCH_DIR), str(hubasync_src), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update({
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class ChildResult:
    """One finished child: how it ended and what it cost."""

    returncode: int
    wall_s: float
    cpu_s: float
    max_rss_kib: int
    stdout: str
    stderr: str
    killed: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.killed

    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""


def run_child(
    cmd: Sequence[str], env: Mapping[str, str], *, timeout: float,
    kill_when: Callable[[], bool] | None = None,
) -> ChildResult:  # fmt: skip
    """Run `cmd` to its end (or SIGKILL it once `kill_when()` is true); measure it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=dict(env), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        if kill_when is None:
            status, usage, killed = _wait(proc, timeout)
        else:
            status, usage, killed = _poll(proc, timeout, kill_when)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        return ChildResult(
            returncode=proc.returncode, wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
            max_rss_kib=usage.ru_maxrss, stdout=_read(out), stderr=_read(err), killed=killed,
        )


_Waited: TypeAlias = "tuple[int, resource.struct_rusage, bool]"


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> _Waited:
    """Block in wait4 (precise wall time); a timer kills the child if it overstays."""
    timer = threading.Timer(timeout, _kill, args=(proc.pid,))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    return status, usage, False


def _poll(
    proc: subprocess.Popen[bytes], timeout: float, kill_when: Callable[[], bool]
) -> _Waited:
    """Poll the child and `kill_when()`; killed is True only when `kill_when` fired."""
    deadline = time.monotonic() + timeout
    killed = signalled = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage, killed
        if not signalled and (kill_when() or time.monotonic() > deadline):
            killed = time.monotonic() <= deadline
            _kill(proc.pid)
            signalled = True
        time.sleep(POLL_SECONDS)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def bytes_on_disk(root: Path) -> int:
    """Bytes actually written under `root`. A temp file written at offsets may be sparse, or
    have its blocks reserved ahead (hubasync does): the data regions the file system reports
    (`SEEK_DATA`/`SEEK_HOLE`) count, not the length or the blocks. Where it cannot tell,
    allocated blocks capped by the length."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    total += _written(path, st)
            except OSError:  # renamed or removed meanwhile
                continue
    return total


def _written(path: str, st: os.stat_result) -> int:
    if not hasattr(os, "SEEK_DATA"):
        return min(st.st_size, st.st_blocks * 512)
    fd = os.open(path, os.O_RDONLY)
    try:
        total = offset = 0
        while offset < st.st_size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:  # ENXIO: no data after offset
                if exc.errno == errno.ENXIO:
                    break
                return min(st.st_size, st.st_blocks * 512)
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            total += min(offset, st.st_size) - start
        return total
    finally:
        os.close(fd)

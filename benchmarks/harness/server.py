"""The parent's handle on the benchmark server child (`harness.hubserver`)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Self

from harness.procs import python_module

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path
    from types import TracebackType

_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServerStats:
    """What the server saw since the last `clear()`."""

    requests: int
    bytes: int
    by_server: dict[str, int] = field(default_factory=dict)
    by_method: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)  # fired, while faults are on
    early_after_429: int = 0  # see harness.hubserver.early_after_429

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerStats:
        return cls(requests=int(data["requests"]), bytes=int(data["bytes"]),
                   by_server=dict(data["by_server"]), by_method=dict(data["by_method"]),
                   by_status=dict(data["by_status"]), faults=dict(data.get("faults", {})),
                   early_after_429=int(data.get("early_after_429", 0)))


class HubServer:
    """Start with `with HubServer(dirs, env) as server:`; `clear()` and `stats()` around runs."""

    def __init__(self, dataset_dirs: Sequence[Path], env: Mapping[str, str]) -> None:
        self._args = [a for d in dataset_dirs for a in ("--repo", str(d))]
        self._env = dict(env)
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self.endpoint = ""
        self.cdn_endpoint = ""

    def __enter__(self) -> Self:
        self._stderr = tempfile.TemporaryFile("w+")
        self._proc = subprocess.Popen(
            python_module("harness.hubserver", *self._args), env=self._env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        ready = self._read_line()
        self.endpoint, self.cdn_endpoint = ready["endpoint"], ready["cdn_endpoint"]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc)
        if self._stderr is not None:
            self._stderr.close()

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def clear(self) -> None:
        self._command("clear")

    def stats(self) -> ServerStats:
        return ServerStats.from_json(self._command("stats"))

    @contextlib.contextmanager
    def faults(self) -> Iterator[None]:
        """Issue 3's fault mix while the block runs (see harness.hubserver)."""
        self._command("faults")
        try:
            yield
        finally:
            self._command("calm")

    def _command(self, command: str) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._read_line()

    def _read_line(self) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark server exited:\n{self._error_output()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"benchmark server: {answer['error']}")
        return answer

    def _error_output(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]


def _stop(proc: subprocess.Popen[str]) -> None:
    """EOF on stdin asks it to stop; SIGTERM, then SIGKILL, if it does not."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()

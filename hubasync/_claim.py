"""Who may write a resumable partial download: an owner file created with O_EXCL.

The official lock (`.locks/<repo>/<etag>.lock`, flock) is taken around every download, but
correctness never depends on it: flock is a no-op on some network filesystems. A process that
wants to resume a partial download first creates its owner file with ``O_CREAT | O_EXCL`` (atomic
on local filesystems and on NFSv3+), holding who it is. Only the owner writes the partial download
and its state; a process that finds a live owner uses a process-unique temp instead (no resume).

An owner killed by SIGKILL leaves its owner file behind. It is *stale*, and may be taken over,
when the owner is provably gone:
- same machine (hostname and pid namespace) and same boot: its pid no longer runs, or runs a
  process started at another time (pid reuse), or is a zombie; or it is this very process and
  the claim is not one of the claims this process holds;
- same machine, another boot: the machine restarted since;
- another machine (shared filesystem): no heartbeat (the state file is rewritten every 50 ms
  while bytes arrive) for `FOREIGN_TTL` seconds.
A stale owner file is taken over by renaming it away (one process wins the rename), checking that
the file renamed is the one judged stale (else it is put back), then creating a new one. An owner
checks that its claim still holds before each state write and before the commit, and gives up
the partial download (falling back to a unique temp) if it was taken over.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Container

FOREIGN_TTL: Final = 1800.0
#: An owner file that cannot be read yet may be half-written: trust it this long.
UNREADABLE_GRACE: Final = 60.0

_held: set[str] = set()  # tokens of the claims this process holds
_held_lock = threading.Lock()


class Owner(msgspec.Struct, frozen=True, kw_only=True):
    host: str  # hostname, plus the pid namespace where there is one
    boot: str
    pid: int
    start: str | None  # the process's start time (Linux), to see through pid reuse
    token: str


_DECODER: Final = msgspec.json.Decoder(Owner)


@functools.cache
def host_id() -> str:
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}|{namespace}"


@functools.cache
def boot_id() -> str:
    """Changes when the machine restarts (Linux: the kernel's boot id; else the boot time)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        pass
    clock = getattr(time, "CLOCK_MONOTONIC", None)  # includes sleep where clock_gettime exists
    uptime = time.clock_gettime(clock) if clock is not None else time.monotonic()
    return f"~{round((time.time() - uptime) / 60)}"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None without such a process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_start(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def is_alive(pid: int, start: str | None) -> bool:
    """Whether `pid` still runs the process that started at `start` (best effort: True when it
    cannot be told, which only costs a resume, never correctness)."""
    if os.path.isdir("/proc/self"):
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return start is None or len(fields) <= 19 or fields[19] == start
    if os.name == "nt":
        return True  # os.kill would end the process there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def is_stale(claim: Owner | None, mine: Owner, *, age: float, held: Container[str],
             alive: Callable[[int, str | None], bool]) -> bool:
    """Pure decision: may the owner file holding `claim` (None: unreadable) be taken over?"""
    if claim is None:
        return age > UNREADABLE_GRACE
    if claim.host != mine.host:
        return age > FOREIGN_TTL
    if claim.boot != mine.boot:
        return True
    if claim.pid == mine.pid and claim.start == mine.start:
        return claim.token not in held
    return not alive(claim.pid, claim.start)


def _new_owner() -> Owner:
    pid = os.getpid()
    return Owner(host=host_id(), boot=boot_id(), pid=pid, start=process_start(pid),
                 token=secrets.token_hex(8))


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(4096)
    except OSError:
        return None


def _decode(raw: bytes | None) -> Owner | None:
    try:
        return None if raw is None else _DECODER.decode(raw)
    except msgspec.DecodeError:
        return None


def _age(*paths: str) -> float:
    """Seconds since the most recent change of any of `paths` (the heartbeat)."""
    mtimes = []
    for path in paths:
        with contextlib.suppress(OSError):
            mtimes.append(os.stat(path).st_mtime)
    return time.time() - max(mtimes, default=0.0)


def _create(path: str, data: bytes) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return True


def _take_over(path: str, seen: bytes | None) -> bool:
    """Remove the stale owner file at `path`, unless someone replaced it since it was read."""
    moved = f"{path}.{secrets.token_hex(4)}.stale"
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return True  # someone else removed it: try to create ours
    if _read(moved) == seen:
        os.unlink(moved)
        return True
    with contextlib.suppress(OSError):  # a fresh claim: put it back (unless a newer one exists)
        os.link(moved, path)
    os.unlink(moved)
    return False


def claim(path: str, heartbeat: str) -> Owner | None:
    """Become the owner at `path` (the file `heartbeat` shows a live owner's progress);
    None when another live process owns it."""
    mine = _new_owner()
    data = msgspec.json.encode(mine)
    for _ in range(2):
        if _create(path, data):
            with _held_lock:
                _held.add(mine.token)
            return mine
        seen = _read(path)
        if seen is None and not os.path.exists(path):
            continue  # released meanwhile
        with _held_lock:
            held = set(_held)
        if not is_stale(_decode(seen), mine, age=_age(path, heartbeat), held=held,
                        alive=is_alive):
            return None
        if not _take_over(path, seen):
            return None
    return None


def holds(path: str, owner: Owner) -> bool:
    found = _decode(_read(path))
    return found is not None and found.token == owner.token


def release(path: str, owner: Owner) -> None:
    """Give the claim up (only if it is still ours)."""
    with _held_lock:
        _held.discard(owner.token)
    if holds(path, owner):
        with contextlib.suppress(OSError):
            os.unlink(path)

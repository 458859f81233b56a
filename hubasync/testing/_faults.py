"""Scripted faults: what to break, on which requests, how many times.

A `Fault` is an immutable description. FakeHub keeps them in a `FaultBook`, which picks, for
each response about to be sent, the first fault (in insertion order) that matches the request,
applies to that response and wins its probability roll; only then is its `times` counted down.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Fault", "FaultBook", "FaultKind", "ServerName"]

FaultKind: TypeAlias = Literal[
    "status", "drop", "stall", "corrupt", "lie_size", "ignore_range", "wrong_range"
]
ServerName: TypeAlias = Literal["hub", "cdn"]
_BODY_KINDS = frozenset({"drop", "stall", "corrupt"})
_RANGE_KINDS = frozenset({"ignore_range", "wrong_range"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """What a fault needs to know about a response to decide whether it applies."""

    server: ServerName
    method: str
    path: str  # decoded
    status: int
    has_body: bool
    ranged: bool
    has_linked_size: bool


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour.

    Kinds:
        status        answer `status` with `headers` and a JSON error body (429, 503, ...).
        drop          send the headers and `after_bytes` bytes of the body, then cut the
                      connection.
        stall         send the headers and `after_bytes` bytes, then hang for `stall_seconds`
                      (the rest follows unless the server shuts down first).
        corrupt       right length, but the byte at body offset `after_bytes` is flipped.
        lie_size      HEAD and redirect responses report X-Linked-Size (else Content-Length)
                      off by `after_bytes` (+1 when 0).
        ignore_range  a Range request is answered 200 with the whole body.
        wrong_range   a Range request is answered 206 with a range shifted by `after_bytes` (+1 when
                      0), and a Content-Range that says so (so it does not match the one asked for).

    Matching: `server` ("hub", "cdn" or "any"), `method` (None = any) and `path_glob` (fnmatch on
    the percent-decoded path, `*` crosses `/`). Body kinds apply only to 2xx responses with a body,
    range kinds only to 206 answers, lie_size only to HEAD 2xx or responses with X-Linked-Size.
    `times=None` fires forever; `probability` is rolled with the hub's seeded RNG.
    """

    kind: FaultKind
    _: KW_ONLY
    server: ServerName | Literal["any"] = "any"
    method: str | None = None
    path_glob: str = "*"
    times: int | None = None
    probability: float = 1.0
    status: int = 429
    headers: Mapping[str, str] = field(default_factory=dict)
    after_bytes: int = 0
    stall_seconds: float = 10.0
    message: str = "Injected fault"

    @classmethod
    def rate_limit(cls, retry_after: int = 1, **match: Any) -> Fault:
        """429 Too Many Requests with `Retry-After: <retry_after>`."""
        headers = {"Retry-After": str(retry_after), **match.pop("headers", {})}
        return cls("status", status=429, headers=headers, message="Too Many Requests", **match)

    @classmethod
    def server_error(cls, status: int = 503, **match: Any) -> Fault:
        """A 5xx answer."""
        return cls("status", status=status, message="Service Unavailable", **match)

    @classmethod
    def drop(cls, after_bytes: int = 0, **match: Any) -> Fault:
        """Abort the connection after `after_bytes` body bytes."""
        return cls("drop", after_bytes=after_bytes, **match)

    @classmethod
    def stall(cls, after_bytes: int = 0, seconds: float = 10.0, **match: Any) -> Fault:
        """Hang for `seconds` after `after_bytes` body bytes."""
        return cls("stall", after_bytes=after_bytes, stall_seconds=seconds, **match)

    @property
    def shift(self) -> int:
        """The offset used by lie_size and wrong_range (never 0)."""
        return self.after_bytes or 1

    def matches(self, target: Target) -> bool:
        """Request filter and applicability to this response (no roll, no countdown)."""
        if self.server not in ("any", target.server):
            return False
        if self.method is not None and self.method.upper() != target.method:
            return False
        if not fnmatch.fnmatchcase(target.path, self.path_glob):
            return False
        return self._applies(target)

    def _applies(self, target: Target) -> bool:
        if self.kind in _BODY_KINDS:
            return 200 <= target.status < 300 and target.has_body
        if self.kind in _RANGE_KINDS:
            return target.ranged and target.status == 206
        if self.kind == "lie_size":
            head_ok = target.method == "HEAD" and 200 <= target.status < 300
            return head_ok or target.has_linked_size
        return True


class _Armed:
    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times


class FaultBook:
    """The hub's ordered, thread-safe list of active faults."""

    def __init__(self, seed: int) -> None:
        self._armed: list[_Armed] = []
        self._fired: dict[int, tuple[Fault, int]] = {}
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._armed.append(_Armed(fault))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def hits(self, fault: Fault) -> int:
        """How many times `fault` has fired (by identity)."""
        with self._lock:
            return self._fired.get(id(fault), (fault, 0))[1]

    def pick(self, target: Target) -> Fault | None:
        """The fault that fires for this response, if any (counts it down)."""
        with self._lock:
            for armed in self._armed:
                if armed.remaining == 0 or not armed.fault.matches(target):
                    continue
                if armed.fault.probability < 1.0 and (
                    self._random.random() >= armed.fault.probability
                ):
                    continue
                if armed.remaining is not None:
                    armed.remaining -= 1
                fired = self._fired.get(id(armed.fault), (armed.fault, 0))[1] + 1
                self._fired[id(armed.fault)] = (armed.fault, fired)
                return armed.fault
        return None

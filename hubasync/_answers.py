"""What a download request asks and what its answer may be: Range headers, strict checks of
status, Content-Range and announced size, and the shared, renewable source URL of a file.

A 200 answered to a Range request is read from the byte the range stands at (what comes before
is skipped, so an in-order hash stays valid); a Content-Range that does not match is refused
before any byte is written; a size that disagrees with the expected one is an IntegrityError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio

from hubasync._exceptions import IntegrityError, ReadError
from hubasync._urls import origin

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from hubasync._models import RemoteFile
    from hubasync._spans import Span
    from hubasync._transport import StreamResponse

_SMALL_BODY: Final = 64 * 1024


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """`bytes a-b/total` -> (a, b, total or None)."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, _, total = value[6:].partition("/")
        first, _, last = span.partition("-")
        return int(first), int(last), (None if total in ("", "*") else int(total))
    except ValueError:
        return None


def announced_total(resp: StreamResponse) -> int | None:
    """The full size of the file as this answer states it, when it states one."""
    if resp.status == 206:
        got = parse_content_range(resp.headers.get("Content-Range"))
        return None if got is None else got[2]
    length = resp.headers.get("Content-Length")
    if resp.status == 200 and not resp.encoded and length and length.isdigit():
        return int(length)
    return None


def size_mismatch(remote: RemoteFile, actual: int | None) -> IntegrityError:
    return IntegrityError(
        f"{remote.path}: the server has {actual if actual is not None else 'another'} bytes, "
        f"expected {remote.size}", path=remote.path, expected=str(remote.size),
        actual=None if actual is None else str(actual),
    )


def range_headers(remote: RemoteFile, span: Span) -> dict[str, str]:
    """No header for a whole file from its start; else `Range` (and no compression)."""
    if span.next_byte == 0 and (span.end is None or span.end == remote.size):
        return {}
    last = "" if span.end is None else str(span.end - 1)
    return {"Range": f"bytes={span.next_byte}-{last}", "Accept-Encoding": "identity"}


def check_answer(remote: RemoteFile, resp: StreamResponse, span: Span,
                 ranged: bool) -> int | None:
    """Refuse an answer that cannot be used. None: the body is the range asked for; an int:
    the body is the whole file (a 200 to a Range request), skip that many bytes of it."""
    total = announced_total(resp)
    if total is not None and remote.size is not None and total != remote.size:
        raise size_mismatch(remote, total)
    if resp.status == 200:
        return span.next_byte if ranged else None
    if not ranged or resp.status != 206:
        raise ReadError(f"{remote.path}: unexpected status {resp.status}")
    got = parse_content_range(resp.headers.get("Content-Range"))
    want_last = None if span.end is None else span.end - 1
    if got is None or got[0] != span.next_byte or (
            want_last is not None and got[1] != want_last):
        raise ReadError(f"{remote.path}: Content-Range {got} does not match the request")
    return None


async def drain(resp: StreamResponse) -> None:
    """Read a small redirect body, so the connection goes back to the pool."""
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) <= _SMALL_BODY:
        await resp.read_all()


class Source:
    """The URL a file's bytes come from, shared by its ranges.

    A URL that has answered (or came from the caller, possibly aged) may expire: a refusal then
    renews it with one HEAD, shared by every range that saw it. A URL just renewed that is refused
    before it ever answered is refused for good.
    """

    __slots__ = ("_lock", "may_expire", "url")

    def __init__(self, url: str, *, may_expire: bool) -> None:
        self.url = url
        self.may_expire = may_expire
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"<Source may_expire={self.may_expire}>"

    def answered(self, started: str, url: str, home: str) -> None:
        """`url` answered 2xx to a request that started at `started`; a redirect to another
        host than `home` is kept for the next requests (unless the source was renewed since)."""
        if started != self.url:
            return
        if url == started:
            self.may_expire = True
        elif origin(url) != origin(home):
            self.url, self.may_expire = url, True

    async def renew(self, failed: str, locate: Callable[[], Awaitable[str]]) -> bool:
        """After `failed` was refused: False if the refusal is final, else True (renewed)."""
        async with self._lock:
            if self.url != failed:
                return True  # another range renewed it meanwhile
            if not self.may_expire:
                return False
            self.url, self.may_expire = await locate(), False
            return True

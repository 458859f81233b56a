"""HTTP/1.1 as text, for the lean body client: the GET it sends and the head it reads.

Pure functions. Strict on purpose: a request that is not plain ASCII, or an answer framed in a
way the client does not read (chunked, compressed), raises :class:`Unframed` so the caller can
ask through a full client instead.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from hubasync._exceptions import ReadError
from hubasync._urls import redact_url

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hubasync._exceptions import TransportError

_NO_BODY: Final = frozenset({204, 304})
_PLAIN: Final = re.compile(r"[\x21-\x7e]*")  # printable ASCII without space
_PLAIN_OR_SPACE: Final = re.compile(r"[\x20-\x7e]*")


def labelled(exc: TransportError, url: str) -> TransportError:
    """`exc` again, naming the (redacted) URL it happened on."""
    shown = redact_url(url)
    return type(exc)(f"{exc} ({shown})", url=shown)


class Unframed(Exception):
    """This request or answer is not one this client handles; ask through a full client."""


def request_bytes(url: str, headers: Mapping[str, str]) -> bytes:
    """The GET for `url` exactly as given (no re-quoting: signed URLs break if touched)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise Unframed(f"unsupported URL form ({parts.scheme})")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not _plain(target, spaces=False) or not _plain(parts.netloc, spaces=False):
        raise Unframed("URL is not plain ASCII")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
    for name, value in headers.items():
        if not _plain(name, spaces=False) or not _plain(value, spaces=True) or ":" in name:
            raise Unframed("header is not plain ASCII")
        if name.lower() not in ("host", "accept-encoding", "connection"):
            lines.append(f"{name}: {value}")
    lines.append("Accept-Encoding: identity")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _plain(text: str, *, spaces: bool) -> bool:
    return (_PLAIN_OR_SPACE if spaces else _PLAIN).fullmatch(text) is not None


class Head:
    """A parsed status line and headers."""

    __slots__ = ("headers", "keep_alive", "length", "status")

    def __init__(self, status: int, headers: CIMultiDictProxy[str], length: int | None,
                 keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.length = length  # None: until the connection ends
        self.keep_alive = keep_alive


def is_encoded(headers: Mapping[str, str]) -> bool:
    """The body is compressed (or otherwise content-encoded), not the file's own bytes."""
    return headers.get("Content-Encoding", "identity").lower() not in ("", "identity")


def parse_head(raw: bytes) -> Head:
    """Status line and headers (without the blank line); ReadError if malformed, Unframed if
    the body is framed in a way this client does not read."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise ReadError(f"malformed HTTP status line {lines[0][:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise ReadError(f"malformed HTTP header line {line[:80]!r}")
        headers.add(name, value.strip())
    status = int(code)
    if "Transfer-Encoding" in headers:
        raise Unframed("chunked body")
    if is_encoded(headers):
        raise Unframed("encoded body")
    length: int | None
    lengths = set(headers.getall("Content-Length", []))
    if status in _NO_BODY or 100 <= status < 200:
        length = 0
    elif not lengths:
        length = None
    elif len(lengths) == 1 and (value := lengths.pop()).isdigit():
        length = int(value)
    else:
        raise ReadError("malformed Content-Length")
    connection = headers.get("Connection", "").lower()
    keep_alive = version == "HTTP/1.1" and "close" not in connection and length is not None
    return Head(status, CIMultiDictProxy(headers), length, keep_alive)

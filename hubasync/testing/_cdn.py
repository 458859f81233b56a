"""The CDN host: pre-signed, expiring LFS blob URLs, with S3/CloudFront-style answers.

The signature covers the path and the query *as sent* (everything before `&sig=`), so a client
that re-encodes the query (e.g. yarl turning `%27` into `'`) is refused, like a token sent along
with a pre-signed URL is.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, quote

from hubasync.testing._wire import Reply, content_reply

if TYPE_CHECKING:
    from aiohttp import web

    from hubasync.testing._repo import FakeFile

__all__ = ["blob_path", "cdn_reply", "sign_url"]

_SIG: Final = "&sig="
_TWO_AUTHS: Final = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query"
    " string parameter or the Authorization header should be specified"
)


def blob_path(sha256: str) -> str:
    return f"/repos/{sha256[:2]}/{sha256}"


def _signature(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def sign_url(secret: bytes, cdn_endpoint: str, sha256: str, filename: str, expires: int) -> str:
    """An absolute pre-signed URL for the blob `sha256`, valid until `expires` (epoch seconds)."""
    name = filename.rsplit("/", 1)[-1]
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c != '"' else "_" for c in name)
    disposition = f"inline; filename*=UTF-8''{quote(name, safe='')}; filename=\"{ascii_name}\";"
    path = blob_path(sha256)
    query = f"response-content-disposition={quote(disposition, safe='')}&expires={expires}"
    return f"{cdn_endpoint}{path}?{query}{_SIG}{_signature(secret, f'{path}?{query}')}"


def _xml_error(status: int, code: str, message: str) -> Reply:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    return Reply(status=status, headers={"Content-Type": "application/xml"}, body=body)


def _check(secret: bytes, raw_path: str, query: str, now: float) -> Reply | None:
    """None when the URL is validly signed and not expired, else the 403 to send."""
    signed, sep, signature = query.rpartition(_SIG)
    if not sep or not hmac.compare_digest(_signature(secret, f"{raw_path}?{signed}"), signature):
        return _xml_error(403, "AccessDenied", "Access Denied")
    expires = dict(parse_qsl(signed)).get("expires", "")
    if not expires.isdigit() or now >= int(expires):
        return _xml_error(403, "AccessDenied", "Request has expired")
    return None


def cdn_reply(
    request: web.BaseRequest, secret: bytes, now: float, find: FakeFile | None, sha256: str
) -> Reply:
    """The answer to a CDN request for the blob `sha256` (`find` is that blob, if it exists)."""
    raw_path, _, query = request.raw_path.partition("?")
    if request.method not in ("GET", "HEAD"):
        return _xml_error(405, "MethodNotAllowed", "The specified method is not allowed")
    if "Authorization" in request.headers:
        return _xml_error(400, "InvalidArgument", _TWO_AUTHS)
    denied = _check(secret, raw_path, query, now)
    if denied is not None:
        return denied
    if find is None or raw_path != blob_path(sha256):
        return _xml_error(404, "NoSuchKey", "The specified key does not exist.")
    disposition = dict(parse_qsl(query)).get("response-content-disposition")
    headers = {
        "ETag": f'"{hashlib.md5(sha256.encode(), usedforsecurity=False).hexdigest()}"',
        "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
        "X-Cache": "Hit from cloudfront",
    }
    if disposition:
        headers["Content-Disposition"] = disposition
    reply = content_reply(request, find, headers)
    if reply.status != 416:
        return reply
    invalid = _xml_error(416, "InvalidRange", "The requested range is not satisfiable")
    invalid.headers["Content-Range"] = reply.headers["Content-Range"]
    return invalid


def sha_of(raw_path: str) -> str:
    """The blob id a CDN path names (its last segment)."""
    return raw_path.partition("?")[0].rsplit("/", 1)[-1]

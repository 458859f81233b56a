"""URL pieces the transport layers share: origins (who may see the token), host keys (who a
rate limit pauses) and redaction (signed URLs carry credentials in their query)."""

from __future__ import annotations

from urllib.parse import urlsplit

Origin = tuple[str, str, int]


def origin(url: str) -> Origin:
    """(scheme, host, port) of `url`, lower-cased, with the scheme's default port filled in."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def host_key(url: str) -> str:
    _, host, port = origin(url)
    return f"{host}:{port}"


def redact_url(url: str) -> str:
    """Drop the query (signed URLs carry credentials) for messages and logs."""
    parts = urlsplit(url)
    return parts._replace(query="", fragment="").geturl() + ("?…" if parts.query else "")

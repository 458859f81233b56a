"""The Hub's same-host redirect for regular files, learned once and reused.

A regular (git) file's ``GET /{repo}/resolve/{commit}/{path}`` answers 307 to
``/api/resolve-cache/{type}s/{repo}/{commit}/{path}?...etag=...`` on the same host (hub-protocol
§2.2), so every such file costs two requests. Once one answer of a commit has shown that shape,
the other regular files of that commit go straight to theirs: one request each.

Safe by construction: a guess is only made from an answer seen for the same commit, it is only
ever a URL on the Hub's own origin (so a token never goes anywhere new), the bytes are checked
against the git-sha1 etag as always, and the first guess that is not answered cleanly turns
guessing off for good (the resolve URL is used, as without shortcuts).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

_GIT_ETAG_LEN: Final = 40
_AT_COMMIT: Final = re.compile(r"/[0-9a-f]{40}/.")  # a tail that starts at a commit hash


class Shortcuts:
    """Learned `resolve` -> `resolve-cache` prefixes, by the resolve prefix of a commit."""

    def __init__(self) -> None:
        # resolve prefix -> (target prefix, query, the etag named in that query)
        self._by_prefix: dict[str, tuple[str, str, str]] = {}
        self.enabled = True

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<Shortcuts [{state} | learned: {len(self._by_prefix)}]>"

    def learn(self, url: str, etag: str, final: str) -> None:
        """`url` (a resolve URL ending with the file's encoded path) was answered at `final`
        after same-host redirects: remember the shape, when it is one that can be reused."""
        if not self.enabled or len(etag) != _GIT_ETAG_LEN or final == url:
            return
        src, dst = urlsplit(url), urlsplit(final)
        if (src.scheme, src.netloc) != (dst.scheme, dst.netloc) or src.query or src.fragment:
            return
        if dst.query.count(etag) > 1 or (dst.query and etag not in dst.query):
            return  # a query that names other things than the etag cannot be rebuilt
        tail = _common_tail(src.path, dst.path)
        if not _AT_COMMIT.match(tail):
            return  # the shared part must be the commit hash and the whole file path
        head = f"{src.scheme}://{src.netloc}"
        resolve_prefix = head + src.path[: len(src.path) - len(tail)]
        target_prefix = head + dst.path[: len(dst.path) - len(tail)]
        self._by_prefix.setdefault(resolve_prefix, (target_prefix, dst.query, etag))

    def guess(self, url: str, etag: str) -> str | None:
        """The direct URL of a regular file whose resolve URL is `url`, if one was learned."""
        if not self.enabled or len(etag) != _GIT_ETAG_LEN:
            return None
        for resolve_prefix, (target, query, learned_etag) in self._by_prefix.items():
            rest = url[len(resolve_prefix):]
            if url.startswith(resolve_prefix) and _AT_COMMIT.match(rest):
                built = f"{target}{rest}"
                return f"{built}?{query.replace(learned_etag, etag)}" if query else built
        return None

    def disable(self) -> None:
        """A guess was not answered cleanly: no more guesses in this client."""
        self.enabled = False
        self._by_prefix.clear()


def _common_tail(a: str, b: str) -> str:
    """The longest common suffix of two paths, from the commit hash it holds (if any)."""
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    tail = a[len(a) - n:]
    found = re.search(r"/[0-9a-f]{40}/", tail)
    return "" if found is None else tail[found.start():]

"""Parse Hub URLs from the raw (still percent-encoded) request path. Pure functions, no I/O.

aiohttp decodes `%2F` before routing, which would make `refs%2Fpr%2F1` look like three
segments; so FakeHub routes everything through one catch-all handler and splits the raw path
here. Repo ids have one or two segments (`gpt2`, `org/name`); when both readings parse, the
one naming a known repo wins, else the two-segment one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypeAlias
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Callable

    from hubasync._types import RepoType

__all__ = ["Route", "parse_route", "split_revision"]

RouteKind: TypeAlias = Literal["info", "tree", "paths_info", "refs", "resolve", "cache"]

_TYPES: Final[dict[str, RepoType]] = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIXES: Final[dict[str, RepoType]] = {"datasets": "dataset", "spaces": "space"}
_HEX40: Final = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed Hub URL. `rest` holds the still-encoded segments after the action keyword."""

    kind: RouteKind
    repo_type: RepoType
    repo_id: str
    before: tuple[str, ...]  # raw segments before the repo id
    after: tuple[str, ...]  # raw segments after the repo id (action included)
    rest: tuple[str, ...]

    def with_repo_id(self, repo_id: str) -> str:
        """The same raw path with another repo id (for renamed repos' redirects)."""
        return "/" + "/".join((*self.before, *repo_id.split("/"), *self.after))


def parse_route(raw_path: str, known: Callable[[RepoType, str], bool]) -> Route | None:
    """The route of `raw_path` (no query), or None when it is not a Hub URL FakeHub serves."""
    segments = tuple(raw_path.split("/")[1:])
    if len(segments) >= 2 and segments[0] == "api":
        if segments[1] == "resolve-cache" and len(segments) >= 3 and segments[2] in _TYPES:
            return _pick(segments, 3, _TYPES[segments[2]], _parse_cache, known)
        if segments[1] in _TYPES:
            return _pick(segments, 2, _TYPES[segments[1]], _parse_api, known)
        return None
    if segments and segments[0] in _PREFIXES:
        route = _pick(segments, 1, _PREFIXES[segments[0]], _parse_resolve, known)
        if route is not None:
            return route
    return _pick(segments, 0, "model", _parse_resolve, known)


def _pick(
    segments: tuple[str, ...],
    start: int,
    repo_type: RepoType,
    parse: Callable[[tuple[str, ...]], tuple[RouteKind, tuple[str, ...]] | None],
    known: Callable[[RepoType, str], bool],
) -> Route | None:
    candidates: list[Route] = []
    for width in (2, 1):
        if len(segments) < start + width:
            continue
        id_segments = segments[start : start + width]
        if not all(id_segments):
            continue
        after = segments[start + width :]
        parsed = parse(after)
        if parsed is None:
            continue
        repo_id = "/".join(unquote(s) for s in id_segments)
        kind, rest = parsed
        candidates.append(Route(kind, repo_type, repo_id, segments[:start], after, rest))
    for route in candidates:
        if known(route.repo_type, route.repo_id):
            return route
    return candidates[0] if candidates else None


def _parse_api(after: tuple[str, ...]) -> tuple[RouteKind, tuple[str, ...]] | None:
    if not after:
        return "info", ()
    action, rest = after[0], after[1:]
    if action == "revision" and rest:
        return "info", rest
    if action == "tree" and rest:
        return "tree", rest
    if action == "paths-info" and rest:
        return "paths_info", rest
    if action == "refs" and not rest:
        return "refs", ()
    return None


def _parse_resolve(after: tuple[str, ...]) -> tuple[RouteKind, tuple[str, ...]] | None:
    if len(after) >= 3 and after[0] == "resolve":
        return "resolve", after[1:]
    return None


def _parse_cache(after: tuple[str, ...]) -> tuple[RouteKind, tuple[str, ...]] | None:
    if len(after) >= 2 and _HEX40.match(after[0]):
        return "cache", after
    return None


def split_revision(
    rest: tuple[str, ...], resolves: Callable[[str], bool], *, need_path: bool
) -> tuple[str, str]:
    """Split `rev/path...` segments into (revision, path), both decoded.

    Clients send the revision percent-encoded as one segment (`refs%2Fpr%2F1`); an unencoded
    `refs/pr/1` is accepted too, by taking the shortest prefix that names a known revision.
    When none does, the first segment is the (unknown) revision.
    """
    limit = len(rest) - 1 if need_path else len(rest)
    for count in range(1, limit + 1):
        revision = unquote("/".join(rest[:count]))
        if resolves(revision):
            return revision, unquote("/".join(rest[count:]))
    return unquote(rest[0]), unquote("/".join(rest[1:]))

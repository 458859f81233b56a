"""The retry policy: a pure value that turns a failure into a delay, or into "give up".

Nothing here sleeps or does I/O. The async caller owns the loop::

    policy = RetryPolicy(config)
    while True:
        try:
            return await attempt()
        except Exception as exc:
            delay = policy.next_delay(exc)
            if delay is None:
                raise
            policy = policy.increment()
            await anyio.sleep(delay)

A caller that streams a body calls ``policy.reset()`` whenever bytes arrived, so ``max_attempts``
counts tries *without progress* (as the official client's resume loop does).

The header helpers read the Hub's two ways of asking for a pause (hub-protocol §3.3): the IETF
draft ``RateLimit`` header (``"api";r=0;t=55``: no requests left, window resets in 55 s) and
``Retry-After`` (delta-seconds or an HTTP-date).
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final

import msgspec

from hubasync._exceptions import (
    ConfigError,
    HubError,
    HubHTTPError,
    RateLimitedError,
    TransientError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "DEFAULT_RETRY_CONFIG",
    "DEFAULT_RETRY_STATUSES",
    "RetryConfig",
    "RetryPolicy",
    "parse_ratelimit",
    "parse_retry_after",
    "server_wait",
]

#: The statuses the official client (>= 1.20) retries.
DEFAULT_RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})

#: 2**attempt stops growing here: far past any cap, and far from float overflow.
_MAX_EXPONENT: Final = 1000
_NUMBER_RE: Final = re.compile(r"\d+(?:\.\d+)?")  # no sign, no exponent, no inf/nan


class RetryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How hard to retry. Numbers only; `RetryPolicy` holds the logic.

    - ``max_attempts``: tries without progress before giving up, the first try included
      (1 means "never retry").
    - ``backoff_base`` / ``backoff_max``: the n-th retry waits ``backoff_base * 2**(n-1)``
      seconds, capped at ``backoff_max``, then spread by ``± jitter`` (a fraction, 0 <= j < 1).
    - ``retry_after_max``: cap on a wait the server asked for (Retry-After / RateLimit).
    - ``retry_statuses``: statuses worth retrying when a plain `HubHTTPError` carries them.
    """

    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.2
    retry_after_max: float = 300.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ConfigError(
                f"max_attempts must be >= 1 (1 = no retries), got {self.max_attempts}"
            )
        _check_seconds("backoff_base", self.backoff_base)
        _check_seconds("backoff_max", self.backoff_max)
        _check_seconds("retry_after_max", self.retry_after_max)
        if self.backoff_max < self.backoff_base:
            raise ConfigError(
                f"backoff_max ({self.backoff_max}) must be >= backoff_base ({self.backoff_base})"
            )
        _check_seconds("jitter", self.jitter)
        if self.jitter >= 1.0:
            raise ConfigError(f"jitter must be a fraction in [0, 1), got {self.jitter!r}")
        bad = sorted(s for s in self.retry_statuses if not 100 <= s <= 599)
        if bad:
            raise ConfigError(f"retry_statuses must be HTTP statuses (100-599), got {bad}")


def _check_seconds(name: str, value: object) -> None:
    # msgspec checks types when decoding, not in the constructor: check them here too.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


DEFAULT_RETRY_CONFIG: Final = RetryConfig()


# -- headers ---------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; `now` is the current epoch time.

    Accepts delta-seconds (``"120"``, tolerantly ``"1.5"``) or an HTTP-date; a date in the past
    gives 0. Anything else (negative, garbage, absurd) gives None.
    """
    if value is None:
        return None
    value = value.strip()
    if _NUMBER_RE.fullmatch(value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown origin (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def parse_ratelimit(value: str | None) -> float | None:
    """Seconds until the quota resets, from an IETF draft ``RateLimit`` header, if it is spent.

    ``"api";r=0;t=55`` gives 55.0; ``"resolvers";r=2998;t=172`` gives None (requests remain).
    Several comma-separated items are read; the longest reset among the spent ones wins.
    Garbage gives None.
    """
    if not value:
        return None
    waits = [wait for item in value.split(",") if (wait := _spent_reset(item)) is not None]
    return max(waits, default=None)


def _spent_reset(item: str) -> float | None:
    params: dict[str, str] = {}
    for part in item.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            params[key.strip().lower()] = val.strip()
    remaining, reset = params.get("r", ""), params.get("t", "")
    if not (_NUMBER_RE.fullmatch(remaining) and _NUMBER_RE.fullmatch(reset)):
        return None
    if float(remaining) != 0:
        return None
    seconds = float(reset)
    return seconds if math.isfinite(seconds) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)  # exact or case-insensitive mapping (aiohttp, multidict)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def server_wait(headers: Mapping[str, str], *, now: float) -> float | None:
    """The wait the server asked for, in seconds, or None if it asked for none.

    A spent ``RateLimit`` quota (``r=0``) wins and waits ``t + 1`` s, as the official client
    does; else ``Retry-After`` (seconds or HTTP-date, relative to epoch `now`). Header names are
    matched case-insensitively. The result is not capped: see ``RetryConfig.retry_after_max``.
    """
    reset = parse_ratelimit(_header(headers, "RateLimit"))
    if reset is not None:
        return reset + 1.0
    return parse_retry_after(_header(headers, "Retry-After"), now=now)


# -- policy ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """An immutable retry state: `config` plus how many tries already failed without progress.

    ``attempt`` is 0 during the first try. `random` returns a float in [0, 1) and is only there
    so tests can pin the jitter.
    """

    config: RetryConfig = DEFAULT_RETRY_CONFIG
    attempt: int = 0
    random: Callable[[], float] = dataclasses.field(default=random.random, repr=False)

    def __post_init__(self) -> None:
        if self.attempt < 0:
            raise ConfigError(f"attempt must be >= 0, got {self.attempt}")

    @property
    def exhausted(self) -> bool:
        """True when the try in progress is the last one: its failure will not be retried."""
        return self.attempt + 1 >= self.config.max_attempts

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether `exc` is worth another try, attempts permitting.

        Yes for every `TransientError`; for a `HubHTTPError` whose status is in
        ``retry_statuses``; and for builtin `TimeoutError` / `ConnectionError`. No for anything
        else, including `OfflineModeIsEnabled` (a `ConnectionError` that will not heal) and
        cancellation.
        """
        if isinstance(exc, TransientError):
            return True
        if isinstance(exc, HubHTTPError):
            return exc.status in self.config.retry_statuses
        if isinstance(exc, HubError):
            return False
        return isinstance(exc, TimeoutError | ConnectionError)

    def next_delay(self, exc: BaseException) -> float | None:
        """Seconds to wait before the next try, or None to give up (not retryable, or exhausted).

        A `RateLimitedError` carrying ``retry_after`` waits exactly that (capped at
        ``retry_after_max``): no jitter, so never less than the server asked. Everything else
        backs off exponentially, capped at ``backoff_max`` and then spread by ``± jitter``.
        """
        if self.exhausted or not self.is_retryable(exc):
            return None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            wait = exc.retry_after
            if not math.isnan(wait):
                return min(max(wait, 0.0), self.config.retry_after_max)
        return self._backoff()

    def _backoff(self) -> float:
        """The jittered exponential delay for the current attempt (ignores the server)."""
        cfg = self.config
        delay = min(cfg.backoff_base * 2.0 ** min(self.attempt, _MAX_EXPONENT), cfg.backoff_max)
        spread = min(max(self.random(), 0.0), 1.0) * 2.0 - 1.0  # in [-1, 1]
        return max(0.0, delay * (1.0 + cfg.jitter * spread))

    def increment(self) -> RetryPolicy:
        """The policy for the next try (this one failed without progress)."""
        return dataclasses.replace(self, attempt=self.attempt + 1)

    def reset(self) -> RetryPolicy:
        """The policy after progress was made: the attempt budget starts over."""
        return self if self.attempt == 0 else dataclasses.replace(self, attempt=0)

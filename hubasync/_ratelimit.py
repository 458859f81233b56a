"""Shared pacing: the per-host gate that a 429 closes, and a token bucket for a bandwidth cap.

Both take an injectable ``clock`` (monotonic seconds) and ``sleep``, so tests drive them with a
fake clock and never wait for real.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING

import anyio

from hubasync._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["HostGate", "HostGateStatistics", "TokenBucket"]

_REPR_HOSTS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class HostGateStatistics:
    """A snapshot of a `HostGate`.

    ``blocked_hosts``: hosts blocked right now. ``tasks_waiting``: tasks inside `wait()` now.
    ``total_blocks``: `block()` calls so far (with a positive delay). ``total_waited``: seconds
    spent in `wait()`, summed over tasks.
    """

    blocked_hosts: int
    tasks_waiting: int
    total_blocks: int
    total_waited: float


class HostGate:
    """Per-host "blocked until" times: one 429 pauses every request to that host.

    The transport calls ``block(host, delay)`` when a host asks for a pause and
    ``await wait(host)`` before every request. Hosts are opaque keys (the caller uses
    ``"host:port"``). A host is forgotten once its block has expired, so memory stays bounded by
    the hosts blocked at the same time.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._until: dict[str, float] = {}
        self._waiting = 0
        self._blocks = 0
        self._waited = 0.0

    def block(self, host: str, delay: float) -> None:
        """Block `host` for `delay` seconds from now; a shorter block never shortens a longer one.

        A delay <= 0 does nothing. A non-finite delay is a bug in the caller: ValueError.
        """
        if math.isnan(delay) or math.isinf(delay):
            raise ValueError(f"a host block needs a finite delay, got {delay!r}")
        if delay <= 0:
            return
        now = self._clock()
        self._forget_expired(now)
        self._blocks += 1
        until = now + delay
        if until > self._until.get(host, 0.0):
            self._until[host] = until

    def blocked_until(self, host: str) -> float:
        """The clock time at which `host` reopens, or 0.0 if it is not blocked."""
        return self._blocked_until(host, self._clock())

    def _blocked_until(self, host: str, now: float) -> float:
        until = self._until.get(host, 0.0)
        if until > now:
            return until
        self._until.pop(host, None)
        return 0.0

    def _forget_expired(self, now: float) -> None:
        expired = [host for host, until in self._until.items() if until <= now]
        for host in expired:
            del self._until[host]

    async def wait(self, host: str) -> float:
        """Wait until `host` is open; return the seconds waited (0.0, with no sleep, if open).

        After each sleep the block is read again: another 429 may have extended it meanwhile.
        """
        start = self._clock()
        until = self._blocked_until(host, start)
        if not until:
            return 0.0
        self._waiting += 1
        try:
            now = start
            while until:
                await self._sleep(until - now)
                now = self._clock()
                until = self._blocked_until(host, now)
            return now - start
        finally:
            self._waiting -= 1
            self._waited += self._clock() - start

    def statistics(self) -> HostGateStatistics:
        self._forget_expired(self._clock())
        return HostGateStatistics(
            blocked_hosts=len(self._until),
            tasks_waiting=self._waiting,
            total_blocks=self._blocks,
            total_waited=self._waited,
        )

    def __repr__(self) -> str:
        now = self._clock()
        self._forget_expired(now)
        by_end = sorted(self._until.items(), key=lambda item: item[1], reverse=True)
        hosts = ", ".join(f"{host} for {until - now:.1f}s" for host, until in by_end[:_REPR_HOSTS])
        if len(by_end) > _REPR_HOSTS:
            hosts += f", +{len(by_end) - _REPR_HOSTS} more"
        blocked = f"blocked: {hosts}" if hosts else "open"
        return (
            f"<HostGate [{blocked} | waiting: {self._waiting} | "
            f"blocks: {self._blocks}, waited: {self._waited:.1f}s]>"
        )


class TokenBucket:
    """A shared rate cap: ``await acquire(n)`` before moving n bytes keeps all callers together
    under `rate` bytes per second, with bursts of up to `burst` bytes (default: one second's
    worth).

    Each `acquire()` reserves its tokens at once, letting the bucket go into debt, then sleeps
    once for exactly the time the debt takes to repay. Callers are therefore served in arrival
    order with a single sleep each (no polling), and acquiring more than `burst` is allowed: it
    just waits proportionally longer. A cancelled `acquire()` gives its tokens back.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"rate must be a finite number of bytes per second > 0, got {rate!r}")
        burst = rate if burst is None else burst
        if not (math.isfinite(burst) and burst > 0):
            raise ConfigError(f"burst must be a finite number of bytes > 0, got {burst!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self._burst
        self._stamp = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def available(self) -> float:
        """Tokens available now; negative when callers are queued (the debt they wait out)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        if now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now

    async def acquire(self, n: int) -> None:
        """Take `n` tokens (bytes), sleeping as long as the rate requires. Returns at once,
        without sleeping, while the bucket holds enough."""
        if n < 0:
            raise ValueError(f"cannot acquire a negative amount ({n})")
        if n == 0:
            return
        self._refill()
        self._tokens -= n
        if self._tokens >= 0:
            return
        try:
            await self._sleep(-self._tokens / self._rate)
        except BaseException:
            self._refill()
            self._tokens = min(self._burst, self._tokens + n)
            raise

    def __repr__(self) -> str:
        return (
            f"<TokenBucket [rate: {self._rate:g}/s, burst: {self._burst:g}, "
            f"available: {self.available:g}]>"
        )

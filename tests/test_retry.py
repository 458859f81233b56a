from __future__ import annotations

import asyncio
import itertools
import math
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING

import msgspec
import pytest

from hubasync._exceptions import (
    ConfigError,
    ConnectError,
    GatedRepoError,
    HubHTTPError,
    IntegrityError,
    OfflineModeIsEnabled,
    RateLimitedError,
    ReadError,
    ReadTimeout,
    RepositoryNotFoundError,
    ServerError,
    UsageError,
)
from hubasync._retry import (
    DEFAULT_RETRY_STATUSES,
    RetryConfig,
    RetryPolicy,
    parse_ratelimit,
    parse_retry_after,
    server_wait,
)

if TYPE_CHECKING:
    from collections.abc import Callable

URL = "https://huggingface.co/gpt2/resolve/main/config.json"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def mid() -> float:
    return 0.5  # jitter spread 0: the exact backoff


def const(r: float) -> Callable[[], float]:
    return lambda: r


def http(status: int, cls: type[HubHTTPError] = HubHTTPError) -> HubHTTPError:
    return cls(f"status {status}", status=status, url=URL)


def rate_limited(retry_after: float | None) -> RateLimitedError:
    exc = RateLimitedError("429", status=429, url=URL)
    exc.retry_after = retry_after
    return exc


# -- config ----------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = RetryConfig()
    assert (cfg.max_attempts, cfg.backoff_base, cfg.backoff_max) == (8, 0.5, 8.0)
    assert (cfg.jitter, cfg.retry_after_max) == (0.2, 300.0)
    assert cfg.retry_statuses == DEFAULT_RETRY_STATUSES == {408, 429, 500, 502, 503, 504}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"max_attempts": -3}, "max_attempts must be >= 1"),
        ({"max_attempts": 2.5}, "max_attempts must be an int"),
        ({"max_attempts": True}, "max_attempts must be an int"),
        ({"backoff_base": -0.1}, "backoff_base must be a finite number >= 0"),
        ({"backoff_max": math.inf}, "backoff_max must be a finite number >= 0"),
        ({"backoff_base": math.nan}, "backoff_base must be a finite number >= 0"),
        ({"backoff_base": "1"}, "backoff_base must be a number"),
        ({"backoff_base": 10.0, "backoff_max": 1.0}, r"backoff_max \(1.0\) must be >= backoff_"),
        ({"jitter": -0.1}, "jitter must be a finite number >= 0"),
        ({"jitter": 1.0}, r"jitter must be a fraction in \[0, 1\)"),
        ({"retry_after_max": -1}, "retry_after_max must be a finite number >= 0"),
        ({"retry_statuses": frozenset({429, 42})}, r"retry_statuses must be HTTP statuses.*\[42\]"),
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RetryConfig(**kwargs)  # type: ignore[arg-type]


def test_config_errors_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        RetryConfig(max_attempts=0)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryConfig(max_attempts=0)


def test_config_zero_backoff_and_jitter_are_allowed() -> None:
    policy = RetryPolicy(RetryConfig(backoff_base=0, backoff_max=0, jitter=0))
    assert policy.next_delay(ReadError("x")) == 0.0


def test_config_is_immutable_and_decodable() -> None:
    cfg = RetryConfig()
    with pytest.raises(AttributeError):
        cfg.max_attempts = 3  # type: ignore[misc]
    decoded = msgspec.json.decode(b'{"max_attempts": 3, "retry_statuses": [503]}', type=RetryConfig)
    assert decoded == RetryConfig(max_attempts=3, retry_statuses=frozenset({503}))
    with pytest.raises(msgspec.ValidationError, match="max_attempts must be >= 1"):
        msgspec.json.decode(b'{"max_attempts": 0}', type=RetryConfig)


def test_config_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        RetryConfig(3)  # type: ignore[call-arg]


# -- Retry-After -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("  7 ", 7.0),
        ("1.5", 1.5),
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("1e3", None),
        ("inf", None),
        ("nan", None),
        ("0x10", None),
        ("9" * 400, None),  # overflows to inf
        ("Tue, 99 Foo 2023 25:61:00 GMT", None),
    ],
)
def test_parse_retry_after_seconds_and_garbage(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_http_date() -> None:
    in_a_minute = format_datetime(datetime.fromtimestamp(NOW + 60, UTC), usegmt=True)
    assert in_a_minute == "Tue, 14 Nov 2023 22:14:20 GMT"
    assert parse_retry_after(in_a_minute, now=NOW) == 60.0
    # The obsolete RFC 850 and asctime forms are HTTP-dates too.
    assert parse_retry_after("Tuesday, 14-Nov-23 22:14:20 GMT", now=NOW) == 60.0
    assert parse_retry_after("Tue Nov 14 22:14:20 2023", now=NOW) == 60.0
    # "-0000" (no zone information) is read as UTC.
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:20 -0000", now=NOW) == 60.0
    # Offsets are honoured.
    assert parse_retry_after("Tue, 14 Nov 2023 23:14:20 +0100", now=NOW) == 60.0


def test_parse_retry_after_date_in_the_past_clamps_to_zero() -> None:
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now=NOW) == 0.0


# -- RateLimit -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"api";r=0;t=55', 55.0),
        ('"resolvers";r=2998;t=172', None),
        ('"api"; r=0; t=55', 55.0),
        ('"api";t=55;r=0', 55.0),
        ('"api";R=0;T=9', 9.0),
        ("api;r=0;t=3", 3.0),
        ('"a";r=5;t=10, "b";r=0;t=30', 30.0),
        ('"a";r=0;t=10, "b";r=0;t=30', 30.0),
        ('"a";r=0;t=10, garbage', 10.0),
        ('"api";r=0', None),
        ('"api";t=55', None),
        ('"api";r=0;t=-5', None),
        ('"api";r=-1;t=5', None),
        ('"api";r=0;t=soon', None),
        ('"api";r=0;t=0', 0.0),
        ("", None),
        (None, None),
        ("garbage", None),
        (";;;,,,==", None),
    ],
)
def test_parse_ratelimit(value: str | None, expected: float | None) -> None:
    assert parse_ratelimit(value) == expected


# -- server_wait -----------------------------------------------------------------------------------


def test_server_wait_prefers_a_spent_ratelimit_and_adds_one_second() -> None:
    headers = {"RateLimit": '"api";r=0;t=55', "Retry-After": "5"}
    assert server_wait(headers, now=NOW) == 56.0


def test_server_wait_falls_back_to_retry_after() -> None:
    assert server_wait({"RateLimit": '"api";r=10;t=55', "Retry-After": "5"}, now=NOW) == 5.0
    assert server_wait({"Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT"}, now=NOW) == 30.0


def test_server_wait_none_when_nothing_asked() -> None:
    assert server_wait({}, now=NOW) is None
    assert server_wait({"Retry-After": "later"}, now=NOW) is None
    assert server_wait({"Content-Length": "5"}, now=NOW) is None


def test_server_wait_header_names_are_case_insensitive() -> None:
    assert server_wait({"ratelimit": '"api";r=0;t=1'}, now=NOW) == 2.0
    assert server_wait({"RETRY-AFTER": "4"}, now=NOW) == 4.0
    assert server_wait({"rEtRy-AfTeR": "4"}, now=NOW) == 4.0


# -- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (ConnectError("refused", url=URL), True),
        (ReadError("reset", url=URL), True),
        (ReadTimeout("stalled", url=URL), True),
        (http(503, ServerError), True),
        (http(501, ServerError), True),  # a TransientError whatever its status
        (rate_limited(3.0), True),
        (http(408), True),
        (http(429), True),
        (http(500), True),
        (http(502), True),
        (http(504), True),
        (http(501), False),
        (http(404), False),
        (http(403), False),
        (http(401, RepositoryNotFoundError), False),
        (http(401, GatedRepoError), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (BrokenPipeError(), True),
        (OfflineModeIsEnabled("offline"), False),  # a ConnectionError that will not heal
        (IntegrityError("bad sha"), False),
        (OSError("disk"), False),
        (ValueError("bug"), False),
        (asyncio.CancelledError(), False),
        (KeyboardInterrupt(), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_retryable(exc: BaseException, retryable: bool) -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(exc) is retryable
    assert (policy.next_delay(exc) is not None) is retryable


def test_retry_statuses_are_configurable() -> None:
    policy = RetryPolicy(RetryConfig(retry_statuses=frozenset({418})))
    assert policy.is_retryable(http(418))
    assert not policy.is_retryable(http(503))


# -- delays ----------------------------------------------------------------------------------------


def delays(policy: RetryPolicy, exc: BaseException) -> list[float | None]:
    out: list[float | None] = []
    while True:
        delay = policy.next_delay(exc)
        out.append(delay)
        if delay is None:
            return out
        policy = policy.increment()


def test_backoff_sequence_doubles_and_caps() -> None:
    policy = RetryPolicy(RetryConfig(), random=mid)
    assert delays(policy, ReadError("x")) == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, None]


def test_backoff_like_the_official_client() -> None:
    cfg = RetryConfig(max_attempts=6, backoff_base=1.0, backoff_max=8.0)
    assert delays(RetryPolicy(cfg, random=mid), http(503)) == [1.0, 2.0, 4.0, 8.0, 8.0, None]


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(RetryConfig(max_attempts=3))
    assert not policy.exhausted
    assert policy.next_delay(ReadError("x")) is not None
    policy = policy.increment()
    assert not policy.exhausted
    assert policy.next_delay(ReadError("x")) is not None
    policy = policy.increment()
    assert policy.exhausted
    assert policy.next_delay(ReadError("x")) is None
    assert policy.next_delay(rate_limited(1.0)) is None


def test_max_attempts_one_never_retries() -> None:
    policy = RetryPolicy(RetryConfig(max_attempts=1))
    assert policy.exhausted
    assert policy.next_delay(ReadError("x")) is None


def test_not_retryable_gives_up_even_on_the_first_try() -> None:
    assert RetryPolicy().next_delay(http(404)) is None


def test_huge_attempt_does_not_overflow() -> None:
    policy = RetryPolicy(RetryConfig(max_attempts=100_000), attempt=50_000, random=mid)
    assert policy.next_delay(ReadError("x")) == 8.0


@pytest.mark.parametrize("r", [0.0, 0.5, 0.999999, 1.0])
def test_jitter_with_fixed_random(r: float) -> None:
    policy = RetryPolicy(RetryConfig(jitter=0.2), attempt=2, random=const(r))
    assert policy.next_delay(ReadError("x")) == pytest.approx(2.0 * (1 + 0.2 * (2 * r - 1)))


def test_jitter_bounds_over_many_draws() -> None:
    cfg = RetryConfig(max_attempts=20, backoff_base=0.25, backoff_max=5.0, jitter=0.3)
    draws = [i / 97 for i in range(97)] + [0.0, 1.0 - 1e-12, -3.0, 7.0]  # incl. a broken random
    for attempt, r in itertools.product(range(19), draws):
        delay = RetryPolicy(cfg, attempt=attempt, random=const(r)).next_delay(ReadError("x"))
        exact = min(0.25 * 2**attempt, 5.0)
        assert delay is not None
        assert exact * 0.7 - 1e-9 <= delay <= exact * 1.3 + 1e-9


def test_default_random_stays_in_bounds() -> None:
    policy = RetryPolicy(attempt=3)
    for _ in range(1000):
        delay = policy.next_delay(ReadError("x"))
        assert delay is not None
        assert 4.0 * 0.8 <= delay <= 4.0 * 1.2


def test_rate_limited_waits_what_the_server_asked_without_jitter() -> None:
    for r in (0.0, 0.5, 0.99):
        policy = RetryPolicy(RetryConfig(jitter=0.5), attempt=4, random=const(r))
        assert policy.next_delay(rate_limited(55.0)) == 55.0
        assert policy.next_delay(rate_limited(0.25)) == 0.25


def test_rate_limited_wait_is_capped() -> None:
    policy = RetryPolicy(RetryConfig(retry_after_max=30.0))
    assert policy.next_delay(rate_limited(3600.0)) == 30.0
    assert policy.next_delay(rate_limited(math.inf)) == 30.0
    assert policy.next_delay(rate_limited(-4.0)) == 0.0


def test_rate_limited_without_retry_after_backs_off() -> None:
    policy = RetryPolicy(attempt=1, random=mid)
    assert policy.next_delay(rate_limited(None)) == 1.0
    assert policy.next_delay(rate_limited(math.nan)) == 1.0
    assert policy.next_delay(http(429)) == 1.0  # a plain HubHTTPError carries no wait


# -- value semantics -------------------------------------------------------------------------------


def test_increment_returns_a_new_value() -> None:
    policy = RetryPolicy()
    nxt = policy.increment()
    assert (policy.attempt, nxt.attempt) == (0, 1)
    assert nxt.config is policy.config
    with pytest.raises(AttributeError):
        policy.attempt = 5  # type: ignore[misc]


def test_reset_restores_the_budget() -> None:
    policy = RetryPolicy(RetryConfig(max_attempts=2), random=mid).increment()
    assert policy.exhausted
    assert policy.next_delay(ReadError("x")) is None
    fresh = policy.reset()
    assert fresh.attempt == 0
    assert not fresh.exhausted
    assert fresh.next_delay(ReadError("x")) == 0.5
    assert fresh.reset() is fresh
    assert fresh.random is mid  # the injected random survives increment and reset


def test_negative_attempt_is_rejected() -> None:
    with pytest.raises(ConfigError, match="attempt must be >= 0"):
        RetryPolicy(attempt=-1)


def test_repr_hides_the_random_function() -> None:
    text = repr(RetryPolicy(attempt=2))
    assert "attempt=2" in text
    assert "random" not in text


def test_policy_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sleep(*args: object) -> None:
        raise AssertionError("slept")

    monkeypatch.setattr("time.sleep", no_sleep)
    monkeypatch.setattr("asyncio.sleep", no_sleep)
    assert delays(RetryPolicy(random=mid), ReadError("x"))[-1] is None

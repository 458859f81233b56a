"""Configuration as one small immutable value.

The environment is read only inside :meth:`HubConfig.from_env`, never at import time, so results
never depend on import order and tests never monkeypatch module globals.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from hubasync._exceptions import ConfigError
from hubasync._retry import RetryConfig
from hubasync._types import (
    DEFAULT_ENDPOINT,
    PAGE_CACHE,
    PROGRESS_MODES,
    PageCache,
    ProgressMode,
    Secret,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

MiB: Final = 1024 * 1024

DEFAULT_MAX_WORKERS: Final = 8
DEFAULT_MAX_CONNECTIONS: Final = 16
DEFAULT_RANGE_THRESHOLD: Final = 64 * MiB
DEFAULT_CHUNK_SIZE: Final = 16 * MiB
DEFAULT_ETAG_TIMEOUT: Final = 10.0
DEFAULT_DOWNLOAD_TIMEOUT: Final = 10.0
DEFAULT_DISK_THREADS: Final = 8

_TRUE: Final = frozenset({"1", "ON", "YES", "TRUE"})


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in _TRUE


class HubConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a HubClient needs to know, validated at construction.

    Build one from the environment with :meth:`from_env`; every field can be overridden there.
    The token is held as a :class:`Secret` and never shows in a repr.
    """

    endpoint: str = DEFAULT_ENDPOINT
    cache_dir: str = ""
    token: Secret | None = None
    offline: bool = False
    disable_symlinks: bool = False
    disable_progress_bars: bool | None = None
    progress: ProgressMode = "auto"
    etag_timeout: float = DEFAULT_ETAG_TIMEOUT
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    max_workers: int = DEFAULT_MAX_WORKERS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    range_threshold: int = DEFAULT_RANGE_THRESHOLD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    disk_threads: int = DEFAULT_DISK_THREADS
    verify_hashes: bool = True
    page_cache: PageCache = "drop"  # what large downloads do with the page cache (see PAGE_CACHE)
    max_bandwidth: int | None = None
    user_agent: str | None = None
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint must be an http(s) URL, got {self.endpoint!r}")
        if self.endpoint.endswith("/"):
            msgspec.structs.force_setattr(self, "endpoint", self.endpoint.rstrip("/"))
        if not self.cache_dir:
            raise ConfigError("cache_dir must be set (HubConfig.from_env() finds the default)")
        if self.progress not in PROGRESS_MODES:
            raise ConfigError(f"progress must be one of {PROGRESS_MODES}, got {self.progress!r}")
        for name in ("etag_timeout", "download_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds")
        for name in ("max_workers", "max_connections", "disk_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.chunk_size < 64 * 1024:
            raise ConfigError("chunk_size must be at least 64 KiB")
        if self.range_threshold < self.chunk_size:
            raise ConfigError("range_threshold must be >= chunk_size")
        if self.page_cache not in PAGE_CACHE:
            raise ConfigError(f"page_cache must be one of {PAGE_CACHE}, got {self.page_cache!r}")
        if self.max_bandwidth is not None and self.max_bandwidth < 1024:
            raise ConfigError("max_bandwidth must be at least 1024 bytes per second")

    @property
    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token else None

    def replace(self, **changes: Any) -> HubConfig:
        """A copy with some fields changed (validated again)."""
        if "token" in changes and isinstance(changes["token"], str):
            changes["token"] = Secret(changes["token"]) if changes["token"] else None
        return msgspec.structs.replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> HubConfig:
        """Read HF_* variables like the official client does, then apply `overrides`.

        ``token`` accepts a string, ``None`` (implicit: HF_TOKEN, then the token file) or
        ``False`` (send none). ``cache_dir`` may be any path-like. This reads the token file,
        so call it off the event loop (the one-shot functions do).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        endpoint = env.get("HF_ENDPOINT")
        if endpoint:
            values["endpoint"] = endpoint.rstrip("/")
        hf_home = _hf_home(env)
        cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
        values["cache_dir"] = cache or os.path.join(hf_home, "hub")
        values["offline"] = _is_true(env.get("HF_HUB_OFFLINE")) or _is_true(
            env.get("TRANSFORMERS_OFFLINE")
        )
        values["disable_symlinks"] = _is_true(env.get("HF_HUB_DISABLE_SYMLINKS"))
        bars = env.get("HF_HUB_DISABLE_PROGRESS_BARS")
        if bars is not None and bars.strip():
            values["disable_progress_bars"] = _is_true(bars)
        mode = env.get("HF_PROGRESS_MODE", "").strip().lower()
        if mode:
            values["progress"] = mode
        for var, name in (
            ("HF_HUB_ETAG_TIMEOUT", "etag_timeout"),
            ("HF_HUB_DOWNLOAD_TIMEOUT", "download_timeout"),
        ):
            raw = env.get(var)
            if raw:
                values[name] = _parse_seconds(var, raw)
        values.update({k: v for k, v in overrides.items() if k != "token"})
        values["token"] = _select_token(env, hf_home, overrides.get("token"))
        cache_dir = values["cache_dir"]
        values["cache_dir"] = str(Path(os.path.expanduser(os.fspath(cache_dir))).resolve())
        return cls(**values)


def _hf_home(env: Mapping[str, str]) -> str:
    home = env.get("HF_HOME")
    if home:
        return os.path.expanduser(os.path.expandvars(home))
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface")


def _parse_seconds(var: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{var} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{var} must be > 0, got {raw!r}")
    return value


def _select_token(env: Mapping[str, str], hf_home: str, explicit: object) -> Secret | None:
    """Explicit string wins; False means none; None means HF_TOKEN, then the token file."""
    if explicit is False:
        return None
    if isinstance(explicit, Secret):
        return explicit
    if isinstance(explicit, str):
        return Secret(explicit.strip()) if explicit.strip() else None
    if explicit not in (None, True):
        raise ConfigError("token must be a string, True, False or None")
    if _is_true(env.get("HF_HUB_DISABLE_IMPLICIT_TOKEN")) and explicit is None:
        return None
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = env.get(var, "").strip()
        if value:
            return Secret(value)
    path = env.get("HF_TOKEN_PATH") or os.path.join(hf_home, "token")
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            value = f.read().strip()
    except OSError:
        value = ""
    if value:
        return Secret(value)
    if explicit is True:
        raise ConfigError("token=True but no token was found (HF_TOKEN or the token file)")
    return None

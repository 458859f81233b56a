from __future__ import annotations

from pathlib import Path

import pytest

import hubasync
from hubasync import HubConfig


def test_from_env_reads_official_variables(tmp_path: Path) -> None:
    env = {
        "HF_ENDPOINT": "http://127.0.0.1:9/",
        "HF_HOME": str(tmp_path / "home"),
        "HF_TOKEN": "hf_secret_value",
        "HF_HUB_OFFLINE": "yes",
        "HF_HUB_DISABLE_SYMLINKS": "1",
        "HF_HUB_ETAG_TIMEOUT": "3",
        "HF_HUB_DOWNLOAD_TIMEOUT": "7.5",
        "HF_PROGRESS_MODE": "log",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    cfg = HubConfig.from_env(env)
    assert cfg.endpoint == "http://127.0.0.1:9"
    assert cfg.cache_dir == str((tmp_path / "home" / "hub").resolve())
    assert cfg.token_value == "hf_secret_value"
    assert cfg.offline and cfg.disable_symlinks and cfg.disable_progress_bars
    assert (cfg.etag_timeout, cfg.download_timeout, cfg.progress) == (3.0, 7.5, "log")


def test_token_sources_and_priority(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hf_from_file\n")
    base = {"HF_HOME": str(tmp_path), "HF_TOKEN_PATH": str(token_file)}
    assert HubConfig.from_env(base).token_value == "hf_from_file"
    assert HubConfig.from_env({**base, "HF_TOKEN": "hf_env"}).token_value == "hf_env"
    assert HubConfig.from_env({**base, "HF_TOKEN": "hf_env"}, token="hf_arg").token_value == "hf_arg"
    assert HubConfig.from_env({**base, "HF_TOKEN": "hf_env"}, token=False).token is None
    assert HubConfig.from_env({**base, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}).token is None
    with pytest.raises(hubasync.ConfigError):
        HubConfig.from_env({"HF_HOME": str(tmp_path / "none")}, token=True)


def test_cache_dir_precedence(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "h"), "HF_HUB_CACHE": str(tmp_path / "c")}
    assert HubConfig.from_env(env).cache_dir == str((tmp_path / "c").resolve())
    assert HubConfig.from_env(env, cache_dir=tmp_path / "x").cache_dir == str(
        (tmp_path / "x").resolve())
    xdg = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert HubConfig.from_env(xdg).cache_dir == str((tmp_path / "xdg" / "huggingface" / "hub").resolve())


def test_token_never_in_repr(tmp_path: Path) -> None:
    cfg = HubConfig.from_env({"HF_HOME": str(tmp_path)}, token="hf_topsecret")
    assert "hf_topsecret" not in repr(cfg)
    assert "hf_topsecret" not in str(cfg)
    assert "hf_topsecret" not in repr(hubasync.HubClient(cfg))


@pytest.mark.parametrize(
    ("env", "overrides"),
    [
        ({"HF_HUB_ETAG_TIMEOUT": "soon"}, {}),
        ({"HF_HUB_DOWNLOAD_TIMEOUT": "-1"}, {}),
        ({"HF_PROGRESS_MODE": "fancy"}, {}),
        ({"HF_ENDPOINT": "ftp://x"}, {}),
        ({}, {"max_workers": 0}),
        ({}, {"chunk_size": 10}),
    ],
)
def test_invalid_settings_are_clear_errors(tmp_path: Path, env: dict[str, str],
                                           overrides: dict[str, object]) -> None:
    with pytest.raises(hubasync.ConfigError):
        HubConfig.from_env({"HF_HOME": str(tmp_path), **env}, **overrides)


def test_environment_is_not_read_at_import() -> None:
    source = Path(hubasync.__file__).parent
    offenders = []
    for path in source.glob("_*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ("os.environ" in line or "os.getenv" in line) and not line.startswith((" ", "\t")):
                offenders.append(f"{path.name}:{n}")
    assert offenders == []

"""Settings: layering (file < env < flags), errors that say where a bad value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from navstream.cli import main
from navstream.config import ConfigError, Settings, load_settings, redact_url


def test_precedence_is_defaults_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[redis]\nprefix = "file"\ngroup = "file-group"\n[consumer]\nbatch_size = 50\n')
    assert load_settings(path, env={}).redis.prefix == "file"
    env = {"NAVSTREAM_PREFIX": "env", "NAVSTREAM_CONSUMER": "c-env"}
    settings = load_settings(path, env=env)
    assert (settings.redis.prefix, settings.redis.group, settings.consumer_name()) == ("env", "file-group", "c-env")
    flags = load_settings(path, env=env, overrides={"redis": {"prefix": "flag", "group": None}})
    assert flags.redis.prefix == "flag" and flags.redis.group == "file-group"
    assert flags.consumer.batch_size == 50 and flags.source == str(path)


def test_navstream_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text('[redis]\nprefix = "from-env-file"\n')
    assert load_settings(env={"NAVSTREAM_CONFIG": str(path)}).redis.prefix == "from-env-file"


def test_a_bad_value_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="url from environment variable NAVSTREAM_REDIS_URL"):
        load_settings(env={"NAVSTREAM_REDIS_URL": "http://x"})
    with pytest.raises(ConfigError, match="flag --redis-url"):
        load_settings(env={}, overrides={"redis": {"url": "localhost:6379"}})


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[consumer]\nbatch_size = 0\n", "batch_size"),
        ("[consumer]\nbatchsize = 10\n", "batchsize"),
        ("[consumer]\nclaim_idle_ms = 500\nblock_ms = 1000\n", "claim_idle_ms"),
        ('[redis]\nprefix = "has space"\n', "prefix"),
        ("[consumer]\nmax_deliveries = 0\n", "max_deliveries"),
        ("redis = 1\n", "[redis] must be a table"),
        ("stray = 1\n", "unknown top-level key `stray`"),
        ("[redis\n", "not valid TOML"),
    ],
)
def test_bad_files_fail_naming_the_key_and_file(tmp_path: Path, toml: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert fragment in str(info.value) and "bad.toml" in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.toml", env={})


def test_defaults() -> None:
    settings = Settings()
    assert settings.redis.url == "redis://127.0.0.1:6379/0" and settings.consumer.max_deliveries == 5
    assert settings.consumer.heartbeat_ttl_ms == 20_000  # 4 x the 5 s hook timeout
    assert "-" in settings.consumer_name()  # <host>-<pid>


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user:s3cret@h:1/0", "redis://user:***@h:1/0"),
        ("redis://:s3cret@h/0", "redis://:***@h/0"),
        ("rediss://h/0?password=s3cret&ssl_cert_reqs=none", "rediss://h/0?password=***&ssl_cert_reqs=none"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_invalid_log_level_from_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NAVSTREAM_LOG_LEVEL", "LOUD")
    assert main(["plugins"]) == 2
    assert "NAVSTREAM_LOG_LEVEL" in capsys.readouterr().err

"""A password inside `[redis] url` in a config file is refused like the `password` key: one line
naming the file and NAVSTREAM_REDIS_PASSWORD, never the password. The environment's
NAVSTREAM_REDIS_URL may still carry one (docs/security.md). Passwords are built at run time."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from navstream.cli import main
from navstream.config import ConfigError, load_settings


def pw() -> str:
    return "-".join(("pw", uuid.uuid4().hex))


@pytest.mark.parametrize(
    "shape",
    [
        "redis://navstream:{}@redis.internal:6379/0",
        "rediss://:{}@redis.internal:6380/0",
        "redis://user:{}@[::1]:6379/0",
        "redis://127.0.0.1:6379/0?password={}",
        "unix:///run/redis.sock?db=0&Password={}",
    ],
)
def test_a_password_in_the_files_url_is_refused(tmp_path: Path, shape: str) -> None:
    secret = pw()
    path = tmp_path / "navstream.toml"
    path.write_text('[redis]\nurl = "' + shape.format(secret) + '"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "NAVSTREAM_REDIS_PASSWORD" in message and "`url`" in message
    assert secret not in message


def test_config_check_refuses_it_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = pw()
    path = tmp_path / "navstream.toml"
    path.write_text('[redis]\nurl = "rediss://:' + secret + '@redis.internal:6380/0"\n')
    try:
        code = main(["config", "check", str(path)])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert code == 2
    assert "NAVSTREAM_REDIS_PASSWORD" in err and secret not in out + err


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis.internal:6379/0",
        "redis://navstream-consumer@redis.internal:6379/0",  # a user alone is no secret
        "redis://:@redis.internal:6379/0",
        "rediss://redis.internal:6380/0?ssl_ca_certs=/run/ca.pem",
        "unix:///run/redis.sock?db=1",
    ],
)
def test_urls_without_a_password_are_fine(tmp_path: Path, url: str) -> None:
    path = tmp_path / "navstream.toml"
    path.write_text(f'[redis]\nurl = "{url}"\n')
    assert load_settings(path, env={}).redis.url == url


def test_the_environment_may_still_carry_a_url_with_a_password(tmp_path: Path) -> None:
    secret = pw()
    path = tmp_path / "navstream.toml"
    path.write_text('[redis]\nurl = "redis://redis.internal:6379/0"\n')
    url = "rediss://navstream:" + secret + "@redis.internal:6380/0"
    settings = load_settings(path, env={"NAVSTREAM_REDIS_URL": url})
    assert settings.redis.url == url and secret not in repr(settings)

"""The CLI tests' real Redis: ``rb`` (the backend with its own prefix) and ``r`` (a client);
and no ``NAVSTREAM_*`` variable of the caller's shell leaks into a command under test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis


@pytest.fixture
def rb(real_backend: Any) -> Any:
    return real_backend


@pytest.fixture
def r(rb: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(rb.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NAVSTREAM_") and name != "NAVSTREAM_REQUIRE_REDIS":
            monkeypatch.delenv(name)

"""The CLI tests' real Redis: ``rb`` (the backend with its own prefix) and ``r`` (a client)."""

from __future__ import annotations

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

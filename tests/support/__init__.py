"""Helpers shared by navstream's own tests: ``from support import START_MS, Backend, ...``.

Importable because ``[tool.pytest.ini_options] pythonpath`` puts tests/ on ``sys.path``. What a
plugin's tests need too (the fake backend, ``make_app``, :func:`run_step`) is in
:mod:`navstream.testing`, the pytest plugin navstream ships; this package adds what only this
repository needs: a real Redis from ``REDIS_URL`` next to fakeredis, and small test plugins.
The modules beside it are helpers of a few tests each, shared between test files (a test module
never imports another): :mod:`support.httpstub` (a real HTTP server for sources),
:mod:`support.soakkit` (redis-server and consumer processes), :mod:`support.docs_promql` (the
PromQL the docs show), :mod:`support.serving` (a consumer serving its HTTP endpoint),
:mod:`support.browser` (headless Chromium), :mod:`support.ingest` (the ingest process's test
sources and config) and :mod:`support.risk` (the risk gate driven order by order).

The tests mirror the package: tests/<sub-package>/ for navstream's (``contract``, ``loop``,
``serve``, ...), tests/plugins/<plugin>/ for the built-in plugins', and at the top only what
tests the whole (layering, security, Redis Cluster, the CI tools).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from navstream import hookimpl
from navstream.testing import START_MS, run_step
from navstream.testing import Backend as _Backend

__all__ = [
    "ROOT",
    "TESTS_DIR",
    "REAL_REDIS",
    "REDIS_URL",
    "REQUIRE_REDIS",
    "START_MS",
    "Backend",
    "Recorder",
    "require_real_redis",
    "run_step",
]

#: The repository's root (every test file computes paths from it, whatever its depth in tests/).
ROOT = Path(__file__).resolve().parents[2]
#: tests/: on ``sys.path`` (``pythonpath``), and on ``PYTHONPATH`` for the subprocesses that load
#: the test plugins in tests/procplugins/ by dotted path.
TESTS_DIR = ROOT / "tests"

#: The real Redis every Redis-backed test runs on again (after fakeredis), when one answers.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
#: ``NAVSTREAM_REQUIRE_REDIS=1`` (CI): a missing real Redis fails the ``real_redis`` tests
#: instead of skipping them.
REQUIRE_REDIS = os.environ.get("NAVSTREAM_REQUIRE_REDIS") == "1"


def _real_redis_available() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


#: Whether a Redis answered at ``REDIS_URL`` when the tests started.
REAL_REDIS = _real_redis_available()


def require_real_redis() -> None:
    """Skip this test without a real Redis (fail it instead under ``NAVSTREAM_REQUIRE_REDIS=1``)."""
    if REAL_REDIS:
        return
    if REQUIRE_REDIS:
        pytest.fail(f"NAVSTREAM_REQUIRE_REDIS=1 but no Redis answers at {REDIS_URL}")
    pytest.skip(f"no Redis at {REDIS_URL}")


class Backend(_Backend):
    """:class:`navstream.testing.Backend` by kind: ``Backend("fake")`` (a fresh fakeredis
    server) or ``Backend("real")`` (the Redis at ``REDIS_URL``, under a private prefix)."""

    def __init__(self, kind: str) -> None:
        if kind not in ("fake", "real"):
            raise ValueError(f"backend kind {kind!r}: 'fake' or 'real'")
        super().__init__(None if kind == "fake" else REDIS_URL)


class Recorder:
    """An inline plugin that notes the asset of every event it is handed, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def navstream_events(self, events: Sequence[Any], out: Any) -> None:
        self.seen += [e.asset for e in events]

"""Fixtures: every Redis-backed test runs on fakeredis, and again on a real Redis when one answers.

The real server comes from ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Without one,
``real_redis`` tests are skipped, unless ``NAVSTREAM_REQUIRE_REDIS=1`` (CI), which makes them
fail instead. Each test gets its own key prefix and group, and its keys are deleted afterwards.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from navstream import hookimpl
from navstream.app import App, ManualClock
from navstream.config import load_settings
from navstream.plugin.manager import build_plugin_manager

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The risk gate's audit logs (and anything else kept under the user's state directory)
    go to a directory of the test session's, in this process and in every one it starts."""
    held = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if held is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = held
REQUIRE_REDIS = os.environ.get("NAVSTREAM_REQUIRE_REDIS") == "1"
START_MS = 1_790_000_000_000  # a fixed "now" for tests on a manual clock


def _real_redis_available() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


REAL_REDIS = _real_redis_available()


def require_real_redis() -> None:
    if REAL_REDIS:
        return
    if REQUIRE_REDIS:
        pytest.fail(f"NAVSTREAM_REQUIRE_REDIS=1 but no Redis answers at {REDIS_URL}")
    pytest.skip(f"no Redis at {REDIS_URL}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "real_redis" in item.keywords:
            item.add_marker(pytest.mark.usefixtures("_real_redis_gate"))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``navstream.cli.main`` reroutes the ``navstream`` logger to a queue; give it back."""
    logger = logging.getLogger("navstream")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate = saved[1]
    logger.setLevel(saved[2])


@pytest.fixture
def _real_redis_gate() -> None:
    require_real_redis()


class Backend:
    """One Redis to test against: ``connect(decode_responses)`` plus a private prefix."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = f"nstest-{uuid.uuid4().hex[:10]}"
        self.url = REDIS_URL
        self._server = fakeredis.FakeServer() if kind == "fake" else None

    def connect(self, decode_responses: bool) -> aioredis.Redis:
        if self._server is not None:
            return fakeredis.FakeAsyncRedis(server=self._server, decode_responses=decode_responses)
        return aioredis.Redis.from_url(self.url, decode_responses=decode_responses)

    async def cleanup(self) -> None:
        if self._server is not None:
            return
        client = self.connect(True)
        try:
            keys = [k async for k in client.scan_iter(match=f"{self.prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real_redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """fakeredis, then a real Redis (skipped or failed as the module docstring says)."""
    b = Backend(request.param)
    yield b
    await b.cleanup()


@pytest.fixture
async def fake_backend() -> AsyncIterator[Backend]:
    b = Backend("fake")
    yield b


@pytest.fixture
async def real_backend() -> AsyncIterator[Backend]:
    require_real_redis()
    b = Backend("real")
    yield b
    await b.cleanup()


MakeApp = Callable[..., App]


@pytest.fixture
async def make_app(backend: Backend) -> AsyncIterator[MakeApp]:
    """``make_app(plugins=[("name", obj)], consumer={...}, extra={...}, builtins=False,
    disabled=["risk"])``."""
    apps: list[App] = []

    def factory(
        *,
        plugins: list[tuple[str, object]] | None = None,
        consumer: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        builtins: bool = False,
        clock: Any = None,
        name: str | None = None,
        on: Backend | None = None,
        disabled: list[str] | None = None,
    ) -> App:
        b = on or backend
        overrides = {"redis": {"prefix": b.prefix, "group": "g"},
                     "consumer": {"name": name or f"c-{len(apps)}", **(consumer or {})}}
        settings = load_settings(env={}, overrides=overrides)
        if extra:
            import msgspec

            settings = msgspec.structs.replace(settings, extra=extra)
        loaded = build_plugin_manager(load_entrypoints=builtins, extra=plugins or [], env={},
                                      disabled=disabled or [])
        app = App.create(settings, connect=b.connect, clock=clock or ManualClock(START_MS), plugins=loaded)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.aclose()


class Recorder:
    """An inline plugin that notes the asset of every event it is handed, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def navstream_events(self, events: Sequence[Any], out: Any) -> None:
        self.seen += [e.asset for e in events]


async def run_step(app: App, consumer: Any, *entries: dict[str, str], tick: bool = True) -> list[dict[str, str]]:
    """Publish ``entries`` to P:events, handle every batch, tick (unless told not to), and
    return the alerts this step raised, as written."""
    before = await app.redis.xlen(app.keys.alerts)
    for e in entries:
        await app.redis.xadd(app.keys.events, e)
    while await consumer.step(block_ms=1):
        pass
    if tick:
        await consumer.tick()
    return [f for _, f in await app.redis.xrange(app.keys.alerts)][before:]


@pytest.fixture(params=["script", "pipeline"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which write path every batch takes: the batch script, or the pipelined fallback
    (``MAX_SCRIPT_ARGS`` forced to 0). The test fails if the other one wrote."""
    from navstream.store import writer as writer_module
    from navstream.store.writer import Writer

    used = {"script": 0, "pipeline": 0}
    scripted, pipelined = Writer._scripted, Writer._pipelined

    async def spy_scripted(self: Writer, *args: Any) -> Any:
        used["script"] += 1
        return await scripted(self, *args)

    async def spy_pipelined(self: Writer, *args: Any) -> Any:
        used["pipeline"] += 1
        return await pipelined(self, *args)

    monkeypatch.setattr(Writer, "_scripted", spy_scripted)
    monkeypatch.setattr(Writer, "_pipelined", spy_pipelined)
    if request.param == "pipeline":
        monkeypatch.setattr(writer_module, "MAX_SCRIPT_ARGS", 0)
    yield request.param
    other = "script" if request.param == "pipeline" else "pipeline"
    assert used[request.param] > 0 and used[other] == 0, used

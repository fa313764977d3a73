"""navstream.testing: test a plugin the way navstream tests its own, without a Redis server.

A pytest plugin, registered through the ``pytest11`` entry point, so every project that installs
navstream has it: no ``conftest.py`` to copy, and a plugin's tests use the same harness as
navstream's own suite (which is how the harness stays right). Fixtures:

``navstream_backend``
    The Redis a test runs on: a fresh in-process fakeredis server per test, with the Lua
    support navstream's writes need (:class:`Backend`). Override this fixture in a
    ``conftest.py`` to run the same tests on a real Redis too (navstream's own suite does).
``make_app``
    ``make_app(plugins=[("name", plugin)], extra={"section": {...}})`` builds an :class:`App`
    on ``navstream_backend`` with a :class:`ManualClock` at :data:`START_MS` and only the
    plugins given (inline, no entry points unless ``builtins=True``); the apps are closed after
    the test.
``source_context``
    What ``navstream ingest`` hands a source (:class:`SourceContext`): its own HTTP pool, a
    price cache, a clock standing still at :data:`START_MS`, and an empty environment.

Helpers: :func:`start_consumer` and :func:`run_step` (one batch, then one tick, as
``navstream run`` loops over them), :func:`ingest_once` (one round of ``navstream ingest
--once``, in process) and :func:`load_plugins` (what navstream makes of a plugin: its hooks,
source kinds and sections).

The async fixtures need pytest-asyncio (``asyncio_mode = "auto"``, or ``strict`` too: they are
declared as pytest-asyncio fixtures). ``-p no:navstream`` turns the plugin off.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import fakeredis
import msgspec
import pytest
import redis.asyncio as aioredis

from navstream import App, Clock, Event, ManualClock, SourceContext, encode_fields
from navstream.config import Settings, load_settings
from navstream.contract.events import stream_fields
from navstream.ingest.httppool import HttpPool
from navstream.ingest.pricecache import PriceCache
from navstream.ingest.runner import Ingest, IngestError
from navstream.loop.consumer import Consumer
from navstream.plugin.manager import LoadedPlugins, build_plugin_manager

_async_fixture: Any
try:  # declared as pytest-asyncio fixtures, so that they work in its strict mode too
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - without it, pytest says an async fixture has no plugin
    _async_fixture = pytest.fixture

# IngestError is what `navstream ingest` stops with at startup (no enabled source, a source whose
# constructor refused, a missing credential): ingest_once raises it, so it is exported here.
__all__ = [
    "START_MS",
    "Backend",
    "IngestError",
    "IngestRound",
    "MakeApp",
    "ingest_once",
    "load_plugins",
    "make_app",
    "navstream_backend",
    "run_step",
    "source_context",
    "start_consumer",
]

#: The fixed "now" of every clock here (2026-09-21T13:46:40Z): tests that compare timestamps
#: compare them with this, and never with the wall clock.
START_MS = 1_790_000_000_000

# --- the backend -------------------------------------------------------------------------------


def _require_lua() -> None:
    """fakeredis runs EVAL with lupa; navstream's batch writes are Lua scripts (with cjson)."""
    try:
        import lupa  # noqa: F401
    except ImportError:
        pytest.fail(
            "navstream's writes are Lua scripts and fakeredis runs them with lupa, which is not "
            "installed: pip install 'fakeredis[lua]'",
            pytrace=False,
        )


class Backend:
    """One Redis to test against: clients on it and a key prefix of the test's own.

    ``Backend()`` is a fresh fakeredis server: nothing leaks between tests, nothing to clean.
    ``Backend("redis://...")`` is a real server, shared with other tests and processes; the
    prefix keeps this test's keys apart, and :meth:`cleanup` deletes them.
    """

    def __init__(self, url: str | None = None) -> None:
        #: ``"fake"`` or ``"real"``.
        self.kind = "fake" if url is None else "real"
        self.url = url or ""
        #: ``[redis] prefix`` of every app and ingest built on this backend.
        self.prefix = f"nstest-{uuid.uuid4().hex[:10]}"
        self._server: fakeredis.FakeServer | None = None
        if url is None:
            _require_lua()
            self._server = fakeredis.FakeServer()

    def connect(self, decode_responses: bool) -> aioredis.Redis:
        """A new client (``App.create``'s ``connect``): ``str`` replies or ``bytes`` ones."""
        if self._server is not None:
            return fakeredis.FakeAsyncRedis(server=self._server, decode_responses=decode_responses)
        return aioredis.Redis.from_url(self.url, decode_responses=decode_responses)

    async def cleanup(self) -> None:
        """Delete this backend's keys (a fake server is simply dropped)."""
        if self._server is not None:
            return
        client = self.connect(True)
        try:
            keys = [k async for k in client.scan_iter(match=f"{self.prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
def navstream_backend() -> Backend:
    """A fresh fakeredis server for this test. A ``conftest.py`` fixture of the same name
    replaces it (e.g. parametrised over fakeredis and a real Redis): ``make_app`` asks for it
    by name, so every test built on ``make_app`` follows."""
    return Backend()


# --- an app and its loop -------------------------------------------------------------------------


class MakeApp(Protocol):
    """The ``make_app`` fixture's factory."""

    def __call__(
        self,
        *,
        plugins: Iterable[tuple[str, object]] | None = None,
        consumer: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        builtins: bool = False,
        clock: Clock | None = None,
        name: str | None = None,
        on: Backend | None = None,
        disabled: Iterable[str] | None = None,
    ) -> App: ...


@_async_fixture
async def make_app(navstream_backend: Backend) -> AsyncIterator[MakeApp]:
    """``make_app(plugins=[("name", plugin)], ...)``: an :class:`App` as ``navstream run`` builds
    one, on ``navstream_backend``, closed after the test.

    :param plugins: ``(name, plugin)`` pairs registered inline (a module or an object with
        ``@hookimpl`` methods), as if installed under that name.
    :param consumer: ``[consumer]`` settings (``batch_size``, ...).
    :param extra: plugins' config sections, ``{"section": {key: value}}``, as in a config file.
    :param builtins: also load the installed plugins (the entry points); off by default so that a
        test sees only its own plugin.
    :param clock: default a :class:`ManualClock` at :data:`START_MS` (``app.clock.advance(ms)``).
    :param name: the consumer's name in the group (default ``c-0``, ``c-1``, ... per app).
    :param on: another :class:`Backend` than the fixture's (two servers in one test).
    :param disabled: plugin names not to load (with ``builtins``).
    """
    apps: list[App] = []

    def factory(
        *,
        plugins: Iterable[tuple[str, object]] | None = None,
        consumer: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        builtins: bool = False,
        clock: Clock | None = None,
        name: str | None = None,
        on: Backend | None = None,
        disabled: Iterable[str] | None = None,
    ) -> App:
        backend = on or navstream_backend
        overrides = {
            "redis": {"prefix": backend.prefix, "group": "g"},
            "consumer": {"name": name or f"c-{len(apps)}", **(consumer or {})},
        }
        settings = load_settings(env={}, overrides=overrides)
        if extra:
            settings = msgspec.structs.replace(settings, extra=dict(extra))
        loaded = build_plugin_manager(
            load_entrypoints=builtins, extra=list(plugins or []), env={}, disabled=list(disabled or [])
        )
        app = App.create(settings, connect=backend.connect, clock=clock or ManualClock(START_MS), plugins=loaded)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.aclose()


async def start_consumer(app: App) -> Consumer:
    """A consumer of ``app``'s group, set up as ``navstream run`` sets one up before its first
    read: the consumer groups created, the plugins' ``navstream_startup`` run."""
    consumer = Consumer(app)
    await consumer.setup()
    return consumer


async def run_step(
    app: App, consumer: Consumer, *entries: Mapping[str, str] | Event, tick: bool = True
) -> list[dict[str, str]]:
    """Publish ``entries`` to ``P:events``, handle every batch they make, then run one tick
    (unless ``tick=False``), exactly as ``navstream run`` would; return the alerts this step
    raised, as written to ``P:alerts``.

    An entry is a stream entry's fields (``{"type": "price", ...}``, strings, as a producer
    writes them: malformed ones test the dead-letter path) or an event (``Price(...)``),
    encoded as the wire contract says. What the plugins wrote is in Redis: read it through
    ``app.redis`` and ``app.keys``.
    """
    before = await app.redis.xlen(app.keys.alerts)
    for entry in entries:
        fields = encode_fields(entry) if isinstance(entry, msgspec.Struct) else dict(entry)
        await app.redis.xadd(app.keys.events, stream_fields(fields))
    while await consumer.step(block_ms=1):
        pass
    if tick:
        await consumer.tick()
    return (await _entries(app.redis, app.keys.alerts))[before:]


async def _entries(redis: aioredis.Redis, stream: str) -> list[dict[str, str]]:
    """A whole stream's entries, as written (through a ``str``-decoding client)."""
    return [cast("dict[str, str]", fields) for _, fields in await redis.xrange(stream) or []]


# --- plugins and sources -----------------------------------------------------------------------------


def load_plugins(inline: Iterable[tuple[str, object]] = (), *, installed: Iterable[str] | None = None) -> LoadedPlugins:
    """What navstream makes of plugins, as ``navstream plugins`` and ``navstream ingest`` see
    them: ``.info`` (name, module, version, ``hooks``), ``.source_kinds`` (kind -> settings
    type and factory) and ``.sections``.

    :param inline: ``(name, plugin)`` pairs registered as given (no entry point needed).
    :param installed: also load these installed plugins from the ``navstream`` entry-point group
        (as ``NAVSTREAM_PLUGINS`` would), to prove that the package's entry point works.
    :raises navstream.PluginError: a plugin that does not load or does not fit the hook specs.
    """
    names = list(installed or [])
    return build_plugin_manager(
        load_entrypoints=bool(names), extra=list(inline), env={"NAVSTREAM_PLUGINS": ",".join(names)}
    )


@_async_fixture
async def source_context() -> AsyncIterator[SourceContext]:
    """What ``navstream ingest`` hands a source's factory: ``http`` (a pool of its own, closed
    after the test), ``cache``, ``clock`` (a :class:`ManualClock` at :data:`START_MS`) and
    ``env`` (empty: a credential comes only from an ``env`` the test gives, e.g.
    ``SourceContext(ctx.http, ctx.cache, ctx.clock, env={"KEY": "..."})``)."""
    http = HttpPool()
    try:
        yield SourceContext(http, PriceCache(), ManualClock(START_MS), env={})
    finally:
        await http.aclose()


@dataclass
class IngestRound:
    """What one :func:`ingest_once` round did."""

    #: Source instance -> whether its fetch succeeded and was written (the exit code's basis).
    ok: dict[str, bool]
    #: ``P:events`` as written: each source's events, then its ``source_status``.
    events: list[dict[str, str]] = field(default_factory=list)
    #: ``P:alerts`` as written (``source_incomplete`` for a fetch's problems).
    alerts: list[dict[str, str]] = field(default_factory=list)


async def ingest_once(
    sources: Mapping[str, Mapping[str, Any]],
    *,
    plugins: Iterable[tuple[str, object]] = (),
    backend: Backend | None = None,
    env: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> IngestRound:
    """One round of ``navstream ingest --once``, in process: every source of ``sources`` (the
    ``[sources.<instance>]`` tables of a config file, ``{"acme": {"kind": "acme-prices",
    ...}}``) built from ``plugins``' source kinds, fetched once and written to ``backend``.

    :param backend: default a fresh fakeredis server.
    :param env: the environment credentials are read from (default empty).
    :param clock: default a :class:`ManualClock` at :data:`START_MS`.
    :raises navstream.ConfigError: a section ingest would refuse (an unknown key or kind, a bad
        value), naming it.
    :raises IngestError: a source that cannot start (a missing credential), or none enabled.
    """
    backend = backend or Backend()
    settings: Settings = load_settings(env={}, overrides={"redis": {"prefix": backend.prefix}})
    settings = msgspec.structs.replace(settings, extra={"sources": {k: dict(v) for k, v in sources.items()}})
    redis = backend.connect(True)
    try:
        ingest = Ingest(
            settings,
            load_plugins(plugins).source_kinds,
            redis,
            clock=clock or ManualClock(START_MS),
            env=dict(env or {}),
        )
        try:
            ok = await ingest.run_once()
        finally:
            await ingest.aclose()
        return IngestRound(ok, await _entries(redis, ingest.keys.events), await _entries(redis, ingest.keys.alerts))
    finally:
        await redis.aclose()

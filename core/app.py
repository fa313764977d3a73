"""The application object every hook receives: settings, Redis, keys, clock, plugins, counters."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from .config import Settings, validate_plugin_sections
from .keys import Keys
from .pluginmanager import LoadedPlugins, build_plugin_manager

#: ``connect(decode_responses)`` returns a Redis client; the demo and tests pass fakeredis.
Connect = Callable[[bool], aioredis.Redis]


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock epoch milliseconds."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to: the demo's simulated time, and the tests'."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms


@dataclass
class Stats:
    """Counters of one consumer, published in its heartbeat."""

    started_ms: int = 0
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    lost: int = 0
    plugin_errors: int = 0
    write_failures: int = 0
    reconnects: int = 0
    groups_recreated: int = 0
    batches: int = 0
    last_batch_ms: int = 0
    last_batch_size: int = 0
    last_batch_duration_ms: float = 0.0
    by_type: Counter[str] = field(default_factory=Counter)
    lag: dict[str, int | None] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    dlq_length: int = 0

    def heartbeat_fields(self) -> dict[str, str]:
        out = {
            "started_ms": self.started_ms,
            "processed": self.processed,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "lost": self.lost,
            "plugin_errors": self.plugin_errors,
            "write_failures": self.write_failures,
            "reconnects": self.reconnects,
            "batches": self.batches,
            "last_batch_ms": self.last_batch_ms,
            "last_batch_size": self.last_batch_size,
            "last_batch_duration_ms": round(self.last_batch_duration_ms, 3),
            "last_error": self.last_error,
            "dlq_length": self.dlq_length,
        }
        for stream, lag in self.lag.items():
            out[f"lag:{stream}"] = "unknown" if lag is None else lag
        for stream, pending in self.pending.items():
            out[f"pending:{stream}"] = pending
        return {k: str(v) for k, v in out.items()}


class _HiredisPacking:
    """Packs commands in C with hiredis, as synchronous redis-py does: the asyncio connections
    pack every argument in Python, which for a batch write costs more than the write itself.

    As with synchronous redis-py, ``str`` arguments are encoded as strict UTF-8 whatever the
    client's ``encoding_errors`` (navstream sends no lone surrogates: what it reads back is
    decoded with ``backslashreplace``), and only ``str``, ``bytes``, ``int`` and ``float``
    (``bytearray`` and ``memoryview`` through redis-py's serializer) are accepted."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (isinstance(first, str) and " " not in first) or (isinstance(first, bytes) and b" " not in first):
            try:  # the common case, straight to C: str, bytes and numbers
                return [hiredis.pack_command(args)]
            except TypeError:
                pass  # bytearray, memoryview: the serializer converts them (or says what is wrong)
        return self._serializer.pack(*args)


def with_hiredis_packing(client: aioredis.Redis) -> aioredis.Redis:
    """``client`` with its pool's connections packing commands through hiredis, if installed."""
    if HIREDIS_AVAILABLE:
        pool = client.connection_pool
        base = pool.connection_class
        if not issubclass(base, _HiredisPacking):
            pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return client


def default_connect(settings: Settings) -> Connect:
    def connect(decode_responses: bool) -> aioredis.Redis:
        return with_hiredis_packing(aioredis.Redis.from_url(
            settings.redis.url,
            decode_responses=decode_responses,
            socket_connect_timeout=5,
            socket_keepalive=True,
            health_check_interval=30,
            # Shows up in CLIENT LIST, so ops can tell which consumer holds which connection.
            client_name=f"navstream:{settings.consumer_name()}",
            # Ride out a blip (a killed connection, a failover) on the spot; a longer outage is
            # the loop's to handle, with its own backoff and alerts. At-least-once makes a
            # repeated command harmless.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        ))

    return connect


class App:
    """What plugins see. Build with :meth:`create`; close with :meth:`aclose`.

    :ivar redis: a client returning ``str``, for plugins and the CLI.
    :ivar raw: a client returning ``bytes``, for reading streams (a producer's invalid UTF-8
        must become a dead letter, not a parse error that stalls the loop).
    """

    def __init__(
        self,
        settings: Settings,
        plugins: LoadedPlugins,
        plugin_configs: Mapping[str, Any],
        connect: Connect,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.pm = plugins.manager
        self._plugin_configs = dict(plugin_configs)
        self.keys = Keys(settings.redis.prefix)
        self.group = settings.redis.group
        self.consumer_name = settings.consumer_name()
        self.clock = clock
        self.redis: aioredis.Redis = connect(True)
        # A producer's invalid UTF-8 (kept byte for byte in P:dlq) must not make reads through
        # the str client fail: show it escaped instead.
        self.redis.connection_pool.connection_kwargs["encoding_errors"] = "backslashreplace"
        self.raw: aioredis.Redis = connect(False)
        self.stats = Stats(started_ms=clock.now_ms())
        #: Plugins keep their private per-app state here, under their own name.
        self.plugin_state: dict[str, Any] = {}

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        connect: Connect | None = None,
        clock: Clock | None = None,
        plugins: LoadedPlugins | None = None,
        load_entrypoints: bool = True,
        extra_plugins: tuple[tuple[str, object], ...] = (),
    ) -> App:
        """Load plugins, validate their config sections, and make the Redis clients.

        :raises PluginError: a plugin that cannot load.
        :raises ConfigError: a config section that is unknown or invalid.
        """
        if plugins is None:
            plugins = build_plugin_manager(
                disabled=settings.plugins.disabled,
                modules=settings.plugins.modules,
                load_entrypoints=load_entrypoints,
                extra=extra_plugins,
            )
        configs = validate_plugin_sections(settings, plugins.sections, plugins.disabled_sections)
        return cls(settings, plugins, configs, connect or default_connect(settings), clock or SystemClock())

    def plugin_config(self, section: str) -> Any:
        """The decoded config section a plugin declared (defaults applied)."""
        try:
            return self._plugin_configs[section]
        except KeyError:
            raise KeyError(f"no plugin declared config section [{section}]") from None

    def has_impls(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self.raw.aclose()

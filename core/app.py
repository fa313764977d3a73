"""The application object every hook receives: settings, Redis, keys, clock, plugins, counters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar, cast, overload

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from navstream import display
from navstream.clock import Clock, SystemClock
from navstream.clock import ManualClock as ManualClock  # re-exported: tests and the demo import it from here
from navstream.config import Settings, validate_plugin_sections
from navstream.contract.keys import Keys
from navstream.plugin import calls
from navstream.plugin.manager import LoadedPlugins, build_plugin_manager
from navstream.stats import Stats

#: ``connect(decode_responses)`` returns a Redis client; the demo and tests pass fakeredis.
Connect = Callable[[bool], aioredis.Redis]


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


_Config = TypeVar("_Config")


def redis_auth_options(settings: Settings) -> dict[str, Any]:
    """Credentials and TLS options from ``[redis]`` (environment variables) for ``from_url``;
    what the URL itself says (``user:password@``, ``?ssl_ca_certs=``) wins over them."""
    redis = settings.redis
    options: dict[str, Any] = {}
    if redis.username:
        options["username"] = redis.username
    if redis.password:
        options["password"] = redis.password
    if redis.ca_file:
        options["ssl_ca_certs"] = redis.ca_file
    return options


def _cluster_class() -> Any:
    """``RedisCluster`` whose MULTI pipelines queue commands in the caller's event loop.

    redis-py 8.1's async transaction pipeline (``pipeline(transaction=True)``) runs every
    queued command through ``asyncio.run`` in a new thread, to find its slot; the first one
    of a fresh client even discovers the cluster there, leaving connections bound to a loop
    that is gone. navstream's commands name their key first (``EVAL``/``EVALSHA`` after the
    key count), so the slot is computed on the spot here, and the cluster is discovered in
    the caller's loop before the MULTI runs; anything else takes redis-py's own way."""
    from redis.asyncio.cluster import AbstractStrategy, ClusterPipeline, RedisCluster, TransactionStrategy

    class _Transaction(TransactionStrategy):
        def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            command = str(args[0]).upper()
            key: Any = None
            if command in ("EVAL", "EVALSHA"):
                if len(args) > 3 and int(args[2]) > 0:
                    key = args[3]
            elif len(args) > 1:
                key = args[1]
            if (
                key is None
                or self._watching
                or self._explicit_transaction
                or command in self.IMMEDIATE_EXECUTE_COMMANDS
            ):
                return super().execute_command(*args, **kwargs)
            self._pipeline_slots.add(self._pipe.cluster_client.keyslot(key))
            return AbstractStrategy.execute_command(self, *args, **kwargs)

    class _Pipeline(ClusterPipeline):
        def __init__(self, client: RedisCluster, transaction: bool | None = None) -> None:
            super().__init__(client, transaction)
            # redis-py's command protocol declares it; its own ClusterPipeline never sets it
            self._event_dispatcher = client._event_dispatcher
            if transaction:
                self._execution_strategy = _Transaction(self)

        async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
            if self.cluster_client._initialize:
                await self.cluster_client.initialize()
            return await super().execute(raise_on_error, allow_redirections)

    class NavstreamCluster(RedisCluster):
        def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
            if shard_hint:
                raise ValueError("RedisCluster does not support shard_hint")
            return _Pipeline(self, transaction)

    return NavstreamCluster


def cluster_connect(settings: Settings, decode_responses: bool) -> aioredis.Redis:
    """A Redis Cluster client (``[redis] cluster``), found from the node that ``url`` names.

    Typed as ``Redis`` because it answers the same commands for navstream's use: every key of
    a deployment is under one hash tag (:class:`~navstream.contract.keys.Keys`), so each script, MULTI
    and multi-stream read goes to the one node that holds the slot (docs/scaling.md). The
    connections keep redis-py's own packing (:func:`with_hiredis_packing` is for pools)."""
    client = _cluster_class().from_url(
        settings.redis.url,
        **_connection_options(settings, decode_responses),
        # as App sets on a pool: invalid UTF-8 in an entry is shown escaped, never an error
        encoding_errors="backslashreplace" if decode_responses else "strict",
    )
    return cast(aioredis.Redis, client)


def _connection_options(settings: Settings, decode_responses: bool) -> dict[str, Any]:
    """What every connection navstream opens has, on one node or a cluster."""
    return {
        **redis_auth_options(settings),
        "decode_responses": decode_responses,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 30,
        # Shows up in CLIENT LIST, so ops can tell which consumer holds which connection.
        "client_name": f"navstream:{settings.consumer_name()}",
        # Ride out a blip (a killed connection, a failover, a moved slot) on the spot; a longer
        # outage is the loop's to handle, with its own backoff and alerts. At-least-once makes a
        # repeated command harmless.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def default_connect(settings: Settings) -> Connect:
    def connect(decode_responses: bool) -> aioredis.Redis:
        if settings.redis.cluster:
            return cluster_connect(settings, decode_responses)
        return with_hiredis_packing(
            aioredis.Redis.from_url(settings.redis.url, **_connection_options(settings, decode_responses))
        )

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
        display.use(settings.display)  # alert texts and pages show money this desk's way
        self.plugins = plugins
        self.pm = plugins.manager
        self._plugin_configs = dict(plugin_configs)
        self.keys = Keys(settings.redis.prefix, cluster=settings.redis.cluster)
        self.group = settings.redis.group
        self.consumer_name = settings.consumer_name()
        self.clock = clock
        self.redis: aioredis.Redis = connect(True)
        # A producer's invalid UTF-8 (kept byte for byte in P:dlq) must not make reads through
        # the str client fail: show it escaped instead.
        # (A cluster client has no one pool: cluster_connect passes the same option.)
        pool = getattr(self.redis, "connection_pool", None)
        if pool is not None:
            pool.connection_kwargs["encoding_errors"] = "backslashreplace"
        self.raw: aioredis.Redis = connect(False)
        self.stats = Stats(started_ms=clock.now_ms())

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

    @overload
    def plugin_config(self, section: str) -> Any: ...

    @overload
    def plugin_config(self, section: str, kind: type[_Config]) -> _Config: ...

    def plugin_config(self, section: str, kind: type[Any] | None = None) -> Any:
        """The decoded config section a plugin declared (defaults applied).

        :param kind: the class the section decodes to; when given, the section is checked to
            be one (a ``TypeError`` otherwise) and typed as one.
        """
        try:
            config = self._plugin_configs[section]
        except KeyError:
            raise KeyError(f"no plugin declared config section [{section}]") from None
        if kind is not None and not isinstance(config, kind):
            raise TypeError(f"config section [{section}] is a {type(config).__name__}, not a {kind.__name__}")
        return config

    def plugin(self, name: str) -> object:
        """The registered plugin object named ``name`` (a class plugin's instance for this app).

        :raises KeyError: no plugin of that name is loaded.
        """
        plugin = self.pm.get_plugin(name)
        if plugin is None:
            raise KeyError(f"no plugin {name!r} is loaded")
        return plugin

    def has_impls(self, hook_name: str) -> bool:
        return calls.has_impls(self.pm, hook_name)

    async def scan_page(self, cursor: int, *, match: str, count: int) -> tuple[int, list[str]]:
        """One ``SCAN`` call (through :attr:`redis`) for keys of this deployment, ``match``
        being under :attr:`keys`' prefix. On Redis Cluster it asks only the node that holds
        the prefix's slot, where all of them are, and the cursor stays a number."""
        if not self.settings.redis.cluster:
            next_cursor, found = await self.redis.scan(cursor, match=match, count=count)
            return int(next_cursor), [str(key) for key in found]
        cluster: Any = self.redis
        node = cluster.get_node_from_key(self.keys.events)
        cursors, found = await cluster.scan(cursor, match=match, count=count, target_nodes=node)
        next_cursor = next(iter(cursors.values()), 0) if isinstance(cursors, dict) else cursors
        return int(next_cursor), [str(key) for key in found]

    async def scan_keys(self, *, match: str, count: int = 500) -> AsyncIterator[str]:
        """Every key matching ``match`` (under :attr:`keys`' prefix), as :meth:`scan_page` finds them."""
        cursor = 0
        while True:
            cursor, found = await self.scan_page(cursor, match=match, count=count)
            for key in found:
                yield key
            if cursor == 0:
                return

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self.raw.aclose()

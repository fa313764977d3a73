"""The consumer loop: read a batch, handle it, tick; survive Redis going away; stop gracefully.

One batch is in flight at a time (backpressure comes from the consumer group: we read only what
we finish). How a batch is handled is :mod:`navstream.loop.batch`; reclaiming, heartbeats and
the rest of the time-based upkeep is :mod:`navstream.loop.upkeep`; creating the consumer groups
is :mod:`navstream.loop.groups`, and what the loop does when Redis goes away, refuses writes or
loses a group is :mod:`navstream.loop.outages`. Which input streams a consumer reads and whose
ticks it runs is its ``[consumer] role``'s (:mod:`navstream.loop.roles`).

``StartupError``, ``AlertThrottle``, ``tune_gc`` and ``GC_THRESHOLD`` live in their own modules
and are re-exported here, where callers have always imported them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from navstream.app import App
from navstream.contract.outputs import Outputs
from navstream.loop.batch import BatchHandler
from navstream.loop.entries import ReadReply, read_entries
from navstream.loop.errors import StartupError
from navstream.loop.gctune import GC_THRESHOLD, tune_gc, tune_switching
from navstream.loop.lane import OrdersLane
from navstream.loop.observer import LoopObserver
from navstream.loop.outages import TRANSIENT, OutagesMixin
from navstream.loop.roles import check_role, read_streams, tick_plugins
from navstream.loop.throttle import AlertThrottle
from navstream.loop.upkeep import Upkeep
from navstream.plugin import calls
from navstream.plugin.dispatch import dispatch_tick
from navstream.store.writer import BatchWrite, WriteError, Writer, WritesRefused, is_missing_group, refusal

if TYPE_CHECKING:  # imported where used: every CLI command imports this module, few run a loop
    from navstream.serve.http import HttpServer
    from navstream.serve.routes import Endpoints

__all__ = [
    "AlertThrottle",
    "Consumer",
    "GC_THRESHOLD",
    "IDLE_CONSUMER_SWEEP_TICKS",
    "StartupError",
    "TRANSIENT",
    "tune_gc",
]

log = logging.getLogger("navstream.consumer")

IDLE_CONSUMER_SWEEP_TICKS = 60


class Consumer(OutagesMixin):
    """Runs the loop for one consumer of the group, in its ``[consumer] role``.

    :param until_idle_s: stop (exit 0) once nothing new or reclaimed arrived for this long.
    :param max_events: stop after handling this many entries.
    :raises ConfigError: a role the plugins loaded cannot fill (``orders`` with no order plugin).
    """

    def __init__(self, app: App, *, until_idle_s: float | None = None, max_events: int | None = None) -> None:
        check_role(app.settings, app.plugins)
        self.app = app
        self.settings = app.settings.consumer
        self.role = self.settings.role
        #: The plugins this consumer ticks (None: all), by its role (:mod:`navstream.loop.roles`).
        self.ticked = tick_plugins(app)
        self.keys = app.keys
        self.until_idle_s = until_idle_s
        self.max_events = max_events
        self.writer = Writer(app)
        self.streams: list[str] = []
        #: In role ``all`` with ``orders_lane``, while the loop runs: the task that reads and
        #: answers orders on its own (:mod:`navstream.loop.lane`); the loop's own reads then
        #: leave ``P:orders`` to it.
        self.lane: OrdersLane | None = None
        self._stopping = asyncio.Event()
        self._tick_count = 0
        self._down_since: float | None = None
        self._attempts = 0
        #: Outages (seconds, from the first failure to the first success) not yet alerted.
        self._owed_reconnects: list[float] = []
        #: Consecutive refusals of writes (OOM, READONLY, MISCONF), for the backoff.
        self._refusals = 0
        #: The server knows no ``XGROUP CREATE ... ENTRIESREAD`` (Redis before 7).
        self._no_entries_read = False
        self._owed_group_alerts: list[tuple[str, str]] = []
        #: This consumer recreated a group and owes every consumer a new ``P:state:epoch``.
        self._owed_epoch = False
        self.throttle = AlertThrottle(self.settings.alert_cooldown_s)
        from navstream.serve.metrics import Metrics

        #: Told of every batch the loop finishes; ``/metrics`` and the benches subscribe.
        self.observer = LoopObserver()
        #: This consumer's Prometheus registry (``/metrics``).
        self.metrics = Metrics(app)
        self.observer.on_batch(lambda done: self.metrics.observe_batch(done.entries, done.duration_s, done.processed))
        self.handler = BatchHandler(app, self.writer, self.throttle, self.observer)
        self.upkeep = Upkeep(app, self.writer, self.handler)
        self._phase = "created"
        #: ``time.monotonic()`` of the loop's last progress (an iteration, a reconnect attempt):
        #: ``/healthz`` fails when it is older than the heartbeat TTL.
        self.alive_at = time.monotonic()
        #: The HTTP endpoint (``[http] port``), while it runs.
        self.http: HttpServer | None = None
        self._endpoints: Endpoints | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop reading; the batch in flight is finished and acknowledged first."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def phase(self) -> str:
        """``created``, ``starting`` (setup), ``running``, ``stopping`` or ``stopped``."""
        if self.stopping and self._phase in ("starting", "running"):
            return "stopping"
        return self._phase

    @property
    def down_for_s(self) -> float | None:
        """Seconds since the loop lost Redis; None while connected."""
        return None if self._down_since is None else time.monotonic() - self._down_since

    def health(self) -> dict[str, str]:
        """Every plugin's health and this consumer's own, as its heartbeat writes them."""
        return self.upkeep.health()

    @property
    def writes_refused_reason(self) -> str:
        """What Redis said when it last refused this consumer's writes ("" when unknown)."""
        return self.writer.refused_reason or ""

    async def start_http(self) -> None:
        """Serve ``/healthz``, ``/readyz``, ``/metrics`` and the status page if ``[http] port``
        is set. A port that cannot be listened on stops the start, naming the port."""
        from navstream.serve.http import HttpStartError
        from navstream.serve.routes import start_http

        cfg = self.app.settings.http
        if cfg.port == 0 or self.http is not None:
            return
        try:
            self.http, self._endpoints = await start_http(self, cfg.host, cfg.port)
        except HttpStartError as exc:
            raise StartupError(str(exc)) from exc

    async def stop_http(self) -> None:
        if self._endpoints is not None:
            self._endpoints.close()
            self._endpoints = None
        if self.http is not None:
            await self.http.stop()
            self.http = None

    async def setup(self) -> None:
        """Create the groups, run the startup hooks, and decide which streams to read (by role)."""
        self.streams = read_streams(self.app)
        await self.ensure_groups(self.streams)
        try:  # the others too, so that what is written there waits for a later consumer that reads it
            await self.ensure_groups([s for s in self.keys.inputs if s not in self.streams])
        except ResponseError as exc:
            if refusal(exc) is None:
                raise  # refused writes: a later start creates it, this consumer does not read it
        await self.upkeep.learn_epoch()
        try:
            await calls.call_in_turn(self.app.pm, "navstream_startup", {"app": self.app})
        except calls.HookFailed as failed:
            failure = failed.error
            if isinstance(failure, (RedisConnectionError, RedisTimeoutError)) or refusal(failure) is not None:
                raise failure from None  # Redis going away or refusing writes during startup: retried like any outage
            raise StartupError(
                f"plugin {failed.plugin!r} failed to start: {type(failure).__name__}: {failure}"
            ) from failure
        if self.keys.orders not in self.streams and self.role == "all":  # role events: orders are others' job
            out = Outputs(self.app.clock.now_ms())
            out.alert(
                "no_order_handler",
                "warning",
                f"no plugin handles orders: {self.keys.orders} is not read, so orders wait "
                "unanswered (the engine's deadline vetoes them) until a risk gate is loaded",
            )
            try:
                await self.writer.write(BatchWrite(out))
            except WritesRefused:
                pass  # logged (alert and refusal); a warning is not worth waiting for writes
        log.info(
            "consumer started",
            extra={
                "event": "consumer_started",
                "consumer": self.app.consumer_name,
                "group": self.app.group,
                "role": self.role,
                "streams": self.streams,
                "plugins": [p.name for p in self.app.plugins.info],
            },
        )

    async def run(self) -> int:
        """The loop; returns the process exit code (0 after a graceful stop).

        The HTTP endpoint starts first: a port in use fails the start at once, and during a
        Redis outage at startup ``/healthz`` answers and ``/readyz`` says what it waits for.
        """
        self.app.stats.started_ms = self.app.clock.now_ms()
        self._phase, self.alive_at = "starting", time.monotonic()
        await self.start_http()
        try:
            return await self._run()
        finally:
            self._phase = "stopped"
            await self.stop_http()

    async def _run(self) -> int:
        await self._until_connected(self.setup)
        self._phase = "running"
        tune_gc()
        tune_switching()
        last_activity = time.monotonic()
        next_tick = 0.0
        group_lost: ResponseError | None = None
        if self.role == "all" and self.settings.orders_lane and self.keys.orders in self.streams:
            self.lane = OrdersLane(self)
            self.lane.start()
        try:
            while not self.stopping:
                now = self.alive_at = time.monotonic()
                lane_failed = self.lane.failure() if self.lane is not None else None
                if lane_failed is not None:
                    raise lane_failed
                try:
                    # Recovery work does I/O too, so it runs in here, where failures are handled.
                    if group_lost is not None:
                        await self._group_missing(group_lost)
                        group_lost = None
                    await self._recovered()
                    await self._flush_owed()
                    held = self.handler.held
                    if now >= next_tick:  # on time under load too: ticks never wait for idleness
                        next_tick = now + self.settings.tick_ms / 1000
                        lane_held = self.lane is not None and self.lane.handler.held is not None
                        try:
                            # Not while a batch Redis refused waits to be retried as it is (the
                            # lane's included): claiming it would judge its orders twice.
                            if held is None and not lane_held and await self.reclaim():
                                last_activity = time.monotonic()
                        finally:  # a reclaimed batch that fails must not cost the heartbeat
                            await self.tick()
                    if self.stopping:  # a signal during reclaim or tick: read nothing more
                        break
                    if held is not None:  # a batch Redis refused goes first, as it is
                        await self.handler.handle(held)
                        last_activity = time.monotonic()
                    elif await self.step(self._block_ms(now, next_tick)):
                        last_activity = time.monotonic()
                    self._refusals = 0
                except TRANSIENT as exc:
                    await self._connection_lost(exc)
                    continue
                except WritesRefused:
                    await self._writes_refused()
                    continue
                except WriteError as exc:
                    await self._write_failed(exc)
                    continue
                except ResponseError as exc:
                    reason = refusal(exc)
                    if reason is not None:  # a read that writes (XREADGROUP, XAUTOCLAIM) refused
                        self.writer.note_refused(reason, "loop")
                        await self._writes_refused()
                        continue
                    if not is_missing_group(exc):
                        raise
                    group_lost = exc
                    continue
                if self.lane is not None:
                    last_activity = max(last_activity, self.lane.active_at)
                if self.max_events is not None and self.handled >= self.max_events:
                    log.info("max events reached", extra={"event": "max_events", "handled": self.handled})
                    break
                if self.until_idle_s is not None and time.monotonic() - last_activity >= self.until_idle_s:
                    log.info("idle, stopping", extra={"event": "until_idle", "idle_s": self.until_idle_s})
                    break
        finally:
            lane_failed = None
            if self.lane is not None:  # its batch in flight is finished and acknowledged first
                self._stopping.set()
                lane_failed = await self.lane.stop()
            await self.shutdown()
            if lane_failed is not None:  # never lost behind a stop for another reason
                raise lane_failed
        return 0

    @property
    def handled(self) -> int:
        """Entries acknowledged so far (processed or dead-lettered), the orders lane's included."""
        return self.handler.handled + (self.lane.handler.handled if self.lane is not None else 0)

    def _block_ms(self, now: float, next_tick: float) -> int:
        block = min(self.settings.block_ms, max(1, int((next_tick - now) * 1000)))
        if self.until_idle_s is not None:
            block = min(block, max(1, int(self.until_idle_s * 1000)))
        return block

    async def write_failed(self, exc: WriteError) -> None:
        """Report and back off after a batch whose writes Redis refused (the orders lane's too)."""
        await self._write_failed(exc)

    async def shutdown(self) -> None:
        """Final heartbeat (``stopped``) and every plugin's shutdown hook; failures are logged."""
        self._phase = "stopping"
        try:
            await self.tick(final=True)
        except Exception as exc:  # noqa: BLE001 - shutting down; report and go on (a refused write included)
            log.warning("final heartbeat failed", extra={"event": "shutdown_tick_failed", "error": str(exc)})
        for stopped in await calls.collect(self.app.pm, "navstream_shutdown", {"app": self.app}):
            if stopped.exc is not None:
                log.error(
                    "plugin shutdown failed",
                    extra={"event": "plugin_shutdown_failed", "plugin": stopped.plugin, "error": str(stopped.exc)},
                )
        log.info("consumer stopped", extra={"event": "consumer_stopped", **self.app.stats.heartbeat_values()})

    # --- reading ----------------------------------------------------------------------------

    async def step(self, block_ms: int | None = None) -> int:
        """Read one batch of new entries, handle and acknowledge it; return how many."""
        count = self.handler.read_count(self.settings.batch_size)
        if self.max_events is not None:
            count = max(1, min(count, self.max_events - self.handled))
        streams = self.streams if self.lane is None else [s for s in self.streams if s != self.keys.orders]
        issued = time.perf_counter_ns() if self.observer.timing else 0
        response = cast(
            ReadReply,
            await self.app.raw.xreadgroup(
                self.app.group,
                self.app.consumer_name,
                {s: ">" for s in streams},
                count=count,
                block=block_ms if block_ms is not None else self.settings.block_ms,
            ),
        )
        self.observer.work("read", issued)
        entries = read_entries(response)
        if entries:
            await self.handler.handle(entries)
        return len(entries)

    # --- time-based work --------------------------------------------------------------------

    async def reclaim(self) -> int:
        """Claim and handle entries pending longer than ``claim_idle_ms``; return how many."""
        started = time.perf_counter_ns() if self.observer.timing else 0
        try:
            return await self.upkeep.reclaim(self.streams)
        finally:
            self.observer.work("reclaim", started)

    async def remove_idle_consumers(self, idle_ms: int | None = None) -> list[str]:
        """Remove consumers idle past ``idle_ms`` (default: the setting) with nothing pending."""
        return await self.upkeep.remove_idle_consumers(self.streams, idle_ms)

    async def tick(self, *, final: bool = False) -> None:
        """Plugins' time-based work, lag and pending figures, and this consumer's heartbeat."""
        started = time.perf_counter_ns() if self.observer.timing else 0
        try:
            await self._tick(final)
        finally:
            self.observer.work("tick", started)

    async def _tick(self, final: bool) -> None:
        app = self.app
        now = app.clock.now_ms()
        self._tick_count += 1
        result = await dispatch_tick(app, now, lambda: Outputs(now), self.ticked)
        out = result.outputs
        for failure in result.failures:
            app.stats.plugin_errors += 1
            if self.throttle.allow(("plugin_error", failure.plugin, failure.error)):
                out.alert(
                    "plugin_error",
                    "critical",
                    f"{failure.error} (in navstream_tick; "
                    f"repeats are counted in the heartbeat, alerted at most every "
                    f"{self.throttle.cooldown_s:g}s)",
                )
        try:
            await self.upkeep.refresh_lag(self.streams, out)
            await self.upkeep.check_dlq(out)
        finally:
            # The heartbeat first and on its own, whatever happened above or happens to the
            # tick's alerts below, as long as Redis answers at all.
            status = "stopped" if final else ("reconnecting" if self._down_since else "running")
            lost = await self.upkeep.heartbeat(self.streams, status)
            if lost is not None:  # before the tick's alerts are written: they go out now
                self._data_lost(lost)
            await self.upkeep.write_tick(out)
        if not final and self._tick_count % IDLE_CONSUMER_SWEEP_TICKS == 1:
            await self.upkeep.remove_idle_consumers(self.streams)

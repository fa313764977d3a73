"""The consumer loop: read a batch, decode, dispatch to plugins, write, acknowledge; tick.

One batch is in flight at a time (backpressure comes from the consumer group: we read only what
we finish). Entries that fail stay pending and are reclaimed with XAUTOCLAIM after
``claim_idle_ms``, by this consumer or any other; after ``max_deliveries`` they are
dead-lettered with their error. Nothing is acknowledged before its results are written.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .app import App
from .dispatch import dispatch_batch, dispatch_tick
from .events import DecodeError, decode_event, decode_order
from .outputs import Outputs
from .pluginmanager import await_me_maybe, call_impl, hook_impls
from .writer import BatchWrite, DeadLetter, Writer, WriteError, is_missing_group

log = logging.getLogger("navstream.consumer")

TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
IDLE_CONSUMER_SWEEP_TICKS = 60

# Deletes a consumer only if it has nothing pending, atomically: XGROUP DELCONSUMER on a
# consumer with pending entries would drop them from the PEL and orphan them.
DELETE_IF_IDLE_LUA = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


class StartupError(RuntimeError):
    """A plugin refused to start; navstream does not run without it."""


@dataclass(slots=True)
class Entry:
    stream: str
    id: str
    fields: Mapping[bytes | str, bytes | str]
    deliveries: int = 1

    @property
    def ref(self) -> str:
        return f"{self.stream}/{self.id}"


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Consumer:
    """Runs the loop for one consumer of the group.

    :param until_idle_s: stop (exit 0) once nothing new or reclaimed arrived for this long.
    :param max_events: stop after handling this many entries.
    """

    def __init__(
        self, app: App, *, until_idle_s: float | None = None, max_events: int | None = None
    ) -> None:
        self.app = app
        self.settings = app.settings.consumer
        self.keys = app.keys
        self.until_idle_s = until_idle_s
        self.max_events = max_events
        self.writer = Writer(app)
        self.streams: list[str] = []
        self._stopping = asyncio.Event()
        self._claim_cursor: dict[str, str] = {}
        self._tick_count = 0
        self._down_since: float | None = None
        self._attempts = 0
        self._dlq_alerted = False
        self._handled = 0
        self._delete_if_idle = app.raw.register_script(DELETE_IF_IDLE_LUA)

    # --- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop reading; the batch in flight is finished and acknowledged first."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def setup(self) -> None:
        """Create the groups, run the startup hooks, and decide which streams to read."""
        self.streams = [self.keys.events]
        if self.app.has_impls("navstream_orders"):
            self.streams.append(self.keys.orders)
        await self.ensure_groups(self.keys.inputs)
        for impl in hook_impls(self.app.pm, "navstream_startup"):
            try:
                await await_me_maybe(call_impl(impl, {"app": self.app}))
            except TRANSIENT:
                raise
            except Exception as exc:
                raise StartupError(
                    f"plugin {impl.plugin_name!r} failed to start: {type(exc).__name__}: {exc}") from exc
        if self.keys.orders not in self.streams:
            out = Outputs(self.app.clock.now_ms())
            out.alert(
                "no_order_handler", "warning",
                f"no plugin handles orders: {self.keys.orders} is not read, so orders wait "
                "unanswered (the engine's deadline vetoes them) until a risk gate is loaded",
            )
            await self.writer.write(BatchWrite(out))
        log.info("consumer started", extra={
            "event": "consumer_started", "consumer": self.app.consumer_name,
            "group": self.app.group, "streams": self.streams,
            "plugins": [p.name for p in self.app.plugins.info]})

    async def ensure_groups(self, streams: Sequence[str]) -> list[str]:
        """Create the group on each stream (``MKSTREAM``, id ``0``); return those created."""
        created = []
        for stream in streams:
            try:
                await self.app.raw.xgroup_create(stream, self.app.group, id="0", mkstream=True)
                created.append(stream)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        return created

    async def run(self) -> int:
        """The loop; returns the process exit code (0 after a graceful stop)."""
        self.app.stats.started_ms = self.app.clock.now_ms()
        await self._until_connected(self.setup)
        last_activity = time.monotonic()
        next_tick = 0.0
        try:
            while not self.stopping:
                now = time.monotonic()
                try:
                    if now >= next_tick:  # on time under load too: ticks never wait for idleness
                        next_tick = now + self.settings.tick_ms / 1000
                        if await self.reclaim():
                            last_activity = time.monotonic()
                        await self.tick()
                    if await self.step(self._block_ms(now, next_tick)):
                        last_activity = time.monotonic()
                    await self._recovered()
                except TRANSIENT as exc:
                    await self._connection_lost(exc)
                    continue
                except WriteError as exc:
                    await self._write_failed(exc)
                    continue
                except ResponseError as exc:
                    if not is_missing_group(exc):
                        raise
                    await self._group_missing(exc)
                    continue
                if self.max_events is not None and self._handled >= self.max_events:
                    log.info("max events reached", extra={"event": "max_events", "handled": self._handled})
                    break
                if self.until_idle_s is not None and time.monotonic() - last_activity >= self.until_idle_s:
                    log.info("idle, stopping", extra={"event": "until_idle", "idle_s": self.until_idle_s})
                    break
        finally:
            await self.shutdown()
        return 0

    def _block_ms(self, now: float, next_tick: float) -> int:
        block = min(self.settings.block_ms, max(1, int((next_tick - now) * 1000)))
        if self.until_idle_s is not None:
            block = min(block, max(1, int(self.until_idle_s * 1000)))
        return block

    async def shutdown(self) -> None:
        """Final heartbeat (``stopped``) and every plugin's shutdown hook; failures are logged."""
        try:
            await self.tick(final=True)
        except Exception as exc:  # noqa: BLE001 - shutting down; report and go on
            log.warning("final heartbeat failed", extra={"event": "shutdown_tick_failed", "error": str(exc)})
        for impl in hook_impls(self.app.pm, "navstream_shutdown"):
            try:
                await await_me_maybe(call_impl(impl, {"app": self.app}))
            except Exception as exc:  # noqa: BLE001
                log.error("plugin shutdown failed", extra={
                    "event": "plugin_shutdown_failed", "plugin": impl.plugin_name, "error": str(exc)})
        log.info("consumer stopped", extra={"event": "consumer_stopped", **self.app.stats.heartbeat_fields()})

    # --- connection trouble -----------------------------------------------------------------

    async def _until_connected(self, fn: Any) -> None:
        while True:
            try:
                await fn()
                await self._recovered()
                return
            except TRANSIENT as exc:
                await self._connection_lost(exc)
                if self.stopping:
                    raise

    async def _connection_lost(self, exc: BaseException) -> None:
        stats = self.app.stats
        stats.reconnects += 1
        stats.last_error = f"redis: {type(exc).__name__}: {exc}"
        if self._down_since is None:
            self._down_since = time.monotonic()
        down_for = time.monotonic() - self._down_since
        self._attempts += 1
        attempt = min(self._attempts, 16)
        delay = min(self.settings.reconnect_max_ms / 1000, 0.05 * 2**attempt) * (0.5 + random.random() / 2)
        log.error("redis unreachable, retrying", extra={
            "event": "redis_unreachable", "error": str(exc), "down_s": round(down_for, 1),
            "retry_in_s": round(delay, 2)})
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass

    async def _recovered(self) -> None:
        if self._down_since is None:
            return
        down_for = time.monotonic() - self._down_since
        self._down_since = None
        self._attempts = 0
        out = Outputs(self.app.clock.now_ms())
        out.alert("redis_reconnected", "warning",
                  f"connection to Redis restored after {down_for:.1f}s; pending entries are reclaimed")
        await self.writer.write(BatchWrite(out))

    async def _write_failed(self, exc: WriteError) -> None:
        """Redis refused some writes of a batch: nothing was acknowledged, so nothing is lost.

        The entries stay pending and are retried when reclaimed; until then say so loudly and
        slow down rather than spin.
        """
        self.app.stats.last_error = f"write: {exc}"
        log.error("batch writes refused; entries stay pending", extra={"event": "write_failed", "error": str(exc)})
        out = Outputs(self.app.clock.now_ms())
        out.alert("write_failed", "critical",
                  f"Redis refused writes of a batch, which stays pending and is retried: {exc}")
        try:
            await self.writer.write(BatchWrite(out))
        except (WriteError, *TRANSIENT) as again:
            log.error("could not write the write_failed alert", extra={"event": "alert_failed", "error": str(again)})
        await asyncio.sleep(min(self.settings.reconnect_max_ms, self.settings.claim_idle_ms) / 1000 / 10)

    async def _group_missing(self, exc: ResponseError) -> None:
        created = await self.ensure_groups(self.streams)
        self.app.stats.groups_recreated += len(created)
        out = Outputs(self.app.clock.now_ms())
        for stream in created:
            out.alert("group_recreated", "critical",
                      f"consumer group {self.app.group!r} on {stream} had vanished (Redis restarted "
                      f"without persistence, or flushed?); recreated at id 0: {exc}")
        await self.writer.write(BatchWrite(out))
        if not created:  # someone else recreated it; don't spin
            await asyncio.sleep(0.05)

    # --- reading ----------------------------------------------------------------------------

    async def step(self, block_ms: int | None = None) -> int:
        """Read one batch of new entries, handle and acknowledge it; return how many."""
        count = self.settings.batch_size
        if self.max_events is not None:
            count = max(1, min(count, self.max_events - self._handled))
        response = await self.app.raw.xreadgroup(
            self.app.group, self.app.consumer_name, {s: ">" for s in self.streams},
            count=count, block=block_ms if block_ms is not None else self.settings.block_ms,
        )
        entries = []
        for stream, items in response or []:
            name = _s(stream)
            entries.extend(Entry(name, entry_id.decode(), fields or {}) for entry_id, fields in items)
        if entries:
            await self.handle(entries)
        return len(entries)

    async def reclaim(self) -> int:
        """Claim entries pending longer than ``claim_idle_ms`` (dead or failed consumers)."""
        total = 0
        for stream in self.streams:
            cursor = self._claim_cursor.get(stream, "0-0")
            next_cursor, claimed, deleted = await self._autoclaim(stream, cursor)
            self._claim_cursor[stream] = next_cursor
            if deleted:
                await self._report_lost(stream, deleted)
            if not claimed:
                continue
            deliveries = await self._deliveries(stream, claimed)
            entries = [Entry(stream, entry_id, fields or {}, deliveries.get(entry_id, 2))
                       for entry_id, fields in claimed]
            log.info("reclaimed pending entries", extra={
                "event": "reclaimed", "stream": stream, "count": len(entries)})
            await self.handle(entries)
            total += len(entries)
        return total

    async def _autoclaim(self, stream: str, cursor: str) -> tuple[str, list[Any], list[str]]:
        result = await self.app.raw.xautoclaim(
            stream, self.app.group, self.app.consumer_name,
            min_idle_time=self.settings.claim_idle_ms, start_id=cursor,
            count=self.settings.batch_size,
        )
        next_cursor = _s(result[0])
        claimed = [(_s(i), f) for i, f in result[1] if f is not None]
        deleted = [_s(i) for i in (result[2] if len(result) > 2 else [])]
        # Redis 6.2 reports a deleted entry as (id, None) in the claimed list instead.
        deleted += [_s(i) for i, f in result[1] if f is None]
        return next_cursor, claimed, deleted

    async def _deliveries(self, stream: str, claimed: list[Any]) -> dict[str, int]:
        ids = [entry_id for entry_id, _ in claimed]
        rows = await self.app.raw.xpending_range(
            stream, self.app.group, min=ids[0], max=ids[-1], count=len(ids) * 2 + 10,
            consumername=self.app.consumer_name,
        )
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _report_lost(self, stream: str, ids: list[str]) -> None:
        self.app.stats.lost += len(ids)
        shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
        out = Outputs(self.app.clock.now_ms())
        out.alert("entries_lost", "critical",
                  f"{len(ids)} entries of {stream} were deleted (MAXLEN trim or XDEL) while pending, "
                  f"before navstream processed them: {shown}")
        batch = BatchWrite(out, resolved=[f"{stream}/{i}" for i in ids])
        await self.writer.write(batch)

    # --- handling ---------------------------------------------------------------------------

    async def handle(self, entries: list[Entry]) -> None:
        """Decode, dispatch, write and acknowledge one batch."""
        started = time.perf_counter()
        app = self.app
        now = app.clock.now_ms()
        max_ts = now + self.settings.max_future_ms
        batch = BatchWrite(Outputs(now))
        acks: dict[str, list[str]] = {}
        events: list[Any] = []
        event_entries: list[Entry] = []
        orders: list[Any] = []
        order_entries: list[Entry] = []
        previous_errors = await self._previous_errors(entries)

        for entry in entries:
            if entry.deliveries > self.settings.max_deliveries:
                error = previous_errors.get(entry.ref) or (
                    f"delivered {entry.deliveries} times without being acknowledged "
                    "(its consumer crashed or hung while handling it)")
                self._dead_letter(batch, acks, entry, error)
                continue
            try:
                if entry.stream == self.keys.orders:
                    orders.append(decode_order(entry.fields))
                    order_entries.append(entry)
                else:
                    event = decode_event(entry.fields)
                    if event.ts > max_ts:
                        raise DecodeError(
                            f"field `ts`: {event.ts} is {event.ts - now} ms in the future "
                            f"(limit {self.settings.max_future_ms} ms); check the producer's clock",
                            "ts")
                    events.append(event)
                    event_entries.append(entry)
            except DecodeError as exc:
                self._dead_letter(batch, acks, entry, f"undecodable: {exc.reason}")

        failed: dict[str, str] = {}
        for hook, arg, items, item_entries in (
            ("navstream_events", "events", events, event_entries),
            ("navstream_orders", "orders", orders, order_entries),
        ):
            if items:
                result = await dispatch_batch(app, hook, arg, items, lambda: Outputs(now))
                failed.update(self._absorb(batch, result, item_entries))

        kinds = [e.__struct_config__.tag for e in events] + ["order"] * len(orders)  # type: ignore[attr-defined]
        handled: list[str] = []
        for entry, kind in zip(event_entries + order_entries, kinds):
            error = failed.get(entry.ref)
            if error is None:
                handled.append(kind)
                acks.setdefault(entry.stream, []).append(entry.id)
                if entry.deliveries > 1:
                    batch.resolved.append(entry.ref)
            elif entry.deliveries >= self.settings.max_deliveries:
                self._dead_letter(batch, acks, entry, error)
            else:
                batch.failures[entry.ref] = error
                app.stats.failed += 1

        if batch.dead_letters:
            first = batch.dead_letters[0]
            batch.outputs.alert(
                "dead_lettered", "warning",
                f"{len(batch.dead_letters)} entries moved to {self.keys.dlq} (first: {first.stream} "
                f"{first.entry_id}: {first.error}); see `navstream dlq list`",
            )
        batch.acks = acks
        await self.writer.write(batch)

        stats = app.stats
        acked = sum(len(ids) for ids in acks.values())
        self._handled += acked
        stats.processed += acked - len(batch.dead_letters)
        stats.dead_lettered += len(batch.dead_letters)
        stats.by_type.update(handled)
        stats.batches += 1
        stats.last_batch_ms = now
        stats.last_batch_size = len(entries)
        stats.last_batch_duration_ms = (time.perf_counter() - started) * 1000

    def _absorb(self, batch: BatchWrite, result: Any, entries: list[Entry]) -> dict[str, str]:
        """Merge a dispatch's outputs into the batch; return ``ref -> error`` of failed entries."""
        batch.outputs.merge(result.outputs)
        for failure in result.failures:
            self.app.stats.plugin_errors += 1
            batch.outputs.alert(
                "plugin_error", "critical",
                f"{failure.error} ({len(failure.failed)} of {len(entries)} entries failed alone; "
                "they are retried and dead-lettered after max_deliveries)",
            )
        return {entries[pos].ref: error for pos, error in result.failed_positions().items()}

    def _dead_letter(self, batch: BatchWrite, acks: dict[str, list[str]], entry: Entry, error: str) -> None:
        batch.dead_letters.append(DeadLetter(entry.stream, entry.id, entry.fields, error, entry.deliveries))
        acks.setdefault(entry.stream, []).append(entry.id)
        if entry.deliveries > 1:
            batch.resolved.append(entry.ref)
        log.warning("entry dead-lettered", extra={
            "event": "dead_lettered", "stream": entry.stream, "id": entry.id, "error": error,
            "deliveries": entry.deliveries})

    async def _previous_errors(self, entries: list[Entry]) -> dict[str, str]:
        refs = [e.ref for e in entries if e.deliveries > 1]
        if not refs:
            return {}
        values = await self.app.raw.hmget(self.keys.failures, refs)
        return {ref: _s(v) for ref, v in zip(refs, values) if v is not None}

    # --- time-based work --------------------------------------------------------------------

    async def tick(self, *, final: bool = False) -> None:
        """Plugins' time-based work, lag and pending figures, and this consumer's heartbeat."""
        app = self.app
        now = app.clock.now_ms()
        self._tick_count += 1
        result = await dispatch_tick(app, now, lambda: Outputs(now))
        out = result.outputs
        for failure in result.failures:
            app.stats.plugin_errors += 1
            out.alert("plugin_error", "critical", f"{failure.error} (in navstream_tick)")
        try:
            await self._refresh_lag()
            await self._check_dlq(out)
        finally:
            # The heartbeat goes out whatever happened above, as long as Redis answers.
            await self.writer.write(BatchWrite(out))
            await self._heartbeat(final)
        if not final and self._tick_count % IDLE_CONSUMER_SWEEP_TICKS == 1:
            await self.remove_idle_consumers()

    async def _refresh_lag(self) -> None:
        stats = self.app.stats
        for stream in self.streams:
            groups = await self.app.redis.xinfo_groups(stream)
            for group in groups:
                if group.get("name") == self.app.group:
                    lag = group.get("lag")
                    stats.lag[stream] = None if lag is None else int(lag)
                    stats.pending[stream] = int(group.get("pending", 0))

    async def _check_dlq(self, out: Outputs) -> None:
        """Alert once when the dead-letter stream nears its MAXLEN, where trimming would lose
        dead letters nobody has looked at."""
        length = int(await self.app.raw.xlen(self.keys.dlq))
        self.app.stats.dlq_length = length
        limit = self.settings.dlq_maxlen
        if length >= 0.9 * limit and not self._dlq_alerted:
            self._dlq_alerted = True
            out.alert("dlq_near_capacity", "critical",
                      f"{self.keys.dlq} holds {length} dead letters, near its limit of {limit}; "
                      "older ones will be trimmed: inspect, replay or purge them")
        elif length < 0.8 * limit:
            self._dlq_alerted = False

    async def _heartbeat(self, final: bool) -> None:
        app = self.app
        key = self.keys.heartbeat(app.consumer_name)
        fields = app.stats.heartbeat_fields()
        fields.update(
            consumer=app.consumer_name, group=app.group, ts=str(app.clock.now_ms()),
            status="stopped" if final else ("reconnecting" if self._down_since else "running"),
            streams=",".join(self.streams),
        )
        pipe = app.raw.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.pexpire(key, self.settings.heartbeat_ttl_ms)
        await pipe.execute()

    async def remove_idle_consumers(self) -> list[str]:
        """Remove consumers idle past the limit with nothing pending (never one with pending)."""
        removed = []
        limit = self.settings.remove_idle_consumers_ms
        for stream in self.streams:
            for info in await self.app.redis.xinfo_consumers(stream, self.app.group):
                name = info["name"]
                if name == self.app.consumer_name or int(info.get("pending", 0)) > 0:
                    continue
                if int(info.get("idle", 0)) < limit:
                    continue
                deleted = await self._delete_if_idle(keys=[stream], args=[self.app.group, name])
                if int(deleted) >= 0:
                    removed.append(name)
                    log.info("removed idle consumer", extra={
                        "event": "consumer_removed", "stream": stream, "removed": name})
        return removed

"""Handling one batch: decode, dispatch to the plugins, dead-letter, write, acknowledge.

Entries that fail stay pending (their error kept in ``P:state:failures``) and come back through
XAUTOCLAIM; on the ``max_deliveries``-th failure, or when claimed with more deliveries than
that already, they are dead-lettered with their error. Nothing is acknowledged before what it
caused is written (the writer acknowledges last, in the same script call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from redis.exceptions import RedisError

from navstream.app import App
from navstream.contract.events import (
    DecodeError,
    Fields,
    InvalidOrder,
    Order,
    as_str_map,
    decode_event,
    decode_order,
    type_tag,
)
from navstream.contract.outputs import Outputs
from navstream.loop.entries import Entry, HashMapping, as_str, entry_bytes
from navstream.loop.observer import BatchDone, LoopObserver
from navstream.plugin.dispatch import dispatch_batch
from navstream.store.writer import BatchWrite, DeadLetter, WriteError, Writer, WritesRefused

log = logging.getLogger("navstream.consumer")

#: Of an entry too large to decode, the dead letter keeps these fields when they are short,
#: the names and sizes of this many fields, and nothing else.
OVERSIZE_KEPT = (b"type", b"order_id")
OVERSIZE_SHORT = 64
OVERSIZE_NAMES = 8


def _shown(name: bytes | str) -> str:
    text = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name
    return text if len(text) <= OVERSIZE_SHORT else text[:OVERSIZE_SHORT] + "..."


def oversize_letter(fields: Fields, size: int) -> tuple[Fields, dict[str, str]]:
    """What the dead letter of an entry of ``size`` bytes keeps: the short identifying fields
    (``type``, ``order_id``) as they are, and as ``dlq_size``/``dlq_fields`` its size and the
    first field names with their sizes. Never the payload."""
    loose = cast("Mapping[bytes | str, bytes | str]", fields)
    kept: dict[bytes | str, bytes | str] = {}
    for key in OVERSIZE_KEPT:
        for k in (key, key.decode()):
            value = loose.get(k)
            if value is not None and len(value) <= OVERSIZE_SHORT:
                kept[k] = value
    names = list(loose)
    shown = ", ".join(f"{_shown(name)}={len(loose[name])}" for name in names[:OVERSIZE_NAMES])
    if len(names) > OVERSIZE_NAMES:
        shown += f", and {len(names) - OVERSIZE_NAMES} more fields"
    return cast(Fields, kept), {"dlq_size": str(size), "dlq_fields": shown}


class BatchHandler:
    def __init__(self, app: App, writer: Writer, throttle: Any = None, observer: LoopObserver | None = None) -> None:
        self.app = app
        #: Told of every finished batch (``/metrics``, the benches subscribe).
        self.observer = observer or LoopObserver()
        self.writer = writer
        #: Limits ``plugin_error`` alerts of a plugin that fails batch after batch (counted all).
        self.throttle = throttle
        self.settings = app.settings.consumer
        self.keys = app.keys
        #: Entries acknowledged so far (processed or dead-lettered), for ``--max-events``.
        self.handled = 0
        #: Recent mean size of an entry read (bytes; 0 before the first read): reads ask for
        #: as many entries as fit in ``max_batch_bytes`` at that size.
        self.mean_entry_bytes = 0.0
        #: A batch whose writes Redis refused as a whole (OOM, READONLY, MISCONF): still pending
        #: (in this consumer's PEL), retried as it is by the loop before it reads anything
        #: else, so a refusal that lasts costs no delivery and sends nothing to the DLQ.
        self.held: list[Entry] | None = None

    def read_count(self, limit: int) -> int:
        """How many entries the next read (XREADGROUP, XAUTOCLAIM) may ask for, up to ``limit``:
        as many as fit in ``max_batch_bytes`` at the recent mean entry size (before the first
        read, entries of up to ``max_entry_bytes``)."""
        mean = self.mean_entry_bytes or self.settings.max_entry_bytes
        return max(1, min(limit, int(self.settings.max_batch_bytes // mean)))

    def _note_sizes(self, total: int, count: int) -> None:
        if not count:
            return
        mean = total / count
        held = self.mean_entry_bytes
        # Up at once (large entries must not come in a batch of small ones' count), down slowly.
        self.mean_entry_bytes = mean if mean > held or not held else 0.5 * (held + mean)

    async def handle(self, entries: list[Entry]) -> None:
        """Decode, dispatch, write and acknowledge one batch.

        Orders read together with events are handled first, as a batch of their own: they are
        judged on the state Redis holds, so their answer need not wait for the events' work
        and write (the order latency the risk gate is held to)."""
        stats = self.app.stats
        batches, by_type = stats.batches, dict(stats.by_type)
        orders = [e for e in entries if e.stream == self.keys.orders]
        held = entries
        try:
            if orders and len(orders) < len(entries):
                await self._handle(orders)
                held = [e for e in entries if e.stream != self.keys.orders]  # the orders are done
                await self._handle(held)
            else:
                await self._handle(entries)
        except WritesRefused:
            self.held = held  # handled again as it is, before anything else is read
            raise
        if self.held is entries:
            self.held = None
        if stats.batches != batches:
            processed = {k: v - by_type.get(k, 0) for k, v in stats.by_type.items()}
            self.observer.batch_done(BatchDone(entries, stats.last_batch_duration_ms / 1000, processed))

    async def _handle(self, entries: list[Entry]) -> None:
        started = time.perf_counter()
        self.observer.part("started", entries)
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
        error: str | None

        max_entry = self.settings.max_entry_bytes
        total = 0
        for entry in entries:
            size = entry_bytes(entry.fields)
            total += size
            if size > max_entry:  # not decoded, and its payload never copied
                kept, extra = oversize_letter(entry.fields, size)
                self._dead_letter(
                    batch,
                    acks,
                    entry,
                    f"entry of {size} bytes is larger than max_entry_bytes ({max_entry}): "
                    "not decoded; its payload is not kept (dlq_fields lists its fields)",
                    fields=kept,
                    extra=extra,
                )
                continue
            if entry.deliveries > self.settings.max_deliveries:
                error = previous_errors.get(entry.ref) or (
                    f"delivered {entry.deliveries} times without being acknowledged "
                    "(its consumer crashed or hung while handling it)"
                )
                self._dead_letter(batch, acks, entry, error)
                continue
            try:
                if entry.stream == self.keys.orders:
                    order = decode_order(entry.fields)
                    if isinstance(order, Order) and order.ts > max_ts:
                        # answerable: the gate vetoes it with the reason, like any bad order
                        order = InvalidOrder(order.order_id, self._future(order.ts, now), as_str_map(entry.fields))
                    orders.append(order)
                    order_entries.append(entry)
                else:
                    event = decode_event(entry.fields)
                    if event.ts > max_ts:
                        raise DecodeError(self._future(event.ts, now), "ts")
                    events.append(event)
                    event_entries.append(entry)
            except DecodeError as exc:
                self._dead_letter(batch, acks, entry, f"undecodable: {exc.reason}")

        self._note_sizes(total, len(entries))
        failed: dict[str, str] = {}
        # One kind per call (handle() splits a mixed read): events or orders.
        for hook, arg, items, item_entries in (
            ("navstream_events", "events", events, event_entries),
            ("navstream_orders", "orders", orders, order_entries),
        ):
            if items:
                result = await dispatch_batch(app, hook, arg, items, lambda: Outputs(now))
                self.observer.part("dispatched", entries, hook)
                failed.update(self._absorb(batch, result, item_entries, hook))

        kinds = [type_tag(type(e)) for e in events] + ["order"] * len(orders)
        handled: list[str] = []
        if not failed:  # the usual batch: every entry is acknowledged
            handled = kinds
            for entry in event_entries + order_entries:
                acks.setdefault(entry.stream, []).append(entry.id)
                if entry.deliveries > 1:
                    batch.resolved.append(entry.ref)
        for entry, kind in zip(event_entries + order_entries, kinds) if failed else ():
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

        if batch.dead_letters:
            first = batch.dead_letters[0]
            batch.outputs.alert(
                "dead_lettered",
                "warning",
                f"{len(batch.dead_letters)} entries moved to {self.keys.dlq} (first: {first.stream} "
                f"{first.entry_id}: {first.error}); see `navstream dlq list`",
            )
        batch.acks = acks
        try:
            await self.writer.write(batch)
        except WritesRefused:
            raise  # not the entries' fault: nothing to record against them (Redis refuses it anyway)
        except WriteError as exc:
            await self._remember_write_failure(entries, batch.failures, str(exc))
            raise

        stats = app.stats
        acked = sum(len(ids) for ids in acks.values())
        self.handled += acked
        stats.processed += acked - len(batch.dead_letters)
        stats.dead_lettered += len(batch.dead_letters)
        stats.failed += len(batch.failures)
        stats.by_type.update(handled)
        stats.batches += 1
        stats.last_batch_ms = now
        stats.last_batch_size = len(entries)
        stats.last_batch_duration_ms = (time.perf_counter() - started) * 1000
        self.observer.part("written", entries)

    def _absorb(self, batch: BatchWrite, result: Any, entries: list[Entry], hook: str) -> dict[str, str]:
        """Merge a dispatch's outputs into the batch; return ``ref -> error`` of failed entries."""
        batch.outputs.merge(result.outputs)
        for failure in result.failures:
            self.app.stats.plugin_errors += 1
            if self.throttle is not None and not self.throttle.allow(("plugin_error", failure.plugin, hook)):
                continue  # counted, logged, and each entry's error goes to P:state:failures / P:dlq
            batch.outputs.alert(
                "plugin_error",
                "critical",
                f"{failure.error} ({len(failure.failed)} of {len(entries)} entries failed alone; "
                "they are retried and dead-lettered after max_deliveries)",
            )
        return {entries[pos].ref: error for pos, error in result.failed_positions().items()}

    def _dead_letter(
        self,
        batch: BatchWrite,
        acks: dict[str, list[str]],
        entry: Entry,
        error: str,
        fields: Fields | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        batch.dead_letters.append(
            DeadLetter(
                entry.stream, entry.id, entry.fields if fields is None else fields, error, entry.deliveries, extra
            )
        )
        acks.setdefault(entry.stream, []).append(entry.id)
        if entry.deliveries > 1:
            batch.resolved.append(entry.ref)
        log.warning(
            "entry dead-lettered",
            extra={
                "event": "dead_lettered",
                "stream": entry.stream,
                "id": entry.id,
                "error": error,
                "deliveries": entry.deliveries,
            },
        )

    def _future(self, ts: int, now: int) -> str:
        return (
            f"field `ts`: {ts} is {ts - now} ms in the future (limit "
            f"{self.settings.max_future_ms} ms); check the producer's clock"
        )

    async def _remember_write_failure(self, entries: list[Entry], failures: dict[str, str], error: str) -> None:
        """So that whoever dead-letters these entries later can say why they kept failing
        (a plugin's error first, where there was one: the write failure came after it)."""
        reasons = {e.ref: f"{failures[e.ref]}; then {error}" if e.ref in failures else error for e in entries}
        try:
            await self.app.raw.hset(self.keys.failures, mapping=cast(HashMapping, reasons))
        except RedisError as exc:  # Redis refuses the batch; it may refuse this too: log it
            log.error("could not record a write failure", extra={"event": "failure_not_recorded", "error": str(exc)})

    async def _previous_errors(self, entries: list[Entry]) -> dict[str, str]:
        refs = [e.ref for e in entries if e.deliveries > 1]
        if not refs:
            return {}
        values = await self.app.raw.hmget(self.keys.failures, refs)
        return {ref: as_str(v) for ref, v in zip(refs, values) if v is not None}

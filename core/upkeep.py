"""A consumer's upkeep: reclaiming abandoned entries, lag and DLQ figures, its heartbeat, and
removing consumers that are gone. Run from the tick, whatever happened to the last batch.
"""

from __future__ import annotations

import logging
from typing import Any

from .app import App
from .handler import BatchHandler, Entry, as_str
from .outputs import Outputs
from .writer import BatchWrite, Writer

log = logging.getLogger("navstream.consumer")

# Deletes a consumer only if it has nothing pending, atomically: XGROUP DELCONSUMER on a
# consumer with pending entries would drop them from the PEL and orphan them.
DELETE_IF_IDLE_LUA = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


class Upkeep:
    def __init__(self, app: App, writer: Writer, handler: BatchHandler) -> None:
        self.app = app
        self.writer = writer
        self.handler = handler
        self.settings = app.settings.consumer
        self.keys = app.keys
        self._claim_cursor: dict[str, str] = {}
        self._dlq_alerted = False
        self._delete_if_idle = app.raw.register_script(DELETE_IF_IDLE_LUA)

    async def reclaim(self, streams: list[str]) -> int:
        """Claim entries pending longer than ``claim_idle_ms`` (dead or failed consumers)."""
        total = 0
        for stream in streams:
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
            await self.handler.handle(entries)
            total += len(entries)
        return total

    async def _autoclaim(self, stream: str, cursor: str) -> tuple[str, list[Any], list[str]]:
        result = await self.app.raw.xautoclaim(
            stream, self.app.group, self.app.consumer_name,
            min_idle_time=self.settings.claim_idle_ms, start_id=cursor,
            count=self.settings.batch_size,
        )
        next_cursor = as_str(result[0])
        claimed = [(as_str(i), f) for i, f in result[1] if f is not None]
        deleted = [as_str(i) for i in (result[2] if len(result) > 2 else [])]
        # Redis 6.2 reports a deleted entry as (id, None) in the claimed list instead.
        deleted += [as_str(i) for i, f in result[1] if f is None]
        return next_cursor, claimed, deleted

    async def _deliveries(self, stream: str, claimed: list[Any]) -> dict[str, int]:
        ids = [entry_id for entry_id, _ in claimed]
        rows = await self.app.raw.xpending_range(
            stream, self.app.group, min=ids[0], max=ids[-1], count=len(ids) * 2 + 10,
            consumername=self.app.consumer_name,
        )
        return {as_str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _report_lost(self, stream: str, ids: list[str]) -> None:
        self.app.stats.lost += len(ids)
        shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
        out = Outputs(self.app.clock.now_ms())
        out.alert("entries_lost", "critical",
                  f"{len(ids)} entries of {stream} were deleted (MAXLEN trim or XDEL) while pending, "
                  f"before navstream processed them: {shown}")
        batch = BatchWrite(out, resolved=[f"{stream}/{i}" for i in ids])
        await self.writer.write(batch)

    async def refresh_lag(self, streams: list[str]) -> None:
        stats = self.app.stats
        for stream in streams:
            groups = await self.app.redis.xinfo_groups(stream)
            for group in groups:
                if group.get("name") == self.app.group:
                    lag = group.get("lag")
                    stats.lag[stream] = None if lag is None else int(lag)
                    stats.pending[stream] = int(group.get("pending", 0))

    async def check_dlq(self, out: Outputs) -> None:
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

    async def heartbeat(self, streams: list[str], status: str) -> None:
        """``P:heartbeat:<consumer>``, with a TTL so a dead consumer's disappears."""
        app = self.app
        key = self.keys.heartbeat(app.consumer_name)
        fields = app.stats.heartbeat_fields()
        fields.update(
            consumer=app.consumer_name, group=app.group, ts=str(app.clock.now_ms()),
            status=status, streams=",".join(streams),
        )
        pipe = app.raw.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.pexpire(key, self.settings.heartbeat_ttl_ms)
        await pipe.execute()

    async def remove_idle_consumers(self, streams: list[str], idle_ms: int | None = None) -> list[str]:
        """Remove consumers idle past ``idle_ms`` (default: the setting) with nothing pending."""
        removed = []
        limit = self.settings.remove_idle_consumers_ms if idle_ms is None else idle_ms
        for stream in streams:
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

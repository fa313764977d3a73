"""A consumer's upkeep: reclaiming abandoned entries, lag and DLQ figures, its heartbeat, and
removing consumers that are gone. Run from the tick, whatever happened to the last batch.

Each part is its own module: reclaiming and lost-entry reports (:mod:`navstream.loop.reclaim`),
lag and entries deleted unread (:mod:`navstream.loop.lag`), the heartbeat, health and epoch
(:mod:`navstream.loop.heartbeat`). Here: the state they share, the DLQ check, writing the
tick (what the checks staged takes effect only once written) and removing idle consumers.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from navstream.app import App
from navstream.contract.outputs import Outputs
from navstream.loop.batch import BatchHandler
from navstream.loop.heartbeat import EPOCH, HeartbeatMixin
from navstream.loop.lag import LOST_REPORTED, SHIFT_ENTRIES_READ_LUA, LagMixin
from navstream.loop.reclaim import ReclaimMixin
from navstream.store.writer import BatchWrite, Writer

__all__ = ["DELETE_IF_IDLE_LUA", "EPOCH", "LOST_REPORTED", "SHIFT_ENTRIES_READ_LUA", "Upkeep"]

log = logging.getLogger("navstream.consumer")

# Deletes a consumer only if it has nothing pending, atomically: XGROUP DELCONSUMER on a
# consumer with pending entries would drop them from the PEL and orphan them.
DELETE_IF_IDLE_LUA = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


class Upkeep(ReclaimMixin, LagMixin, HeartbeatMixin):
    def __init__(self, app: App, writer: Writer, handler: BatchHandler) -> None:
        self.app = app
        self.writer = writer
        self.handler = handler
        self.settings = app.settings.consumer
        self.keys = app.keys
        self._claim_cursor: dict[str, str] = {}
        self._dlq_alerted = False
        #: Changes to the above (and to ``_dlq_alerted``) decided during a tick; they take
        #: effect only once the tick's alerts are written, so a failed write re-alerts.
        self._staged: dict[str, Any] = {}
        #: ``entries_lost`` reports not yet written: XAUTOCLAIM already removed those ids from
        #: the pending list, so this is the only record of them until the alert is in Redis.
        self._unreported: list[tuple[str, list[str]]] = []
        self._delete_if_idle = app.raw.register_script(DELETE_IF_IDLE_LUA)
        self._shift_entries_read = app.raw.register_script(SHIFT_ENTRIES_READ_LUA)
        #: stream -> (by how much, guard field, what it held, what to set) to move the group's
        #: entries-read: a stale count found by a tick.
        self._read_shifts: dict[str, tuple[int, str, str, str]] = {}
        #: ``P:state:epoch`` as this consumer last saw it (None: not known yet).
        self._epoch: str | None = None
        #: The ``beat`` field of this consumer's heartbeat as it last wrote it, and as it last
        #: tried to (a write whose reply was lost may have been applied). None: nothing to expect.
        self._beat: str | None = None
        self._beat_tried: str | None = None
        self._beat_id = uuid.uuid4().hex[:12]
        self._beats = 0
        #: ``time.monotonic()`` of the last heartbeat written: one not written for longer than
        #: its TTL (Redis refusing writes, an outage) expired, it was not lost with Redis's data.
        self._beat_written_at = time.monotonic()
        #: The server answers no INFO (fakeredis): its run_id is not asked again.
        self._no_info = False

    async def check_dlq(self, out: Outputs) -> None:
        """Alert once when the dead-letter stream nears its MAXLEN, where trimming would lose
        dead letters nobody has looked at."""
        length = int(await self.app.raw.xlen(self.keys.dlq))
        self.app.stats.dlq_length = length
        limit = self.settings.dlq_maxlen
        if length >= 0.9 * limit and not self._dlq_alerted:
            self._staged["dlq_alerted"] = True
            out.alert(
                "dlq_near_capacity",
                "critical",
                f"{self.keys.dlq} holds {length} dead letters, near its limit of {limit}; "
                "older ones will be trimmed: inspect, replay or purge them",
            )
        elif length < 0.8 * limit:
            self._dlq_alerted = False

    def forget(self) -> None:
        """Redis lost data: what this consumer remembers of what it held (the DLQ alert it
        raised, where reclaiming got to) no longer stands."""
        self._dlq_alerted = False
        self._claim_cursor.clear()

    async def write_tick(self, out: Outputs) -> None:
        """Write the tick's outputs; what the tick's checks staged (a DLQ alert raised, entries
        counted lost) is remembered only once that write succeeded, else decided again next
        tick. Then the loss reports owed to the other consumers go out."""
        try:
            await self.writer.write(BatchWrite(out))
        except BaseException:
            self._staged = {}
            raise
        staged, self._staged = self._staged, {}
        self._dlq_alerted = staged.pop("dlq_alerted", self._dlq_alerted)
        self.app.stats.lost += staged.pop("lost", 0)
        await self.flush_lost_reports()

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
                    log.info(
                        "removed idle consumer", extra={"event": "consumer_removed", "stream": stream, "removed": name}
                    )
        return removed

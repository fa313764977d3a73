"""Reclaiming abandoned entries (``XAUTOCLAIM``), and reporting those Redis deleted while pending.

Entries a dead or failed consumer left pending are claimed after ``claim_idle_ms`` and handled
like new ones, with Redis's delivery counts. XAUTOCLAIM removes ids deleted while pending
(MAXLEN trim, XDEL) from the pending list: the ``entries_lost`` alert owed for them is the only
record left, so it is kept until written.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from navstream.app import App
from navstream.config import ConsumerSettings
from navstream.contract.outputs import Outputs
from navstream.loop.batch import BatchHandler
from navstream.loop.entries import Entry, as_str
from navstream.store.writer import BatchWrite, Writer

log = logging.getLogger("navstream.consumer")


class ReclaimMixin:
    """The upkeep's reclaiming; :class:`~navstream.loop.upkeep.Upkeep` holds the state (set in
    its ``__init__``)."""

    app: App
    writer: Writer
    handler: BatchHandler
    settings: ConsumerSettings
    _claim_cursor: dict[str, str]
    #: ``entries_lost`` reports not yet written: XAUTOCLAIM already removed those ids from
    #: the pending list, so this is the only record of them until the alert is in Redis.
    _unreported: list[tuple[str, list[str]]]

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
            # An entry no longer pending for us was acknowledged by someone else: skip it.
            entries = [
                Entry(stream, entry_id, fields or {}, deliveries[entry_id])
                for entry_id, fields in claimed
                if entry_id in deliveries
            ]
            log.info("reclaimed pending entries", extra={"event": "reclaimed", "stream": stream, "count": len(entries)})
            await self.handler.handle(entries)
            total += len(entries)
        return total

    async def _autoclaim(self, stream: str, cursor: str) -> tuple[str, list[Any], list[str]]:
        result = await self.app.raw.xautoclaim(
            stream,
            self.app.group,
            self.app.consumer_name,
            min_idle_time=self.settings.claim_idle_ms,
            start_id=cursor,
            count=self.handler.read_count(self.settings.batch_size),  # bounded in bytes too
        )
        next_cursor = as_str(result[0])
        claimed = [(as_str(i), f) for i, f in result[1] if f is not None]
        deleted = [as_str(i) for i in (result[2] if len(result) > 2 else [])]
        # Redis 6.2 reports a deleted entry as (id, None) in the claimed list instead.
        deleted += [as_str(i) for i, f in result[1] if f is None]
        return next_cursor, claimed, deleted

    async def _deliveries(self, stream: str, claimed: list[Any]) -> dict[str, int]:
        """Redis's delivery count of each entry just claimed (pages through our own PEL)."""
        wanted = {entry_id for entry_id, _ in claimed}
        counts: dict[str, int] = {}
        start, end = claimed[0][0], claimed[-1][0]
        while wanted - counts.keys():
            rows = cast(
                "list[dict[str, Any]]",
                await self.app.raw.xpending_range(  # redis-py: bytes | str | int
                    stream,
                    self.app.group,
                    min=start,
                    max=end,
                    count=max(100, 2 * len(wanted)),
                    consumername=self.app.consumer_name,
                ),
            )
            if not rows:
                break
            for row in rows:
                counts[as_str(row["message_id"])] = int(row["times_delivered"])
            start = "(" + as_str(rows[-1]["message_id"])
        missing = wanted - counts.keys()
        if missing:  # not pending for us any more: someone acknowledged them meanwhile
            log.warning(
                "claimed entries left our pending list",
                extra={"event": "claim_vanished", "stream": stream, "ids": sorted(missing)[:20]},
            )
        return counts

    async def _report_lost(self, stream: str, ids: list[str]) -> None:
        self.app.stats.lost += len(ids)
        self._unreported.append((stream, ids))
        await self.flush_lost_reports()

    async def flush_lost_reports(self) -> None:
        """Write the ``entries_lost`` alerts still owed; kept for the next try if Redis refuses."""
        if not self._unreported:
            return
        out = Outputs(self.app.clock.now_ms())
        resolved = []
        for stream, ids in self._unreported:
            shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
            out.alert(
                "entries_lost",
                "critical",
                f"{len(ids)} entries of {stream} were deleted (MAXLEN trim or XDEL) while "
                f"pending, before navstream processed them: {shown}",
            )
            resolved += [f"{stream}/{i}" for i in ids]
        await self.writer.write(BatchWrite(out, resolved=resolved))
        self._unreported.clear()

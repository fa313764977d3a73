"""A consumer's upkeep: reclaiming abandoned entries, lag and DLQ figures, its heartbeat, and
removing consumers that are gone. Run from the tick, whatever happened to the last batch.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping, cast

from redis.exceptions import ResponseError

from navstream.app import App
from navstream.loop.batch import BatchHandler
from navstream.loop.entries import Entry, HashMapping, as_str
from navstream.contract.keys import parse_id
from navstream.contract.outputs import Outputs
from navstream.plugin import calls
from navstream.store.writer import BatchWrite, Writer, refusal

log = logging.getLogger("navstream.consumer")

#: State hash ``P:state:lost_reported``: how much loss was already reported, per stream and group.
LOST_REPORTED = "lost_reported"
#: String ``P:state:epoch``: a random token, set by whichever consumer finds none (at startup or
#: on any tick) and replaced by one that recreates a vanished group. A consumer that finds
#: another token than the one it saw knows Redis lost data since (docs/operations.md).
EPOCH = "epoch"

# Deletes a consumer only if it has nothing pending, atomically: XGROUP DELCONSUMER on a
# consumer with pending entries would drop them from the PEL and orphan them.
DELETE_IF_IDLE_LUA = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


# Moves a group's entries-read by ARGV[2] (its last-delivered-id kept as it is at that moment),
# so that a read count restored stale (from an AOF, on a promoted replica) counts right again.
# Once only, whichever consumers found it: only if field ARGV[3] of hash KEYS[2] still holds
# ARGV[4] (what the finder saw; '' for nothing), then set to ARGV[5]. Returns the new count,
# -1 when Redis holds none (it estimates one itself), -2 without the group, -3 done already.
SHIFT_ENTRIES_READ_LUA = """
if (redis.call('HGET', KEYS[2], ARGV[3]) or '') ~= ARGV[4] then return -3 end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local t = {}
  for i = 1, #g, 2 do t[g[i]] = g[i + 1] end
  if t['name'] == ARGV[1] then
    if not t['entries-read'] then return -1 end
    local n = tonumber(t['entries-read']) + tonumber(ARGV[2])
    if n < 0 then return -1 end
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], t['last-delivered-id'], 'ENTRIESREAD', n)
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
    return n
  end
end
return -2
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
            entries = [Entry(stream, entry_id, fields or {}, deliveries[entry_id])
                       for entry_id, fields in claimed if entry_id in deliveries]
            log.info("reclaimed pending entries", extra={
                "event": "reclaimed", "stream": stream, "count": len(entries)})
            await self.handler.handle(entries)
            total += len(entries)
        return total

    async def _autoclaim(self, stream: str, cursor: str) -> tuple[str, list[Any], list[str]]:
        result = await self.app.raw.xautoclaim(
            stream, self.app.group, self.app.consumer_name,
            min_idle_time=self.settings.claim_idle_ms, start_id=cursor,
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
            rows = cast("list[dict[str, Any]]", await self.app.raw.xpending_range(  # redis-py: bytes | str | int
                stream, self.app.group, min=start, max=end, count=max(100, 2 * len(wanted)),
                consumername=self.app.consumer_name))
            if not rows:
                break
            for row in rows:
                counts[as_str(row["message_id"])] = int(row["times_delivered"])
            start = "(" + as_str(rows[-1]["message_id"])
        missing = wanted - counts.keys()
        if missing:  # not pending for us any more: someone acknowledged them meanwhile
            log.warning("claimed entries left our pending list", extra={
                "event": "claim_vanished", "stream": stream, "ids": sorted(missing)[:20]})
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
            out.alert("entries_lost", "critical",
                      f"{len(ids)} entries of {stream} were deleted (MAXLEN trim or XDEL) while "
                      f"pending, before navstream processed them: {shown}")
            resolved += [f"{stream}/{i}" for i in ids]
        await self.writer.write(BatchWrite(out, resolved=resolved))
        self._unreported.clear()

    async def refresh_lag(self, streams: list[str], out: Outputs) -> None:
        """Lag and pending as Redis reports them, and entries deleted before this group read them.

        Entries deleted while pending are caught by XAUTOCLAIM; entries a producer's MAXLEN
        trim or an XDEL removed before any consumer read them leave no trace there, so they are
        found here: a trim shows as Redis counting more entries added than the group read and
        the stream still holds; an XDEL as a deleted id above what the group was delivered.
        What was reported is kept in Redis (``P:state:lost_reported``), so a loss is alerted
        once, not again by every consumer that restarts.
        """
        stats = self.app.stats
        run_id = await self._run_id()
        for stream in streams:
            pipe = self.app.redis.pipeline(transaction=True)
            pipe.xinfo_groups(stream)
            pipe.xinfo_stream(stream)
            pipe.hmget(self.keys.state(LOST_REPORTED), *self._report_fields(stream))
            groups, info, reported = await pipe.execute()
            group = next((g for g in groups if g.get("name") == self.app.group), None)
            if group is None:
                continue
            lag = group.get("lag")
            stats.lag[stream] = None if lag is None else int(lag)
            stats.pending[stream] = int(group.get("pending", 0))
            self._check_unread_deletions(stream, group, info, reported, out, run_id)
            shift = self._read_shifts.pop(stream, None)
            if shift is not None:  # rare: after a restart from an AOF or a failover
                await self._shift_entries_read(keys=[stream, self.keys.state(LOST_REPORTED)],
                                               args=[self.app.group, *shift])

    async def _run_id(self) -> str | None:
        """Redis's ``run_id`` (a new one after every restart and on another server after a
        failover), None where unknown (fakeredis has no INFO). A group's entries-read is
        restored stale from an AOF and on replicas (Redis 7 propagates reads as XCLAIM ...
        LASTID, which does not carry it), so a new server means counting starts over."""
        if self._no_info:
            return None
        try:
            info = await self.app.redis.info("server")
        except ResponseError:
            self._no_info = True
            return None
        run_id = info.get("run_id")
        return None if run_id is None else str(run_id)

    def _report_fields(self, stream: str) -> tuple[str, str, str, str, str]:
        """Fields of ``P:state:lost_reported`` for one stream and group: the loss reported so
        far (Redis's deficit of entries added but neither read nor still there), the highest
        XDEL'd id reported, and Redis's entries-added and the group's entries-read as last
        seen (a deleted stream takes its counters with it: these say what it had)."""
        base = f"{stream}|{self.app.group}"
        return (f"{base}|unread_deficit", f"{base}|max_deleted", f"{base}|added", f"{base}|read",
                f"{base}|run_id")

    def _check_unread_deletions(self, stream: str, group: dict[str, Any], info: dict[str, Any],
                                reported: list[str | None], out: Outputs, run_id: str | None = None) -> None:
        """Entries trimmed (MAXLEN) or deleted (XDEL) before the group read them, and a stream
        deleted with entries unread, from Redis's own counters (Redis 7: ``entries-added``,
        the group's ``entries-read``). The group is created with ``ENTRIESREAD 0``, so Redis
        counts exactly what it reads and a trimmed gap stays in the difference after the group
        read past it. Where these counters are missing (older servers, fakeredis after a read),
        only what they show is reported."""
        deficit_field, deleted_field, added_field, read_field, run_field = self._report_fields(stream)
        delivered = parse_id(group["last-delivered-id"])
        first, last = info.get("first-entry"), info.get("last-entry")
        read, added = group.get("entries-read"), info.get("entries-added")
        if read is None and delivered == (0, 0):
            read = 0  # a group that never read anything (Redis 7.0 reports null)
        length = int(info.get("length", 0))
        known = int(reported[0] or 0)
        seen: dict[str, str] = {}
        counted = False
        if added is not None and reported[2] is not None and int(added) < int(reported[2]):
            # Fewer entries ever added than before: the stream was deleted and created again.
            had_added, had_read = int(reported[2]), int(reported[3] or 0)
            gone = had_added - had_read - known
            if gone > 0 and reported[3] is not None:  # else the group's count was never known
                counted = True
                self._staged["lost"] = self._staged.get("lost", 0) + gone
                out.alert("entries_lost", "critical",
                          f"{gone} entries of {stream} were lost unread by group {self.app.group!r}: the "
                          f"stream was deleted (when last seen, {had_added} entries had been added to it "
                          f"and the group had read {had_read}); entries added after that check are not "
                          "counted")
            known = 0
            seen.update({deficit_field: "0", deleted_field: "0-0"})
            reported = [None, None, None, None, reported[4]]
        # The group's read count went back (restored stale from an AOF), or another server
        # answers (a restart, a failover): its deficit is a new baseline, not a loss.
        rebase = ((read is not None and reported[3] is not None and int(read) < int(reported[3]))
                  or (run_id is not None and reported[4] is not None and run_id != reported[4]))
        unread_present: int | None = None
        if length == 0:
            unread_present = 0
        elif first and parse_id(as_str(first[0])) > delivered:
            unread_present = length  # every entry still there is past what the group was delivered
        elif last and parse_id(as_str(last[0])) <= delivered:
            unread_present = 0  # the group read up to the end: Redis's lag is the deficit
        if read is not None and added is not None and unread_present is not None:
            # Redis's count of entries the group has not read, minus those still there unread.
            # Redis keeps this deficit after the gap is passed, so only its growth is news.
            deficit = int(added) - int(read) - unread_present
            if rebase:
                # The count is stale, not the entries lost: put it right (Redis's lag with it),
                # by what it is off from the deficit already known.
                if deficit != known:
                    guard = (run_field, reported[4] or "", run_id) if run_id is not None else (
                        read_field, reported[3] or "", str(int(read) + deficit - known))
                    self._read_shifts[stream] = (deficit - known, *guard)
                    log.warning("the group's read count was stale; corrected", extra={
                        "event": "entries_read_corrected", "stream": stream, "by": deficit - known,
                        "reason": "entries-read went back or another Redis server answers"})
                read = int(read) + deficit - known
                deficit = known
                rebase = False
            if deficit > known:
                counted = True
                self._staged["lost"] = self._staged.get("lost", 0) + deficit - known
                where = f" (the stream now starts at {as_str(first[0])})" if first else " (the stream is empty)"
                out.alert("entries_lost", "critical",
                          f"{deficit - known} entries of {stream} were trimmed or deleted before group "
                          f"{self.app.group!r} read them{where}; producers must not trim input streams: "
                          "use `navstream trim`")
            if deficit != known and deficit >= 0:
                seen[deficit_field] = str(deficit)
        if run_id is not None and run_id != reported[4] and not rebase:  # else: next tick again
            seen[run_field] = run_id
        if added is not None and str(added) != reported[2]:
            seen[added_field] = str(added)
        if read is not None and str(read) != reported[3] and not rebase:
            seen[read_field] = str(read)
        max_deleted = as_str(info.get("max-deleted-entry-id") or "0-0")
        if parse_id(max_deleted) > delivered and parse_id(max_deleted) > parse_id(reported[1] or "0-0"):
            seen[deleted_field] = max_deleted
            if not counted:  # else the count above covers it
                out.alert("entries_lost", "critical",
                          f"entries of {stream} up to {max_deleted} were deleted (XDEL) before group "
                          f"{self.app.group!r} read them; how many is unknown")
        if seen:
            out.hset(LOST_REPORTED, seen)

    async def check_dlq(self, out: Outputs) -> None:
        """Alert once when the dead-letter stream nears its MAXLEN, where trimming would lose
        dead letters nobody has looked at."""
        length = int(await self.app.raw.xlen(self.keys.dlq))
        self.app.stats.dlq_length = length
        limit = self.settings.dlq_maxlen
        if length >= 0.9 * limit and not self._dlq_alerted:
            self._staged["dlq_alerted"] = True
            out.alert("dlq_near_capacity", "critical",
                      f"{self.keys.dlq} holds {length} dead letters, near its limit of {limit}; "
                      "older ones will be trimmed: inspect, replay or purge them")
        elif length < 0.8 * limit:
            self._dlq_alerted = False

    def forget(self) -> None:
        """Redis lost data: what this consumer remembers of what it held (the DLQ alert it
        raised, where reclaiming got to) no longer stands."""
        self._dlq_alerted = False
        self._claim_cursor.clear()

    async def learn_epoch(self) -> None:
        """At startup: ``P:state:epoch``, set to a new token if Redis holds none."""
        key = self.keys.state(EPOCH)
        pipe = self.app.raw.pipeline(transaction=True)
        pipe.set(key, uuid.uuid4().hex, nx=True)
        pipe.get(key)
        try:
            _, held = await pipe.execute()
        except ResponseError as exc:
            reason = refusal(exc)
            if reason is None:
                raise
            self.writer.note_refused(reason, "epoch")  # set by the first tick that may write
            held = await self.app.raw.get(key)
            if held is None:
                return
        self._epoch = as_str(held or b"")

    async def new_epoch(self) -> None:
        """This consumer recreated a vanished group: a new ``P:state:epoch``, so that every other
        consumer learns of the loss on its next tick, whatever else it saw. Its own heartbeat
        may be gone too: the next one is not compared."""
        token = uuid.uuid4().hex
        await self.app.raw.set(self.keys.state(EPOCH), token)
        self._epoch, self._beat, self._beat_tried = token, None, None

    def relearn(self) -> None:
        """This consumer saw a group vanish that another recreated: it has forgotten already,
        so its next tick learns the epoch and its heartbeat afresh instead of comparing."""
        self._epoch, self._beat, self._beat_tried = None, None, None

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

    async def heartbeat(self, streams: list[str], status: str) -> str | None:
        """``P:heartbeat:<consumer>``, with a TTL so a dead consumer's disappears; returns why
        Redis must have lost data since the last one, or None.

        In the same ``MULTI``, so at no extra round trip: this consumer's last heartbeat must
        still be there as it wrote it (gone after a flush or a restart without persistence,
        older after a rollback to an older snapshot or a failover to a lagging replica), and
        ``P:state:epoch`` must hold the token it saw (set anew if missing, replaced when a
        consumer recreates a vanished group).
        """
        app = self.app
        key = self.keys.heartbeat(app.consumer_name)
        epoch_key = self.keys.state(EPOCH)
        self._beats += 1
        beat = f"{self._beat_id}-{self._beats}"
        fields = app.stats.heartbeat_fields()
        fields.update(
            consumer=app.consumer_name, group=app.group, ts=str(app.clock.now_ms()),
            status=status, streams=",".join(streams), beat=beat,
        )
        fields.update(self.health())
        candidate = uuid.uuid4().hex
        pipe = app.raw.pipeline(transaction=True)
        pipe.hget(key, "beat")
        pipe.set(epoch_key, candidate, nx=True)
        pipe.get(epoch_key)
        pipe.hset(key, mapping=cast(HashMapping, fields))
        pipe.pexpire(key, self.settings.heartbeat_ttl_ms)
        expected = (self._beat, self._beat_tried)
        self._beat_tried = beat
        try:
            held_raw, _, epoch_raw, _, _ = await pipe.execute()
        except ResponseError as exc:
            reason = refusal(exc)
            if reason is None:
                raise
            # Redis refuses writes: the MULTI did nothing. The loop goes on; the health this
            # heartbeat carried (degraded, with the reason) is in /readyz, the logs and counters.
            self.writer.note_refused(reason, "heartbeat")
            return None
        if app.stats.writes_refused_since:
            self.writer.note_written()  # this heartbeat ends the episode: it must not say otherwise
            await app.raw.hset(key, mapping=cast(HashMapping, {**app.stats.heartbeat_fields(), **self.health()}))
        expired = (time.monotonic() - self._beat_written_at) * 1000 >= self.settings.heartbeat_ttl_ms
        self._beat_written_at = time.monotonic()
        held = None if held_raw is None else as_str(held_raw)
        epoch = as_str(epoch_raw or b"")
        reasons = []
        if self._epoch is not None and epoch != self._epoch:
            reasons.append(f"{epoch_key} was missing" if epoch == candidate else
                           f"{epoch_key} held another token (lost and set again by another consumer, or "
                           "replaced by one that recreated a vanished group)")
        if self._beat is not None and held not in expected and not (held is None and expired):
            reasons.append(f"this consumer's heartbeat {key} was gone (flushed, Redis restarted without "
                           "persistence, or expired while this consumer could not write it)" if held is None else
                           f"this consumer's heartbeat {key} held an older or another beat ({held}, not "
                           f"{self._beat}): a rollback to an older snapshot, a failover to a lagging replica, "
                           "or another process running under the same consumer name")
        self._epoch, self._beat = epoch, beat
        return "; ".join(reasons) or None

    def health(self) -> dict[str, str]:
        """Every plugin's ``navstream_health`` as ``<plugin>.<key>`` fields, and ``health``:
        ``degraded`` (with ``health_reasons``) if any plugin says so or cannot say."""
        out: dict[str, str] = {}
        reasons: list[str] = []
        for answer in calls.collect_sync(self.app.pm, "navstream_health", {"app": self.app}):
            name, report, exc = answer.plugin, answer.value or {}, answer.exc
            if exc is None and not isinstance(report, Mapping):
                exc = TypeError(f"returned {type(report).__name__}, not a mapping")
            if exc is None:
                for key, value in report.items():
                    out[f"{name}.{key}"] = str(value)
            else:  # a broken report is itself a health problem
                report = {"status": "degraded", "reason": f"health report failed: {type(exc).__name__}: {exc}"}
                out[f"{name}.status"] = "degraded"
                out[f"{name}.reason"] = report["reason"]
            if report.get("status", "ok") != "ok":
                reasons.append(f"{name}: {report.get('reason') or report.get('status')}")
        since = self.app.stats.writes_refused_since
        if since:
            at = datetime.fromtimestamp(since / 1000, timezone.utc).isoformat(timespec="seconds")
            reasons.insert(0, f"Redis refuses writes since {at} ({self.writer.refused_reason or 'refused'}); "
                              "the batch stays pending and is retried")
        out["health"] = "degraded" if reasons else "ok"
        out["health_reasons"] = "; ".join(reasons)
        return out

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

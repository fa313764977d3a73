"""Lag and pending figures, and entries trimmed or deleted before the group read them.

Entries deleted while pending are caught when reclaiming (:mod:`navstream.loop.reclaim`);
entries a producer's MAXLEN trim or an XDEL removed before any consumer read them leave no
trace there, so they are found here, from Redis's own counters. A read count restored stale
(from an AOF, on a promoted replica) is put right rather than reported as a loss.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from navstream.app import App
from navstream.contract.keys import Keys, parse_id
from navstream.contract.outputs import Outputs
from navstream.loop.entries import as_str

log = logging.getLogger("navstream.consumer")

#: State hash ``P:state:lost_reported``: how much loss was already reported, per stream and group.
LOST_REPORTED = "lost_reported"

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


class LagMixin:
    """The upkeep's lag checks; :class:`~navstream.loop.upkeep.Upkeep` holds the state (set in
    its ``__init__``)."""

    app: App
    keys: Keys
    #: Changes decided during a tick that take effect once the tick's alerts are written.
    _staged: dict[str, Any]
    _shift_entries_read: AsyncScript
    #: stream -> (by how much, guard field, what it held, what to set) to move the group's
    #: entries-read: a stale count found by a tick.
    _read_shifts: dict[str, tuple[int, str, str, str]]
    #: The server answers no INFO (fakeredis): its run_id is not asked again.
    _no_info: bool

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
                await self._shift_entries_read(
                    keys=[stream, self.keys.state(LOST_REPORTED)], args=[self.app.group, *shift]
                )

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
        return (f"{base}|unread_deficit", f"{base}|max_deleted", f"{base}|added", f"{base}|read", f"{base}|run_id")

    def _check_unread_deletions(
        self,
        stream: str,
        group: dict[str, Any],
        info: dict[str, Any],
        reported: list[str | None],
        out: Outputs,
        run_id: str | None = None,
    ) -> None:
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
                out.alert(
                    "entries_lost",
                    "critical",
                    f"{gone} entries of {stream} were lost unread by group {self.app.group!r}: the "
                    f"stream was deleted (when last seen, {had_added} entries had been added to it "
                    f"and the group had read {had_read}); entries added after that check are not "
                    "counted",
                )
            known = 0
            seen.update({deficit_field: "0", deleted_field: "0-0"})
            reported = [None, None, None, None, reported[4]]
        # The group's read count went back (restored stale from an AOF), or another server
        # answers (a restart, a failover): its deficit is a new baseline, not a loss.
        rebase = (read is not None and reported[3] is not None and int(read) < int(reported[3])) or (
            run_id is not None and reported[4] is not None and run_id != reported[4]
        )
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
                    guard = (
                        (run_field, reported[4] or "", run_id)
                        if run_id is not None
                        else (read_field, reported[3] or "", str(int(read) + deficit - known))
                    )
                    self._read_shifts[stream] = (deficit - known, *guard)
                    log.warning(
                        "the group's read count was stale; corrected",
                        extra={
                            "event": "entries_read_corrected",
                            "stream": stream,
                            "by": deficit - known,
                            "reason": "entries-read went back or another Redis server answers",
                        },
                    )
                read = int(read) + deficit - known
                deficit = known
                rebase = False
            if deficit > known:
                counted = True
                self._staged["lost"] = self._staged.get("lost", 0) + deficit - known
                where = f" (the stream now starts at {as_str(first[0])})" if first else " (the stream is empty)"
                out.alert(
                    "entries_lost",
                    "critical",
                    f"{deficit - known} entries of {stream} were trimmed or deleted before group "
                    f"{self.app.group!r} read them{where}; producers must not trim input streams: "
                    "use `navstream trim`",
                )
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
                out.alert(
                    "entries_lost",
                    "critical",
                    f"entries of {stream} up to {max_deleted} were deleted (XDEL) before group "
                    f"{self.app.group!r} read them; how many is unknown",
                )
        if seen:
            out.hset(LOST_REPORTED, seen)

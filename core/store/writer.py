"""Writing a batch's results: outputs, state, alerts and dead letters, then XACK, in one call.

The acknowledgement comes after every write and only if they all succeeded, so an entry is
never acknowledged before what it caused is in Redis (contract rule 3). A failed write raises
and leaves the batch pending; the next delivery rewrites the same absolute snapshots.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from navstream.app import App
from navstream.contract.events import Fields
from navstream.contract.outputs import (
    HELD_TS_LUA,
    ONCE_DUE_LUA,
    PUT_FIELDS_LUA,
    PUT_LATEST_LUA,
    FIRST_FIELDS_LUA,
    STAMP_LUA,
    XADD_FIRST_LUA,
    XADD_ONCE_LUA,
    Alert,
    Once,
    Outputs,
    parse_first,
)

log = logging.getLogger("navstream.writer")
alert_log = logging.getLogger("navstream.alerts")

_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


# What Redis (and fakeredis) answer when a stream or its group has vanished under us.
_MISSING_MARKERS = ("NOGROUP", "no longer exists", "requires the key to exist", "no such key")


def is_missing_group(exc: ResponseError) -> bool:
    text = str(exc).lower()
    return any(marker.lower() in text for marker in _MISSING_MARKERS)


class WriteError(RuntimeError):
    """Redis refused part of a batch's writes; the batch stays pending."""


class WritesRefused(WriteError):
    """Redis refuses every write for now (out of memory under ``noeviction``, a read-only
    replica after a failover, a failed RDB save with ``stop-writes-on-bgsave-error``): not the
    batch's fault, so it is held and retried as it is, with backoff, until writes work again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: What Redis answers when it refuses writes as a whole, not one write in particular, as the
#: marker that starts its reason. redis-py strips the error code of the first two (and gives
#: them their own classes, kept through pipelines), so their text is matched too.
_REFUSALS = (
    ("OOM ", "command not allowed when used memory", OutOfMemoryError),
    ("READONLY ", "You can't write against a read only replica", ReadOnlyError),
    ("", "MISCONF", None),
)


def refusal(exc: BaseException) -> str | None:
    """Why Redis refuses writes (``OOM ...``, ``READONLY ...``, ``MISCONF ...``), or None when
    ``exc`` is not Redis refusing writes as a whole. Found inside a pipeline's or a script's
    error text too (``Command # 3 (HSET ...) of pipeline caused error: ...``)."""
    if isinstance(exc, WritesRefused):
        return exc.reason
    if not isinstance(exc, (ResponseError, WriteError)):
        return None
    text = str(exc)
    for code, marker, cls in _REFUSALS:
        at = text.find(marker)
        if at < 0 and not (cls is not None and isinstance(exc, cls)):
            continue
        reason = text[at:] if at >= 0 else text
        if code and not reason.startswith(code):
            reason = code + reason
        return reason if len(reason) <= 200 else reason[:197] + "..."
    return None


@dataclass
class DeadLetter:
    stream: str
    entry_id: str
    fields: Fields
    error: str
    deliveries: int
    #: ``dlq_*`` fields of its own (an oversize entry's ``dlq_size`` and ``dlq_fields``).
    extra: dict[str, str] | None = None


@dataclass
class BatchWrite:
    """Everything one batch (or tick) must write before its entries may be acknowledged."""

    outputs: Outputs
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: stream -> ids to acknowledge once the writes succeeded.
    acks: dict[str, list[str]] = field(default_factory=dict)
    #: ``stream/id`` -> error, for entries left pending after a failure.
    failures: dict[str, str] = field(default_factory=dict)
    #: ``stream/id`` keys to forget once acknowledged (entries that had failed before).
    resolved: list[str] = field(default_factory=list)


# Writes a whole batch and acknowledges it in one script call: one round trip, run in isolation
# (no other client sees a half-written batch). ARGV is a flat list of commands, each as
# <count> <name> <args...>. Besides Redis commands:
#   PUTLATEST <key> <ts> <field value...>: HSET unless the hash holds a newer `ts`;
#   PUTFIELDS <key> <stamp> <seen> <field value...>: each value is "<ts> <payload>"; a field is
#     set unless it holds a newer ts; with a <stamp> key ('' for none) that holds <seen>, the
#     writer knows the held ts and sends only winners, so they are set without comparing;
#   XADDONCE <stream> <marker> <version> <ttl> <now> <xadd args...>: XADD unless the marker
#     holds that version and has not run out (by the consumer's clock), then set the marker;
#   STAMP <key> <seen> <mine>: SET key mine if it holds seen ('' = nothing), else '!' .. mine;
#   XADDFIRST <stream> <hash> <field> <json> <xadd options...>: store <json> (a JSON array of the
#     entry's fields and values) in <hash> <field> unless a version is stored, then XADD the
#     stored version.
# A first pass checks every key's type and every held ts, so a write that would fail is refused
# before anything is written; XACK comes last, so whatever stops the script part way (out of
# memory) stops it before anything is acknowledged. Lua scripts do not roll back: the pre-check
# is what makes a refused batch leave nothing behind. Returns {acked, one mark per XADDONCE:
# the marker's end in ms, negated when the entry was not written}.
WRITE_BATCH_LUA = ONCE_DUE_LUA + HELD_TS_LUA + FIRST_FIELDS_LUA + """
local wants = {XADD = 'stream', XACK = 'stream', HSET = 'hash', HDEL = 'hash', ZADD = 'zset', PUTLATEST = 'hash',
               PUTFIELDS = 'hash', XADDONCE = 'stream', STAMP = 'string', XADDFIRST = 'stream'}
local kinds = {}  -- key -> type: many commands of a batch write the same streams and hashes
local function kind(key)
  local t = kinds[key]
  if t == nil then
    t = redis.call('TYPE', key)
    if type(t) == 'table' then t = t['ok'] end
    kinds[key] = t
  end
  return t
end
local held = {}  -- PUTFIELDS command start -> its fields' values as read before any write
local i, n = 1, #ARGV
while i <= n do
  local c = tonumber(ARGV[i])
  local cmd, key = ARGV[i + 1], ARGV[i + 2]
  local t = kind(key)
  if t ~= 'none' and t ~= wants[cmd] then
    return redis.error_reply('WRONGTYPE ' .. cmd .. ' ' .. key .. ' holds a ' .. t .. '; nothing written')
  end
  if cmd == 'PUTLATEST' then
    local current = redis.call('HGET', key, 'ts')
    if current and not string.match(current, '^%-?%d+$') then
      return redis.error_reply('BADSTATE ' .. key .. ' has a non-numeric ts; nothing written')
    end
  elseif cmd == 'PUTFIELDS' then
    if ARGV[i + 3] ~= '' and (redis.call('GET', ARGV[i + 3]) or '') == ARGV[i + 4] then
      held[i] = false  -- nobody wrote since the writer read: its members win as sent
    else
      local fields = {}
      for j = i + 5, i + c, 2 do fields[#fields + 1] = ARGV[j] end
      local values = redis.call('HMGET', key, unpack(fields))
      for j = 1, #fields do
        if values[j] and not held_ts(values[j]) then
          return redis.error_reply('BADSTATE ' .. key .. ' field ' .. fields[j] .. ' has no ts; nothing written')
        end
      end
      held[i] = values
    end
  elseif cmd == 'XADDONCE' then
    local m = kind(ARGV[i + 3])
    if m ~= 'none' and m ~= 'string' then
      return redis.error_reply('WRONGTYPE XADDONCE marker ' .. ARGV[i + 3] .. ' holds a ' .. m .. '; nothing written')
    end
  elseif cmd == 'XADDFIRST' then
    local h = kind(ARGV[i + 3])
    if h ~= 'none' and h ~= 'hash' then
      return redis.error_reply('WRONGTYPE XADDFIRST ' .. ARGV[i + 3] .. ' holds a ' .. h .. '; nothing written')
    end
    local stored = redis.call('HGET', ARGV[i + 3], ARGV[i + 4])
    if stored and not first_fields(stored) then
      return redis.error_reply('BADSTATE ' .. ARGV[i + 3] .. ' field ' .. ARGV[i + 4] .. ' is no stored entry; nothing written')
    end
  end
  i = i + c + 1
end
local acked, marks = 0, {}
i = 1
while i <= n do
  local c = tonumber(ARGV[i])
  local cmd = ARGV[i + 1]
  if cmd == 'PUTLATEST' then
    local current = redis.call('HGET', ARGV[i + 2], 'ts')
    if not current or tonumber(current) <= tonumber(ARGV[i + 3]) then
      redis.call('HSET', ARGV[i + 2], 'ts', ARGV[i + 3], unpack(ARGV, i + 4, i + c))
    end
  elseif cmd == 'PUTFIELDS' then
    -- The values read above still stand: a hash's fields appear in one PUTFIELDS command only
    -- (chunks of one hash hold distinct fields), and nothing else in a batch writes them.
    local values = held[i]
    if values == false then
      redis.call('HSET', ARGV[i + 2], unpack(ARGV, i + 5, i + c))
    else
      local winners = {}
      for j = i + 5, i + c, 2 do
        local ts = held_ts(values[(j - i - 3) / 2])
        if not ts or ts <= held_ts(ARGV[j + 1]) then
          winners[#winners + 1] = ARGV[j]
          winners[#winners + 1] = ARGV[j + 1]
        end
      end
      if #winners > 0 then redis.call('HSET', ARGV[i + 2], unpack(winners)) end
    end
  elseif cmd == 'STAMP' then
    if (redis.call('GET', ARGV[i + 2]) or '') == ARGV[i + 3] then
      redis.call('SET', ARGV[i + 2], ARGV[i + 4])
    else
      redis.call('SET', ARGV[i + 2], '!' .. ARGV[i + 4])
    end
  elseif cmd == 'XADDFIRST' then
    local stored = redis.call('HGET', ARGV[i + 3], ARGV[i + 4])
    if not stored then
      stored = ARGV[i + 5]
      redis.call('HSET', ARGV[i + 3], ARGV[i + 4], stored)
    end
    local args = {}  -- the XADD options, then the stored fields (unpack expands only once)
    for j = i + 6, i + c do args[#args + 1] = ARGV[j] end
    for _, v in ipairs(first_fields(stored)) do args[#args + 1] = v end
    redis.call('XADD', ARGV[i + 2], unpack(args))
  elseif cmd == 'XADDONCE' then
    local mark = once_due(ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
    if mark > 0 then redis.call('XADD', ARGV[i + 2], unpack(ARGV, i + 7, i + c)) end
    marks[#marks + 1] = mark
  else
    local reply = redis.call(unpack(ARGV, i + 1, i + c))
    if cmd == 'XACK' then acked = acked + reply end
  end
  i = i + c + 1
end
table.insert(marks, 1, acked)
return marks
"""

#: Lua's C stack takes ~8,000 values per call; a longer command goes the pipelined way.
MAX_SCRIPT_ARGS = 7000
ACK_CHUNK = 1000
FIELDS_CHUNK = 1000
#: Alert markers remembered per consumer (forgotten all at once past this; they only save work).
MAX_MARKERS = 100_000

#: What the script's held_ts() accepts as a field written by PUTFIELDS.
_HELD_TS = re.compile(rb"-?\d+ ")
#: What the script accepts as a PUTLATEST hash's `ts`.
_TS = re.compile(rb"-?\d+")

#: (marker key, version, the alert or None for a stream entry) of one XADDONCE command.
OnceSent = tuple[str, str, Alert | None]

#: (name, key, args...) of one write or acknowledgement. Not typed per position: mypy cannot
#: index or slice a variadic tuple past its fixed items.
Command = tuple[Any, ...]


def _flat(fields: Mapping[Any, Any], skip: str | None = None) -> list[Any]:
    out: list[Any] = []
    for k, v in fields.items():
        if k != skip:
            out.extend((k, v))
    return out


class Writer:
    def __init__(self, app: App) -> None:
        self.app = app
        self._batch_script = app.raw.register_script(WRITE_BATCH_LUA)
        self._put_latest = app.raw.register_script(PUT_LATEST_LUA)
        self._put_fields = app.raw.register_script(PUT_FIELDS_LUA)
        self._xadd_once = app.raw.register_script(XADD_ONCE_LUA)
        self._stamp = app.raw.register_script(STAMP_LUA)
        self._xadd_first = app.raw.register_script(XADD_FIRST_LUA)
        #: marker -> (version, end ms) of once-alerts known written: not sent again until then.
        self._alert_markers: dict[str, tuple[str, int]] = {}
        #: Why Redis refuses writes, during an episode of refusals (``stats.writes_refused_since``).
        self.refused_reason = ""
        #: Episodes of refused writes that ended, not yet alerted: (since ms, until ms, reason).
        #: Under OOM even the alert cannot be written, so it is owed until a write succeeds.
        self.owed_restored: list[tuple[int, int, str]] = []

    def note_refused(self, reason: str, where: str) -> None:
        """Redis refused a write (any path: a batch, a tick, the heartbeat, a group's
        creation): count it, and start an episode unless one runs."""
        stats = self.app.stats
        stats.writes_refused += 1
        stats.last_error = f"writes refused: {reason}"
        if not stats.writes_refused_since:
            stats.writes_refused_since = self.app.clock.now_ms()
        self.refused_reason = reason
        log.error("Redis refuses writes; the batch stays pending and is retried", extra={
            "event": "writes_refused", "where": where, "error": reason,
            "since_ms": stats.writes_refused_since})

    def note_written(self) -> None:
        """A write succeeded: an episode of refusals, if one ran, ends now (and is owed an alert)."""
        stats = self.app.stats
        since = stats.writes_refused_since
        if not since:
            return
        now = self.app.clock.now_ms()
        stats.writes_refused_since = None
        self.owed_restored.append((since, now, self.refused_reason))
        log.warning("Redis accepts writes again", extra={
            "event": "writes_restored", "refused_s": round((now - since) / 1000, 1),
            "error": self.refused_reason})
        self.refused_reason = ""

    async def write(self, batch: BatchWrite) -> None:
        """Write everything the batch caused, then acknowledge it; raise if Redis refused any."""
        # Logged first: if the write fails, the alert still reached the logs. An alert written
        # at most once per period is logged when it is written (else every judging would log).
        for alert in batch.outputs.alerts:
            if not alert.once:
                _log_alert(alert)
        writes, acks, once = self._commands(batch)
        if not (writes or acks):
            return
        try:
            if max(len(c) for c in writes + acks) > MAX_SCRIPT_ARGS:
                marks = await self._pipelined(writes, acks)
            else:
                marks = await self._scripted(writes + acks)
        except (RedisError, WriteError) as exc:
            for _, _, unwritten in once:
                if unwritten is not None:
                    _log_alert(unwritten)
            refused = refusal(exc)
            if refused is not None:
                self.note_refused(refused, "batch")
                raise WritesRefused(refused) from exc
            if isinstance(exc, WriteError):
                raise
            if isinstance(exc, (RedisConnectionError, RedisTimeoutError)) or (
                    isinstance(exc, ResponseError) and is_missing_group(exc)):
                raise  # the loop reconnects, or recreates the group
            raise WriteError(f"batch writes failed, nothing acknowledged: {exc}") from exc
        self.note_written()
        if len(self._alert_markers) > MAX_MARKERS:
            self._alert_markers.clear()
        for (marker, version, sent), mark in zip(once, marks):
            if sent is None:
                continue
            if mark > 0:
                _log_alert(sent)
            # Written or not, the marker now runs until abs(mark): until then this consumer need
            # not even send the same alert (a tick re-judging a lasting problem sends it once).
            if sent.once is not None and not sent.once.versioned:
                self._alert_markers[marker] = (version, abs(mark))

    def forget_markers(self) -> None:
        """Redis lost data: the markers remembered may be gone there with the alerts they
        stood for, so every once-alert is sent again (Redis's markers still de-duplicate it)."""
        self._alert_markers.clear()

    def _due(self, marker: str, once: Once, now_ms: int) -> bool:
        """Whether to send a once-alert. Only an alert without versions is skipped here: its
        marker in Redis can only hold the one version remembered. An alert with versions is
        always sent, as another consumer may have written another version since."""
        if once.versioned:
            return True
        held = self._alert_markers.get(marker)
        return held is None or now_ms >= held[1]

    def _commands(self, batch: BatchWrite) -> tuple[list[Command], list[Command], list[OnceSent]]:
        keys = self.app.keys
        consumer = self.app.settings.consumer
        out = batch.outputs
        trim = ("MAXLEN", "~", consumer.output_maxlen, "*")
        writes: list[Command] = []
        for name, entries in out.streams.items():
            stream = keys.stream(name)
            writes.extend(("XADD", stream, *trim, *_flat(fields)) for fields in entries)
        writes.extend(("PUTLATEST", keys.state(key), ts, *_flat(fields, skip="ts"))
                      for key, (ts, fields) in out.latest.items())
        guards = {covered: (keys.state(stamp), seen) for stamp, (seen, _, covers) in out.stamps.items()
                  for covered in covers}
        for key, members in out.fields.items():
            guard, seen = guards.get(key, ("", ""))
            args: list[str] = []
            for name, (ts, payload) in members.items():
                args += (name, f"{ts} {payload}")
            for start in range(0, len(args), 2 * FIELDS_CHUNK):  # no command outgrows one call
                writes.append(("PUTFIELDS", keys.state(key), guard, seen, *args[start:start + 2 * FIELDS_CHUNK]))
        writes.extend(("HSET", keys.state(key), *_flat(fields)) for key, fields in out.hashes.items())
        for key, scores in out.indexes.items():
            pairs: list[Any] = [x for member, score in scores.items() for x in (score, member)]
            for start in range(0, len(pairs), 2 * FIELDS_CHUNK):
                writes.append(("ZADD", keys.state(key), "NX", *pairs[start:start + 2 * FIELDS_CHUNK]))
        writes.extend(("STAMP", keys.state(key), seen, mine) for key, (seen, mine, _) in out.stamps.items())
        writes.extend(("XADD", keys.alerts, *trim, *_flat(alert.fields())) for alert in out.alerts if not alert.once)
        now = out.now_ms
        once: list[OnceSent] = []  # one per XADDONCE command, in order
        for alert in out.alerts:
            if alert.once is None:
                continue
            marker = keys.state("once", alert.once.key)
            if self._due(marker, alert.once, now):
                writes.append(("XADDONCE", keys.alerts, marker, alert.once.version, alert.once.ttl_ms, now,
                               *trim, *_flat(alert.fields())))
                once.append((marker, alert.once.version, alert))
        writes.extend(("XADDFIRST", keys.stream(name), keys.state(key), field, _json(_flat(fields)), *trim)
                      for name, key, field, fields in out.streams_first)
        # Entries are always sent: another consumer may have written another version since.
        for name, fields, spec in out.streams_once:
            marker = keys.state("once", spec.key)
            writes.append(("XADDONCE", keys.stream(name), marker, spec.version, spec.ttl_ms, now,
                           *trim, *_flat(fields)))
            once.append((marker, spec.version, None))
        writes.extend(("XADD", keys.dlq, "MAXLEN", "~", consumer.dlq_maxlen, "*", *_flat(self._dlq_fields(d)))
                      for d in batch.dead_letters)
        if batch.failures:
            writes.append(("HSET", keys.failures, *_flat(batch.failures)))
        acks: list[Command] = []
        for stream, ids in batch.acks.items():
            for start in range(0, len(ids), ACK_CHUNK):
                acks.append(("XACK", stream, self.app.group, *ids[start:start + ACK_CHUNK]))
        if batch.resolved:
            acks.append(("HDEL", keys.failures, *batch.resolved))
        return writes, acks, once

    async def _scripted(self, commands: list[Command]) -> list[int]:
        """Run the batch script; returns per XADDONCE command its marker's end (ms), negative
        when the entry was not written (the marker held that version)."""
        args: list[Any] = []
        touched = []
        for command in commands:
            args.append(len(command))
            args.extend(command)
            touched.append(command[1])
            if command[0] == "XADDONCE":
                touched.append(command[2])
        reply = await self._batch_script(keys=list(dict.fromkeys(touched)), args=args)
        return [int(x) for x in reply[1:]]

    async def _pipelined(self, writes: list[Command], acks: list[Command]) -> list[int]:
        """The same writes for a batch too large for one script call: MULTI/EXEC, then acks.

        The same type pre-check as the script's comes first, so a write Redis would refuse is
        found before anything is written.
        """
        wants = {"XADD": b"stream", "XACK": b"stream", "HSET": b"hash", "HDEL": b"hash", "ZADD": b"zset",
                 "PUTLATEST": b"hash",
                 "PUTFIELDS": b"hash", "XADDONCE": b"stream", "STAMP": b"string", "XADDFIRST": b"stream"}
        check = self.app.raw.pipeline(transaction=False)
        for command in writes + acks:
            check.type(command[1])
        latest = [c for c in writes if c[0] == "PUTLATEST"]
        for command in latest:
            check.hget(command[1], "ts")
        members = [(c[1], name) for c in writes if c[0] == "PUTFIELDS" for name in c[4::2]]
        for key, name in members:
            check.hget(key, name)
        markers = [c[2] for c in writes if c[0] == "XADDONCE"]
        for marker in markers:
            check.type(marker)
        firsts = [c for c in writes if c[0] == "XADDFIRST"]
        for command in firsts:
            check.type(command[2])
            check.hget(command[2], command[3])
        replies = await check.execute()
        for command, kind in zip(writes + acks, replies):
            if kind not in (b"none", wants[str(command[0])]):
                raise WriteError(f"WRONGTYPE {command[0]} {command[1]!r} holds a {kind.decode()}; nothing written")
        replies = replies[len(writes) + len(acks):]
        for command, held in zip(latest, replies):
            if held is not None and not _TS.fullmatch(held):  # as the script
                raise WriteError(f"BADSTATE {command[1]!r} has a non-numeric ts; nothing written")
        replies = replies[len(latest):]
        for (key, name), held in zip(members, replies):
            if held is not None and not _HELD_TS.match(held):  # as the script's held_ts()
                raise WriteError(f"BADSTATE {key!r} field {name!r} has no ts; nothing written")
        replies = replies[len(members):]
        for marker, kind in zip(markers, replies):
            if kind not in (b"none", b"string"):
                raise WriteError(f"WRONGTYPE XADDONCE marker {marker!r} holds a {kind.decode()}; nothing written")
        replies = replies[len(markers):]
        for command, kind, stored in zip(firsts, replies[::2], replies[1::2]):
            if kind not in (b"none", b"hash"):
                raise WriteError(f"WRONGTYPE XADDFIRST {command[2]!r} holds a {kind.decode()}; nothing written")
            if stored is not None and parse_first(stored) is None:
                raise WriteError(f"BADSTATE {command[2]!r} field {command[3]!r} is no stored entry; nothing written")
        pipe = self.app.raw.pipeline(transaction=True)
        once: list[int] = []  # pipeline positions of the XADDONCE scripts
        for command in writes:
            if command[0] == "PUTLATEST":
                await self._put_latest(keys=[command[1]], args=list(command[2:]), client=pipe)
            elif command[0] == "PUTFIELDS":  # compared member by member: the guard needs the script
                await self._put_fields(keys=[command[1]], args=list(command[4:]), client=pipe)
            elif command[0] == "STAMP":
                await self._stamp(keys=[command[1]], args=list(command[2:]), client=pipe)
            elif command[0] == "XADDFIRST":
                await self._xadd_first(keys=[command[1], command[2]], args=list(command[3:]), client=pipe)
            elif command[0] == "XADDONCE":
                once.append(len(pipe.command_stack))
                await self._xadd_once(keys=[command[1], command[2]], args=list(command[3:]), client=pipe)
            else:
                pipe.execute_command(*command)
        marks: list[int] = []
        if writes:
            results = await pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise WriteError(f"{len(errors)} of {len(writes)} writes failed: {errors[0]}")
            marks = [int(results[at]) for at in once]
        pipe = self.app.raw.pipeline(transaction=False)
        for command in acks:
            pipe.execute_command(*command)
        results = await pipe.execute(raise_on_error=False)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        return marks

    def _dlq_fields(self, dead: DeadLetter) -> dict[bytes | str, bytes | str]:
        fields: dict[bytes | str, bytes | str] = {
            k: v for k, v in dead.fields.items() if not _is_dlq_field(k)
        }
        fields.update(
            dlq_stream=dead.stream,
            dlq_id=dead.entry_id,
            dlq_error=dead.error,
            dlq_deliveries=str(dead.deliveries),
            dlq_consumer=self.app.consumer_name,
            dlq_ts=str(self.app.clock.now_ms()),
        )
        if dead.extra:
            fields.update(dead.extra)
        return fields


_json = msgspec.json.Encoder().encode
def _log_alert(alert: Alert) -> None:
    alert_log.log(
        _LOG_LEVEL[alert.severity], alert.message,
        # the alert's own ts (epoch ms) is `alert_ts`: `ts` is the log line's (epoch seconds)
        extra={"event": "alert", "alert_ts": alert.ts,
               **{k: v for k, v in alert.fields().items() if k not in ("message", "ts")}},
    )


def _is_dlq_field(key: bytes | str) -> bool:
    return (key.decode("utf-8", "replace") if isinstance(key, bytes) else key).startswith("dlq_")


async def write_now(app: App, out: Outputs) -> None:
    """Write one plugin's outputs now, outside the loop, as a batch would (a CLI command's
    ``navstream risk halt``): the same atomic write, the same rules.

    :raises WriteError: Redis refused or failed the write; nothing of it was applied.
    """
    await Writer(app).write(BatchWrite(out))

"""Writing a batch's results: outputs, state, alerts and dead letters, then XACK, in one call.

The acknowledgement comes after every write and only if they all succeeded, so an entry is
never acknowledged before what it caused is in Redis (contract rule 3). A failed write raises
and leaves the batch pending; the next delivery rewrites the same absolute snapshots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from navstream.contract.events import Fields
from navstream.contract.outputs import Alert, Once, Outputs
from navstream.plugin.protocol import AppProtocol
from navstream.store import ops
from navstream.store.errors import WriteError, WritesRefused, is_missing_group, refusal
from navstream.store.ops import Command, flat
from navstream.store.scripts import OP_FILES, batch_script, op_script

__all__ = [
    "BatchWrite",
    "DeadLetter",
    "WriteError",
    "Writer",
    "WritesRefused",
    "is_missing_group",
    "refusal",
    "write_now",
]

log = logging.getLogger("navstream.writer")
alert_log = logging.getLogger("navstream.alerts")

_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


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


#: Lua's C stack takes ~8,000 values per call; a longer command goes the pipelined way.
MAX_SCRIPT_ARGS = 7000
ACK_CHUNK = 1000
FIELDS_CHUNK = 1000
#: Alert markers remembered per consumer (forgotten all at once past this; they only save work).
MAX_MARKERS = 100_000

#: (marker key, version, the alert or None for a stream entry) of one XADDONCE command.
OnceSent = tuple[str, str, Alert | None]


class Writer:
    def __init__(self, app: AppProtocol) -> None:
        self.app = app
        self._batch_script = app.raw.register_script(batch_script())
        #: op -> its script on its own, for the pipelined path.
        self._op_scripts = {op: app.raw.register_script(op_script(op)) for op in OP_FILES}
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
        log.error(
            "Redis refuses writes; the batch stays pending and is retried",
            extra={"event": "writes_refused", "where": where, "error": reason, "since_ms": stats.writes_refused_since},
        )

    def note_written(self) -> None:
        """A write succeeded: an episode of refusals, if one ran, ends now (and is owed an alert)."""
        stats = self.app.stats
        since = stats.writes_refused_since
        if not since:
            return
        now = self.app.clock.now_ms()
        stats.writes_refused_since = None
        self.owed_restored.append((since, now, self.refused_reason))
        log.warning(
            "Redis accepts writes again",
            extra={
                "event": "writes_restored",
                "refused_s": round((now - since) / 1000, 1),
                "error": self.refused_reason,
            },
        )
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
                isinstance(exc, ResponseError) and is_missing_group(exc)
            ):
                raise  # the loop reconnects, or recreates the group
            raise WriteError(f"batch writes failed, nothing acknowledged: {exc}") from exc
        self.note_written()
        if len(self._alert_markers) > MAX_MARKERS:
            self._alert_markers.clear()
        for (marker, version, sent), mark in zip(once, marks, strict=False):
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
            writes.extend(("XADD", stream, *trim, *flat(fields)) for fields in entries)
        writes.extend(ops.put_latest(keys.state(key), ts, fields) for key, (ts, fields) in out.latest.items())
        guards = {
            covered: (keys.state(stamp), seen) for stamp, (seen, _, covers) in out.stamps.items() for covered in covers
        }
        for key, members in out.fields.items():
            guard, seen = guards.get(key, ("", ""))
            writes.extend(ops.put_fields(keys.state(key), guard, seen, members, FIELDS_CHUNK))
        writes.extend(("HSET", keys.state(key), *flat(fields)) for key, fields in out.hashes.items())
        for key, scores in out.indexes.items():
            pairs: list[Any] = [x for member, score in scores.items() for x in (score, member)]
            for start in range(0, len(pairs), 2 * FIELDS_CHUNK):
                writes.append(("ZADD", keys.state(key), "NX", *pairs[start : start + 2 * FIELDS_CHUNK]))
        writes.extend(ops.stamp(keys.state(key), seen, mine) for key, (seen, mine, _) in out.stamps.items())
        writes.extend(("XADD", keys.alerts, *trim, *flat(alert.fields())) for alert in out.alerts if not alert.once)
        now = out.now_ms
        once: list[OnceSent] = []  # one per XADDONCE command, in order
        for alert in out.alerts:
            if alert.once is None:
                continue
            marker = keys.state("once", alert.once.key)
            if self._due(marker, alert.once, now):
                writes.append(
                    ops.xadd_once(keys.alerts, marker, alert.once.version, alert.once.ttl_ms, now, trim, alert.fields())
                )
                once.append((marker, alert.once.version, alert))
        writes.extend(
            ops.xadd_first(keys.stream(name), keys.state(key), field, fields, trim)
            for name, key, field, fields in out.streams_first
        )
        # Entries are always sent: another consumer may have written another version since.
        for name, fields, spec in out.streams_once:
            marker = keys.state("once", spec.key)
            writes.append(ops.xadd_once(keys.stream(name), marker, spec.version, spec.ttl_ms, now, trim, fields))
            once.append((marker, spec.version, None))
        writes.extend(
            ("XADD", keys.dlq, "MAXLEN", "~", consumer.dlq_maxlen, "*", *flat(self._dlq_fields(d)))
            for d in batch.dead_letters
        )
        if batch.failures:
            writes.append(("HSET", keys.failures, *flat(batch.failures)))
        acks: list[Command] = []
        for stream, ids in batch.acks.items():
            for start in range(0, len(ids), ACK_CHUNK):
                acks.append(("XACK", stream, self.app.group, *ids[start : start + ACK_CHUNK]))
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
        await ops.precheck(self.app.raw, writes, acks)
        pipe = self.app.raw.pipeline(transaction=True)
        once: list[int] = []  # pipeline positions of the XADDONCE scripts
        for command in writes:
            at = len(pipe.command_stack)
            if await ops.queue(pipe, command, self._op_scripts) and command[0] == "XADDONCE":
                once.append(at)
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
        fields: dict[bytes | str, bytes | str] = {k: v for k, v in dead.fields.items() if not _is_dlq_field(k)}
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


def _log_alert(alert: Alert) -> None:
    alert_log.log(
        _LOG_LEVEL[alert.severity],
        alert.message,
        # the alert's own ts (epoch ms) is `alert_ts`: `ts` is the log line's (epoch seconds)
        extra={
            "event": "alert",
            "alert_ts": alert.ts,
            **{k: v for k, v in alert.fields().items() if k not in ("message", "ts")},
        },
    )


def _is_dlq_field(key: bytes | str) -> bool:
    return (key.decode("utf-8", "replace") if isinstance(key, bytes) else key).startswith("dlq_")


async def write_now(app: AppProtocol, out: Outputs) -> None:
    """Write one plugin's outputs now, outside the loop, as a batch would (a CLI command's
    ``navstream risk halt``): the same atomic write, the same rules.

    :raises WriteError: Redis refused or failed the write; nothing of it was applied.
    """
    await Writer(app).write(BatchWrite(out))

"""Writing a batch's results: outputs, state, alerts and dead letters in one pipeline, then XACK.

The acknowledgement is sent only after every write of the pipeline succeeded, so an entry is
never acknowledged before what it caused is in Redis (contract rule 3). A failed write raises
and leaves the batch pending; the next delivery rewrites the same absolute snapshots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

from .app import App
from .outputs import PUT_LATEST_LUA, Outputs

log = logging.getLogger("navstream.writer")
alert_log = logging.getLogger("navstream.alerts")

_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


class WriteError(RuntimeError):
    """Redis refused part of a batch's writes; the batch stays pending."""


@dataclass
class DeadLetter:
    stream: str
    entry_id: str
    fields: Mapping[bytes | str, bytes | str]
    error: str
    deliveries: int


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


class Writer:
    def __init__(self, app: App) -> None:
        self.app = app
        self._put_latest = app.raw.register_script(PUT_LATEST_LUA)

    async def write(self, batch: BatchWrite) -> None:
        app = self.app
        keys = app.keys
        maxlen = app.settings.consumer.output_maxlen
        out = batch.outputs
        commands = 0
        pipe = app.raw.pipeline(transaction=True)
        for name, entries in out.streams.items():
            stream = keys.stream(name)
            for fields in entries:
                pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
                commands += 1
        for key, (ts, fields) in out.latest.items():
            args: list[str | int] = [ts]
            for k, v in fields.items():
                if k != "ts":
                    args.extend((k, v))
            await self._put_latest(keys=[keys.state(key)], args=args, client=pipe)
            commands += 1
        for key, fields in out.hashes.items():
            pipe.hset(keys.state(key), mapping=fields)
            commands += 1
        for alert in out.alerts:
            pipe.xadd(keys.alerts, alert.fields(), maxlen=maxlen, approximate=True)
            commands += 1
        for dead in batch.dead_letters:
            pipe.xadd(keys.dlq, self._dlq_fields(dead), maxlen=app.settings.consumer.dlq_maxlen,
                      approximate=True)
            commands += 1
        if batch.failures:
            pipe.hset(keys.failures, mapping=batch.failures)
            commands += 1
        if commands:
            results = await pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise WriteError(f"{len(errors)} of {commands} writes failed: {errors[0]}")
        else:
            await pipe.reset()
        for alert in out.alerts:
            alert_log.log(
                _LOG_LEVEL[alert.severity], alert.message,
                extra={"event": "alert", **{k: v for k, v in alert.fields().items() if k != "message"}},
            )
        await self._ack(batch)

    async def _ack(self, batch: BatchWrite) -> None:
        acks = {stream: ids for stream, ids in batch.acks.items() if ids}
        if not acks and not batch.resolved:
            return
        pipe = self.app.raw.pipeline(transaction=False)
        for stream, ids in acks.items():
            pipe.xack(stream, self.app.group, *ids)
        if batch.resolved:
            pipe.hdel(self.app.keys.failures, *batch.resolved)
        results = await pipe.execute(raise_on_error=False)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise errors[0]

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
        return fields


def _is_dlq_field(key: bytes | str) -> bool:
    return (key.decode("utf-8", "replace") if isinstance(key, bytes) else key).startswith("dlq_")

"""This consumer's heartbeat and health, and the epoch by which consumers learn Redis lost data.

The heartbeat (``P:heartbeat:<consumer>``) says the consumer is alive and how it is; written in
one ``MULTI`` with a check of ``P:state:epoch`` and of the last heartbeat as written, it also
tells, at no extra round trip, when Redis lost data since (flushed, restarted without
persistence, rolled back, failed over to a lagging replica).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import cast

from redis.exceptions import ResponseError

from navstream.app import App
from navstream.config import ConsumerSettings
from navstream.contract.keys import Keys
from navstream.loop.entries import HashMapping, as_str
from navstream.plugin import calls
from navstream.store.writer import Writer, refusal

#: String ``P:state:epoch``: a random token, set by whichever consumer finds none (at startup or
#: on any tick) and replaced by one that recreates a vanished group. A consumer that finds
#: another token than the one it saw knows Redis lost data since (docs/operations.md).
EPOCH = "epoch"


class HeartbeatMixin:
    """The upkeep's heartbeat and epoch; :class:`~navstream.loop.upkeep.Upkeep` holds the state
    (set in its ``__init__``)."""

    app: App
    writer: Writer
    settings: ConsumerSettings
    keys: Keys
    #: ``P:state:epoch`` as this consumer last saw it (None: not known yet).
    _epoch: str | None
    #: The ``beat`` field of this consumer's heartbeat as it last wrote it, and as it last
    #: tried to (a write whose reply was lost may have been applied). None: nothing to expect.
    _beat: str | None
    _beat_tried: str | None
    _beat_id: str
    _beats: int
    #: ``time.monotonic()`` of the last heartbeat written.
    _beat_written_at: float

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
            consumer=app.consumer_name,
            group=app.group,
            ts=str(app.clock.now_ms()),
            status=status,
            role=self.settings.role,
            streams=",".join(streams),
            beat=beat,
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
            reasons.append(
                f"{epoch_key} was missing"
                if epoch == candidate
                else f"{epoch_key} held another token (lost and set again by another consumer, or "
                "replaced by one that recreated a vanished group)"
            )
        if self._beat is not None and held not in expected and not (held is None and expired):
            reasons.append(
                f"this consumer's heartbeat {key} was gone (flushed, Redis restarted without "
                "persistence, or expired while this consumer could not write it)"
                if held is None
                else f"this consumer's heartbeat {key} held an older or another beat ({held}, not "
                f"{self._beat}): a rollback to an older snapshot, a failover to a lagging replica, "
                "or another process running under the same consumer name"
            )
        self._epoch, self._beat = epoch, beat
        return "; ".join(reasons) or None

    def health(self) -> dict[str, str]:
        """Every plugin's ``navstream_health`` as ``<plugin>.<key>`` fields, and ``health``:
        ``degraded`` (with ``health_reasons``) if any plugin says so or cannot say."""
        out: dict[str, str] = {}
        reasons: list[str] = []
        for answer in calls.collect_sync(self.app.pm, "navstream_health", {"app": self.app}):
            name, report, exc = answer.plugin, answer.value or {}, answer.exc
            if exc is None:
                try:  # a report that is not a mapping of printable values is a broken report too
                    if not isinstance(report, Mapping):
                        raise TypeError(f"returned {type(report).__name__}, not a mapping")
                    fields = {f"{name}.{key}": str(value) for key, value in report.items()}
                except Exception as broken:  # noqa: BLE001 - reported as the plugin's health
                    exc = broken
                else:
                    out.update(fields)
            if exc is not None:  # a broken report is itself a health problem
                out[f"{name}.status"] = "degraded"
                out[f"{name}.reason"] = f"health report failed: {type(exc).__name__}: {exc}"
            status = out.get(f"{name}.status", "ok")
            if status != "ok":
                reasons.append(f"{name}: {out.get(f'{name}.reason') or status}")
        since = self.app.stats.writes_refused_since
        if since:
            at = datetime.fromtimestamp(since / 1000, UTC).isoformat(timespec="seconds")
            reasons.insert(
                0,
                f"Redis refuses writes since {at} ({self.writer.refused_reason or 'refused'}); "
                "the batch stays pending and is retried",
            )
        out["health"] = "degraded" if reasons else "ok"
        out["health_reasons"] = "; ".join(reasons)
        return out

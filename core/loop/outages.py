"""What the loop does when Redis goes away, refuses writes or loses a consumer group.

The loop itself (:mod:`navstream.loop.consumer`) only catches; what follows is here: retrying
with backoff, the alerts owed for an outage or a refusal until they can be written, and, when
Redis lost navstream's data, recreating the groups and forgetting what this consumer remembers
of what Redis held. Nothing is acknowledged that was not written, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from navstream.config import ConsumerSettings
from navstream.contract.outputs import Outputs
from navstream.loop.groups import GroupsMixin
from navstream.loop.throttle import AlertThrottle
from navstream.loop.upkeep import Upkeep
from navstream.store.writer import BatchWrite, WriteError, WritesRefused, refusal

log = logging.getLogger("navstream.consumer")

TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class OutagesMixin(GroupsMixin):
    """The consumer's handling of connection trouble; :class:`~navstream.loop.consumer.Consumer`
    holds the state (set in its ``__init__``)."""

    settings: ConsumerSettings
    throttle: AlertThrottle
    upkeep: Upkeep
    streams: list[str]
    alive_at: float
    _stopping: asyncio.Event
    _down_since: float | None
    _attempts: int
    #: Outages (seconds, from the first failure to the first success) not yet alerted.
    _owed_reconnects: list[float]
    #: Consecutive refusals of writes (OOM, READONLY, MISCONF), for the backoff.
    _refusals: int
    _owed_group_alerts: list[tuple[str, str]]
    #: This consumer recreated a group and owes every consumer a new ``P:state:epoch``.
    _owed_epoch: bool

    if TYPE_CHECKING:

        @property
        def stopping(self) -> bool: ...

    async def _until_connected(self, fn: Any) -> None:
        while True:
            try:
                await fn()
                await self._recovered()
                return
            except TRANSIENT as exc:
                await self._connection_lost(exc)
                if self.stopping:
                    raise
            except (ResponseError, WritesRefused) as exc:
                reason = refusal(exc)
                if reason is None:
                    raise
                if not isinstance(exc, WritesRefused):
                    self.writer.note_refused(reason, "setup")
                await self._writes_refused()
                if self.stopping:
                    raise

    async def _connection_lost(self, exc: BaseException) -> None:
        stats = self.app.stats
        stats.reconnects += 1
        self.alive_at = time.monotonic()  # retrying is progress: a Redis outage is not a hung loop
        stats.last_error = f"redis: {type(exc).__name__}: {exc}"
        if self._down_since is None:
            self._down_since = time.monotonic()
        down_for = time.monotonic() - self._down_since
        self._attempts += 1
        attempt = min(self._attempts, 16)
        delay = min(self.settings.reconnect_max_ms / 1000, 0.05 * 2**attempt) * (0.5 + random.random() / 2)
        log.error(
            "redis unreachable, retrying",
            extra={
                "event": "redis_unreachable",
                "error": str(exc),
                "down_s": round(down_for, 1),
                "retry_in_s": round(delay, 2),
            },
        )
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _recovered(self) -> None:
        """After an outage: the first command that succeeds ends it (a ``PING``: nothing else
        is tried until Redis answers), and its alert is owed until written."""
        if self._down_since is None:
            return
        try:
            await self.app.raw.ping()
        except ResponseError as exc:
            if refusal(exc) is None:  # MISCONF refuses even PING: Redis answers, though
                raise
        self._owed_reconnects.append(time.monotonic() - self._down_since)
        self._down_since = None
        self._attempts = 0
        await self._flush_owed()

    async def _flush_owed(self) -> None:
        """Write the alerts owed for outages and for episodes of refused writes that ended.
        Kept for the next try while Redis refuses them (OOM refuses the alert about OOM)."""
        restored = self.writer.owed_restored
        if not (self._owed_reconnects or restored):
            return
        out = Outputs(self.app.clock.now_ms())
        for down_for in self._owed_reconnects:
            out.alert(
                "redis_reconnected",
                "warning",
                f"connection to Redis restored after {down_for:.1f}s; pending entries are reclaimed",
            )
        for since, until, reason in restored:
            out.alert(
                "writes_restored",
                "critical",
                f"Redis refused writes for {(until - since) / 1000:.1f}s ({reason}); the batches "
                "held meanwhile stayed pending and are processed now, nothing was lost",
            )
        reconnects, episodes = len(self._owed_reconnects), len(restored)
        try:
            await self.writer.write(BatchWrite(out))
        except WritesRefused:
            return  # still owed
        del self._owed_reconnects[:reconnects]
        del restored[:episodes]

    async def _writes_refused(self) -> None:
        """Redis refuses writes as a whole (OOM, READONLY, MISCONF): stay up, keep the batch
        pending (held, retried first), and retry with backoff. Counted, logged and shown in
        ``/readyz`` and the heartbeat's health by :meth:`Writer.note_refused`."""
        self.alive_at = time.monotonic()  # waiting for Redis is progress, not a hung loop
        self._refusals += 1
        attempt = min(self._refusals, 16)
        delay = min(self.settings.reconnect_max_ms / 1000, 0.05 * 2**attempt) * (0.5 + random.random() / 2)
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _write_failed(self, exc: WriteError) -> None:
        """Redis refused some writes of a batch: nothing was acknowledged, so nothing is lost.

        The entries stay pending and are retried when reclaimed; until then say so loudly and
        slow down rather than spin.
        """
        self.app.stats.last_error = f"write: {exc}"
        self.app.stats.write_failures += 1
        log.error("batch writes refused; entries stay pending", extra={"event": "write_failed", "error": str(exc)})
        try:
            if self.throttle.allow(("write_failed", str(exc))):
                out = Outputs(self.app.clock.now_ms())
                out.alert(
                    "write_failed",
                    "critical",
                    f"Redis refused a batch's writes; nothing of it was acknowledged, so its entries "
                    f"stay pending and are retried (a tick's alerts are raised again): {exc}",
                )
                await self.writer.write(BatchWrite(out))
        except (WriteError, *TRANSIENT) as again:
            log.error("could not write the write_failed alert", extra={"event": "alert_failed", "error": str(again)})
        finally:
            await asyncio.sleep(min(self.settings.reconnect_max_ms, self.settings.claim_idle_ms) / 1000 / 10)

    def _data_lost(self, reason: str) -> None:
        """Redis lost navstream's data (flushed, restarted without persistence, rolled back):
        forget what this consumer remembers of what Redis held, so that nothing it remembers
        holds back an alert that was lost with the data. Once-alerts are sent to Redis again
        (their markers there still de-duplicate them across consumers), the core's cooldowns
        and the DLQ alert start over. Plugins keep their own memory (the nav plugin checks its
        copy against Redis on every batch and rereads everything on every tick)."""
        self.writer.forget_markers()
        self.throttle.reset()
        self.upkeep.forget()
        log.warning(
            "Redis lost data; alerts held back by this consumer's memory are raised again",
            extra={"event": "data_lost", "reason": reason},
        )

    async def _group_missing(self, exc: ResponseError) -> None:
        created = await self.ensure_groups(self.streams)
        self.app.stats.groups_recreated += len(created)
        # Owed until written: a retry after a failed write finds the group there (BUSYGROUP).
        self._owed_group_alerts += [(stream, str(exc)) for stream in created]
        self._owed_epoch = self._owed_epoch or bool(created)
        self._data_lost(f"the consumer group vanished: {exc}")
        if self._owed_epoch:  # every other consumer learns of the loss on its next tick
            await self.upkeep.new_epoch()
            self._owed_epoch = False
        else:
            self.upkeep.relearn()
        if self._owed_group_alerts:
            out = Outputs(self.app.clock.now_ms())
            for stream, error in self._owed_group_alerts:
                out.alert(
                    "group_recreated",
                    "critical",
                    f"consumer group {self.app.group!r} on {stream} had vanished (Redis restarted "
                    f"without persistence, or flushed?); recreated at id 0: {error}",
                )
            await self.writer.write(BatchWrite(out))
            self._owed_group_alerts.clear()
        if not created:  # someone else recreated it; don't spin
            await asyncio.sleep(0.05)

"""The orders lane of a consumer of role ``all`` (``[consumer] orders_lane``, off by default):
orders read on their own connection and task.

Without it, an order that arrives while an event batch is in the plugins (the ``nav`` plugin
re-values the desk) or while a tick runs waits for both: the loop reads again only when it has
finished. The lane reads ``P:orders`` alone, in its own task, so an order is read and judged at
the loop's next ``await`` (a Redis round trip of the event batch or of the tick), not after the
whole cycle. Plugin work that computes without awaiting still holds the lane up for as long as
it computes, and the lane's own reads and writes cost round trips and CPU that the events then
lack: on the 2-core reference machine it made order latency no better and let the events fall
behind (docs/performance.md), hence off by default. For orders that never wait for events at
all, run consumers of role ``orders`` (docs/deployment.md).

Delivery is the loop's: the lane's batches are handled by a :class:`BatchHandler` of their own
(decoded, dispatched to ``navstream_orders``, written and acknowledged in one script call), its
failures stay pending and are reclaimed and dead-lettered by the loop's upkeep, which reads
``P:orders`` too. Outages are the loop's to report: the lane waits with backoff and retries,
a batch Redis refused first. An error the loop would not survive stops the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol, cast

from redis.exceptions import ResponseError

from navstream.app import App
from navstream.config import ConsumerSettings
from navstream.contract.keys import Keys
from navstream.loop.batch import BatchHandler
from navstream.loop.entries import ReadReply, read_entries
from navstream.loop.observer import LoopObserver
from navstream.loop.outages import TRANSIENT
from navstream.store.writer import WriteError, Writer, WritesRefused, is_missing_group, refusal

log = logging.getLogger("navstream.consumer")

#: The lane's read blocks at most this long, so a stop is seen within it.
LANE_BLOCK_MS = 200
#: Backoff of the lane's retries after an outage, a refusal or a lost group (seconds).
BACKOFF_S = (0.02, 1.0)


class LaneHost(Protocol):
    """What the lane uses of its consumer (:class:`navstream.loop.consumer.Consumer`)."""

    app: App
    keys: Keys
    settings: ConsumerSettings
    writer: Writer
    throttle: Any
    observer: LoopObserver

    @property
    def stopping(self) -> bool: ...

    async def write_failed(self, exc: WriteError) -> None: ...


class OrdersLane:
    """Reads and answers ``P:orders`` beside the consumer's loop, until the consumer stops."""

    def __init__(self, consumer: LaneHost) -> None:
        self.consumer = consumer
        self.app = consumer.app
        self.stream = consumer.keys.orders
        self.handler = BatchHandler(consumer.app, consumer.writer, consumer.throttle, consumer.observer)
        #: ``time.monotonic()`` of the lane's last batch (for ``until_idle_s``).
        self.active_at = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self._failures = 0

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.run())

    async def stop(self) -> BaseException | None:
        """Wait for the batch in flight (a read blocks at most ``LANE_BLOCK_MS``); return the
        error that ended the lane, if one did, for the loop to raise once it has shut down."""
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        return self.failure()

    def failure(self) -> BaseException | None:
        """The error that ended the lane, for the loop to raise (None while it runs, or once it
        stopped because the consumer did). A lane cancelled while the consumer runs is one."""
        task = self.task
        if task is None or not task.done():
            return None
        if task.cancelled():
            return None if self.consumer.stopping else RuntimeError("the orders lane was cancelled")
        return task.exception()

    async def run(self) -> None:
        consumer = self.consumer
        while not consumer.stopping:
            try:
                held = self.handler.held
                if held is not None:  # refused as a whole: retried as it is, before any new read
                    await self.handler.handle(held)
                    self.active_at = time.monotonic()
                elif await self.step():
                    self.active_at = time.monotonic()
                self._failures = 0
            except (*TRANSIENT, WritesRefused) as exc:
                await self._wait(exc)  # the loop reports the outage or the refusal
            except WriteError as exc:  # the lane's own batch: reported like the loop's
                await consumer.write_failed(exc)
            except ResponseError as exc:
                reason = refusal(exc)
                if reason is None and not is_missing_group(exc):
                    raise
                if reason is not None:  # its read refused (XREADGROUP writes the PEL)
                    consumer.writer.note_refused(reason, "lane")
                await self._wait(exc)  # the loop recreates a lost group

    async def step(self) -> int:
        """Read one batch of orders, answer and acknowledge it; return how many."""
        consumer = self.consumer
        count = self.handler.read_count(consumer.settings.batch_size)
        issued = time.perf_counter_ns() if consumer.observer.timing else 0
        response = cast(
            ReadReply,
            await self.app.raw.xreadgroup(
                self.app.group,
                self.app.consumer_name,
                {self.stream: ">"},
                count=count,
                block=min(LANE_BLOCK_MS, consumer.settings.block_ms),
            ),
        )
        consumer.observer.work("read_orders", issued)
        entries = read_entries(response)
        if entries:
            await self.handler.handle(entries)
        return len(entries)

    async def _wait(self, exc: BaseException) -> None:
        self._failures += 1
        delay = min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** min(self._failures, 10))
        if self._failures == 1:
            log.warning(
                "orders lane waits for Redis",
                extra={"event": "orders_lane_retry", "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
        await asyncio.sleep(delay)

"""What the loop tells whoever watches it: each batch it finished, and, for whoever asks, the
moments inside one (a part started, its plugins done, its write done; a read, a tick, a reclaim).

The loop publishes; ``/metrics`` (its batch-latency histogram, entries by type) and the
benches (their timing spans) subscribe. Neither reaches into the loop, and the loop knows neither: a subscriber
that raises is logged and dropped from that one report, never allowed to fail the batch
(which is written and acknowledged by then).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from navstream.loop.entries import Entry

_R = TypeVar("_R")

log = logging.getLogger("navstream.consumer")


@dataclass(frozen=True)
class BatchDone:
    """One batch, written and acknowledged.

    :ivar entries: what was read (orders and events alike, new and reclaimed).
    :ivar duration_s: the time to decode, dispatch, write and acknowledge it.
    :ivar processed: entries handled, by event type (``order`` for orders).
    """

    entries: Sequence[Entry]
    duration_s: float
    processed: Mapping[str, int]


@dataclass(frozen=True)
class PartMoment:
    """A moment in handling one part of a read (the loop handles a read's orders and its events
    as parts of their own). ``at_ns`` is ``time.perf_counter_ns()``: one clock for every process
    on the machine, so a bench can line it up with when it sent an order.

    :ivar phase: ``started``; ``dispatched`` (every plugin's ``hook`` returned); ``written``.
    """

    phase: Literal["started", "dispatched", "written"]
    at_ns: int
    entries: Sequence[Entry]
    hook: str = ""


WorkKind = Literal["read", "read_orders", "tick", "reclaim"]


@dataclass(frozen=True)
class Work:
    """One piece of the loop's own work: a ``read`` (XREADGROUP issued to answered), the orders
    lane's ``read_orders`` (:mod:`navstream.loop.lane`), a ``tick`` or a ``reclaim``, from
    ``started_ns`` to ``ended_ns`` (``time.perf_counter_ns()``)."""

    kind: WorkKind
    started_ns: int
    ended_ns: int


BatchSubscriber = Callable[[BatchDone], None]
PartSubscriber = Callable[[PartMoment], None]
WorkSubscriber = Callable[[Work], None]


class LoopObserver:
    """Subscribers of one consumer's loop, called in the order they subscribed."""

    def __init__(self) -> None:
        self._batch: list[BatchSubscriber] = []
        self._part: list[PartSubscriber] = []
        self._work: list[WorkSubscriber] = []

    def on_batch(self, subscriber: BatchSubscriber) -> Callable[[], None]:
        """Call ``subscriber`` after every batch; returns a function that unsubscribes it."""
        self._batch.append(subscriber)
        return lambda: self._batch.remove(subscriber)

    def on_part(self, subscriber: PartSubscriber) -> Callable[[], None]:
        """Call ``subscriber`` at each :class:`PartMoment`; returns its unsubscriber."""
        self._part.append(subscriber)
        return lambda: self._part.remove(subscriber)

    def on_work(self, subscriber: WorkSubscriber) -> Callable[[], None]:
        """Call ``subscriber`` after each read, tick and reclaim; returns its unsubscriber."""
        self._work.append(subscriber)
        return lambda: self._work.remove(subscriber)

    @property
    def timing(self) -> bool:
        """Whether anyone watches parts or work: the loop takes no timestamps otherwise."""
        return bool(self._part or self._work)

    def batch_done(self, report: BatchDone) -> None:
        _tell(self._batch, report)

    def part(
        self, phase: Literal["started", "dispatched", "written"], entries: Sequence[Entry], hook: str = ""
    ) -> None:
        if self._part:
            _tell(self._part, PartMoment(phase, time.perf_counter_ns(), entries, hook))

    def work(self, kind: WorkKind, started_ns: int) -> None:
        if self._work:
            _tell(self._work, Work(kind, started_ns, time.perf_counter_ns()))


def _tell(subscribers: Sequence[Callable[[_R], None]], report: _R) -> None:
    for subscriber in list(subscribers):
        try:
            subscriber(report)
        except Exception as exc:  # noqa: BLE001 - a watcher must not fail the loop's work
            log.error(
                "a loop subscriber failed",
                extra={
                    "event": "observer_failed",
                    "subscriber": getattr(subscriber, "__qualname__", repr(subscriber)),
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )

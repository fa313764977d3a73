"""The daily write budget and the pacing of documents against it.

Firestore bills per write, so the group shares ``max_writes_per_day`` (counted in Redis by the
ledger): routine updates are paced over the UTC day so that they never spend more than
:data:`ROUTINE_END` of it; beyond that, and at any time once :data:`LOW_BUDGET` is used, only
significant changes and heartbeats are written. Here: the UTC day, the allowance, and the
sink's choice of which waiting documents may be written now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from navstream import Clock

from .config import FirestoreConfig
from .documents import Doc, moved
from .writes import SinkStats, Written

#: Firestore's limit of operations in one ``WriteBatch`` commit.
MAX_BATCH = 500
#: The writer looks at its queue at least this often (the budget's pacing moves with the clock).
IDLE_WAKE_S = 1.0
#: Share of the daily budget from which only significant changes are written, and alerted.
LOW_BUDGET = 0.8
#: Routine updates may use this share of the budget at the start of the UTC day, growing
#: linearly to :data:`ROUTINE_END` at its end: the budget is spread over the day.
ROUTINE_START = 0.05
ROUTINE_END = 0.75
DAY_MS = 86_400_000

Readiness = Literal["ready", "wait", "deferred", "blocked"]


def utc_day(now_ms: int) -> tuple[str, float]:
    """The UTC date of ``now_ms`` and how far into that day it is (0..1)."""
    day = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y-%m-%d")
    return day, (now_ms % DAY_MS) / DAY_MS


def routine_allowance(budget: int, day_fraction: float) -> float:
    """Writes the whole group may have made today before routine updates are held back."""
    return budget * (ROUTINE_START + (ROUTINE_END - ROUTINE_START) * day_fraction)


class BudgetMixin:
    """The sink's budget and pacing; :class:`~.sink.Sink` holds the state (set in its
    ``__init__``)."""

    cfg: FirestoreConfig
    clock: Clock
    stats: SinkStats
    pending: dict[str, Doc]
    last: dict[str, Written]
    #: The group's writes on ``used_day``, as last known (Redis, plus our own since).
    used_day: str
    used: int
    #: Shutting down: the latest version of every document goes out now, interval or not.
    _flushing: bool

    if TYPE_CHECKING:

        @property
        def leader(self) -> bool: ...

    def observe_used(self, day: str, used: int) -> None:
        """The group's write count for ``day`` as Redis holds it (an earlier day's is old news)."""
        if day < self.used_day:
            return
        if day != self.used_day:
            self.used_day, self.used = day, used
        else:
            self.used = max(self.used, used)

    def used_now(self, now_ms: int) -> int:
        day, _ = utc_day(now_ms)
        return self.used if day == self.used_day else 0

    def budget_low(self, now_ms: int) -> bool:
        return self.used_now(now_ms) >= LOW_BUDGET * self.cfg.max_writes_per_day

    def _routine_closed(self, now_ms: int, extra: int) -> bool:
        day, fraction = utc_day(now_ms)
        used = (self.used if day == self.used_day else 0) + extra
        budget = self.cfg.max_writes_per_day
        return used >= LOW_BUDGET * budget or used >= routine_allowance(budget, fraction)

    def _readiness(self, doc: Doc, now: float, routine_closed: bool) -> Readiness:
        if doc.shared and not self.leader:
            return "blocked"
        last = self.last.get(doc.path)
        if last is not None and now - last.at < self.cfg.min_interval_s and not self._flushing:
            return "wait"
        if not routine_closed or doc.significance == "always":
            return "ready"
        if doc.significance == "changes" and (
            last is None or doc.sig != last.sig or moved(doc.amount, last.amount, self.cfg.significant_move_pct)
        ):
            return "ready"
        return "deferred"

    def _take(self, now: float) -> tuple[list[Doc], float]:
        """Up to :data:`MAX_BATCH` documents that may be written now, and how long until
        another one may (at most :data:`IDLE_WAKE_S`)."""
        batch: list[Doc] = []
        wait_s = IDLE_WAKE_S
        deferred = 0
        now_ms = self.clock.now_ms()
        closed = self._routine_closed(now_ms, 0)
        for doc in self.pending.values():
            if len(batch) >= MAX_BATCH:
                break
            state = self._readiness(doc, now, closed)
            if state == "ready":
                batch.append(doc)
                if not closed:
                    closed = self._routine_closed(now_ms, len(batch))
            elif state == "wait":
                wait_s = min(wait_s, self.cfg.min_interval_s - (now - self.last[doc.path].at))
            elif state == "deferred":
                deferred += 1
        self.stats.deferred = deferred
        for doc in batch:
            del self.pending[doc.path]
        return batch, wait_s

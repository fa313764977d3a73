"""What the sink says about itself: the problems that keep the dashboards from the whole truth,
and its ``navstream_health`` report. :class:`~.sink.Sink` holds the state (set in its
``__init__``); this mixin only reads it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .config import FirestoreConfig
from .documents import Doc
from .writes import SinkStats, Store


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if ms else ""


class HealthMixin:
    """The sink's problems and health report."""

    cfg: FirestoreConfig
    store: Store
    stats: SinkStats
    pending: dict[str, Doc]
    _owed: list[tuple[str, int, list[tuple[str, str, int]]]]
    _ledger_failed: bool

    if TYPE_CHECKING:  # the sink's own, and its budget's (:class:`~.budget.BudgetMixin`)

        @property
        def leader(self) -> bool: ...

        def budget_low(self, now_ms: int) -> bool: ...

        def used_now(self, now_ms: int) -> int: ...

    def problems(self, now_ms: int) -> list[tuple[str, str]]:
        """``(code, reason)`` of everything that keeps the dashboards from the whole truth."""
        s = self.stats
        out: list[tuple[str, str]] = []
        if self.store.dry_run:
            out.append(("dry_run", "dry run: documents are logged, nothing is written to Firestore"))
        elif s.failing_since_ms:
            out.append(
                (
                    "failing",
                    f"writes failing since {iso(s.failing_since_ms)} ({s.consecutive_failures} "
                    f"attempts, retried with backoff): {s.last_failure}",
                )
            )
        elif not s.last_success_ms:
            out.append(("unconfirmed", "no write confirmed yet"))
        if self.budget_low(now_ms):
            out.append(
                (
                    "budget_low",
                    f"{self.used_now(now_ms)} of {self.cfg.max_writes_per_day} writes used today "
                    "(UTC): only significant changes and heartbeats are written",
                )
            )
        if self._owed and self._ledger_failed:
            out.append(
                (
                    "ledger",
                    f"{sum(c for _, c, _ in self._owed)} writes not yet counted in the group's "
                    f"daily budget in Redis ({self.stats.ledger_failures} failures); other "
                    "consumers cannot see them until Redis answers",
                )
            )
        if len(self.pending) >= self.cfg.queue_size:
            out.append(("queue_full", f"queue full ({self.cfg.queue_size} documents): {s.shed} updates shed"))
        return out

    def health(self, now_ms: int) -> dict[str, Any]:
        s = self.stats
        problems = self.problems(now_ms)
        report: dict[str, Any] = {
            "status": "degraded" if problems else "ok",
            "leader": int(self.leader),
            "writes": s.writes,
            "batches": s.batches,
            "failures": s.failures,
            "pending": len(self.pending),
            "deferred": s.deferred,
            "coalesced": s.coalesced,
            "shed": s.shed,
            "writes_today": self.used_now(now_ms),
            "max_writes_per_day": self.cfg.max_writes_per_day,
            "last_success_ms": s.last_success_ms,
            "last_failure_ms": s.last_failure_ms,
            "last_failure": s.last_failure,
        }
        if self.store.dry_run:
            report["would_write"] = s.would_write
        if problems:
            report["reason"] = "; ".join(reason for _, reason in problems)
        return report

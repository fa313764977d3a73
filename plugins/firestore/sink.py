"""The writer: documents are offered by the tick, coalesced, paced and committed by a task of
their own, so a slow or failing Firestore never holds up the consumer loop.

- **Coalescing.** One pending version per document, the latest offered; a version equal to the
  one last written (or in flight) is not written again. The queue holds at most ``queue_size``
  documents: a new document offered beyond that is shed and counted, an update of one already
  waiting replaces it.
- **Pacing.** At most one write per document per ``min_interval_s``; at most 500 operations per
  ``WriteBatch``. Routine updates are paced over the UTC day so that they never spend more
  than :data:`ROUTINE_END` of ``max_writes_per_day`` (the count is shared by every consumer
  through Redis); beyond that, and at any time once :data:`LOW_BUDGET` is used, only
  significant changes (a NAV status, its missing or stale inputs, a move beyond
  ``significant_move_pct``, a trading state) and heartbeats are written. Held-back updates stay
  pending (the latest wins) and go out when the budget allows. It never just stops.
- **Failure.** A commit that fails or times out is counted, logged and retried with
  exponential backoff and jitter; its documents go back to the queue unless a newer version
  came meanwhile. The health report turns ``degraded`` with the error until a commit succeeds
  again. ``ok`` is only ever reported after a confirmed write.

The budget and the pacing live in :mod:`.budget`, the types the sink works with in
:mod:`.writes`; every name is still importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from navstream import Clock

from .budget import (
    DAY_MS,
    IDLE_WAKE_S,
    LOW_BUDGET,
    MAX_BATCH,
    ROUTINE_END,
    ROUTINE_START,
    BudgetMixin,
    Readiness,
    routine_allowance,
    utc_day,
)
from .config import FirestoreConfig
from .documents import Doc
from .health import HealthMixin, iso
from .writes import Ledger, SinkStats, Store, Written

__all__ = [
    "COMMIT_TIMEOUT_S",
    "DAY_MS",
    "IDLE_WAKE_S",
    "LOW_BUDGET",
    "MAX_BATCH",
    "RETRY_BASE_S",
    "RETRY_MAX_S",
    "ROUTINE_END",
    "ROUTINE_START",
    "Ledger",
    "Readiness",
    "Sink",
    "SinkStats",
    "Store",
    "Written",
    "iso",
    "routine_allowance",
    "utc_day",
]

log = logging.getLogger("navstream.firestore")

#: A commit that has not answered by then counts as failed (and is retried).
COMMIT_TIMEOUT_S = 20.0
#: Backoff after a failed commit: base, doubled per consecutive failure up to the cap, jittered.
RETRY_BASE_S = 0.5
RETRY_MAX_S = 30.0


class Sink(BudgetMixin, HealthMixin):
    """Coalesces, paces, batches and commits documents; see the module docstring.

    :param store: where commits go.
    :param ledger: records each commit's size in the group's daily count (``None`` in dry runs).
    :param clock: navstream's clock, for the budget's day and the reported times.
    """

    def __init__(self, cfg: FirestoreConfig, store: Store, ledger: Ledger | None, clock: Clock) -> None:
        self.cfg = cfg
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self.stats = SinkStats()
        self.pending: dict[str, Doc] = {}
        self.inflight: dict[str, str] = {}
        self.last: dict[str, Written] = {}
        #: The group's writes on ``used_day``, as last known (Redis, plus our own since).
        self.used_day = ""
        self.used = 0
        #: Whether the last renewal found the lease ours, and until when (monotonic) we trust it.
        self.holding = False
        self.lease_until = 0.0
        self._owed: list[tuple[str, int, list[tuple[str, str, int]]]] = []
        #: The last attempt to count writes in Redis failed (what is owed is behind, not in flight).
        self._ledger_failed = False
        self._retry_at = 0.0
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._stopping = False
        #: Shutting down: the latest version of every document goes out now, interval or not.
        self._flushing = False
        self._task: asyncio.Task[None] | None = None

    # --- the tick's side ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="navstream-firestore-writer")

    def offer(self, doc: Doc) -> None:
        """The latest version of a document: written when its interval and the budget allow."""
        path = doc.path
        known = self.inflight.get(path)
        if known is None:
            written = self.last.get(path)
            known = written.content if written is not None else None
        unchanged = known is not None and known == doc.content and doc.significance != "always"
        waiting = self.pending.get(path)
        if waiting is not None:
            if waiting.content != doc.content or doc.significance == "always":
                self.stats.coalesced += 1
            if unchanged:  # back to what Firestore already holds
                del self.pending[path]
            else:
                self.pending[path] = doc
                self._wake.set()
            return
        if unchanged:
            return
        if len(self.pending) >= self.cfg.queue_size and doc.significance != "always":
            self.stats.shed += 1
            return
        self.pending[path] = doc
        self._wake.set()

    @property
    def leader(self) -> bool:
        return self.holding and time.monotonic() < self.lease_until

    def lease(self, held: bool, valid_s: float, since: float) -> bool:
        """Record the outcome of a lease renewal started at ``since`` (monotonic); returns
        whether leadership was lost by it (then the shared documents are dropped)."""
        was, self.holding = self.holding, held
        self.lease_until = since + valid_s if held else 0.0
        if was and not held:
            self.drop_shared()
            return True
        return False

    def drop_shared(self) -> None:
        """Another consumer writes the shared documents now: forget ours, so that taking the
        lease again rewrites them all rather than trusting what we last wrote."""
        self.pending = {p: d for p, d in self.pending.items() if not d.shared}
        self.last = {p: w for p, w in self.last.items() if not p.startswith(("nav/", "risk/"))}

    # --- tests and shutdown ---------------------------------------------------------------------

    async def settle(self) -> None:
        """Return once the writer has nothing it could write right now."""
        if self._task is None or self._task.done():
            return
        self._settled.clear()
        self._wake.set()
        await self._settled.wait()

    def writable(self) -> int:
        """Documents waiting that will be written without a new budget or lease."""
        now = time.monotonic()
        low = self._routine_closed(self.clock.now_ms(), 0)
        return sum(1 for d in self.pending.values() if self._readiness(d, now, low) in ("ready", "wait"))

    async def close(self, timeout_s: float) -> int:
        """Write what may still be written, for up to ``timeout_s`` (the latest version of each
        document, without waiting out its interval: a last burst is within Firestore's limits);
        stop; return how many documents were left unwritten (logged)."""
        deadline = time.monotonic() + timeout_s
        self._flushing = True
        try:
            while self.writable() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.settle(), max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if self.writable():  # waiting for an interval or a retry
                    await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        finally:
            self._stopping = True
            self._wake.set()
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
            await self.store.aclose()
        left = len(self.pending)
        if left:
            log.error(
                "firestore sink stopped with documents unwritten",
                extra={
                    "event": "firestore_unwritten",
                    "documents": left,
                    "paths": sorted(self.pending)[:20],
                    "last_failure": self.stats.last_failure,
                },
            )
        return left

    # --- the writer task ------------------------------------------------------------------------

    async def confirmed(self, doc: Doc) -> None:
        """``doc`` was committed by someone else (the startup probe): count and record it."""
        self._succeeded([doc])
        await self._record([doc])

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except Exception as exc:
                log.exception("firestore writer failed; going on", extra={"event": "firestore_writer_error"})
                self._failed([], exc)
                await self._nap(RETRY_BASE_S)

    async def _step(self) -> None:
        """One look at the queue: commit what may go now, else sleep until something may."""
        self._wake.clear()
        now = time.monotonic()
        if now < self._retry_at:
            self._settled.set()
            await self._nap(self._retry_at - now)
            return
        batch, wait_s = self._take(now)
        if batch:
            await self._commit(batch)
            return
        self._settled.set()
        await self._nap(wait_s)

    async def _nap(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.001, seconds))
        except TimeoutError:
            pass

    async def _commit(self, batch: list[Doc]) -> None:
        for doc in batch:
            self.inflight[doc.path] = doc.content
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await self.store.commit(batch)
        except TimeoutError:
            self._failed(batch, TimeoutError(f"no answer within {COMMIT_TIMEOUT_S:g}s"))
            return
        except asyncio.CancelledError:  # stopped mid-commit: what it held is unwritten, and said so
            for doc in batch:
                self.pending.setdefault(doc.path, doc)
            raise
        except Exception as exc:  # noqa: BLE001 - any failed commit is counted, alerted and retried
            self._failed(batch, exc)
            return
        finally:
            for doc in batch:
                self.inflight.pop(doc.path, None)
        self._succeeded(batch)
        await self._record(batch)

    def _failed(self, batch: list[Doc], exc: BaseException) -> None:
        s = self.stats
        s.failures += 1
        s.consecutive_failures += 1
        s.last_failure_ms = self.clock.now_ms()
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        s.last_failure = text if len(text) <= 500 else text[:497] + "..."
        if not s.failing_since_ms:
            s.failing_since_ms = s.last_failure_ms
        for doc in batch:  # back in the queue, unless a newer version came meanwhile
            self.pending.setdefault(doc.path, doc)
        attempt = min(s.consecutive_failures, 16)
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        self._retry_at = time.monotonic() + delay
        log.error(
            "firestore commit failed, retrying",
            extra={
                "event": "firestore_write_failed",
                "documents": len(batch),
                "error": s.last_failure,
                "attempt": s.consecutive_failures,
                "retry_in_s": round(delay, 2),
            },
        )

    def _succeeded(self, batch: list[Doc]) -> None:
        s = self.stats
        now = time.monotonic()
        if self.store.dry_run:
            s.would_write += len(batch)
        else:
            s.writes += len(batch)
            s.batches += 1
            s.last_success_ms = self.clock.now_ms()
        if s.failing_since_ms:
            log.warning(
                "firestore writes succeed again",
                extra={
                    "event": "firestore_recovered",
                    "failing_since": iso(s.failing_since_ms),
                    "attempts": s.consecutive_failures,
                },
            )
        s.consecutive_failures = 0
        s.failing_since_ms = 0
        self._retry_at = 0.0
        for doc in batch:
            if doc.kind in ("nav", "risk", "heartbeat"):
                self.last[doc.path] = Written(now, doc.content, doc.sig, doc.amount)

    async def _record(self, batch: list[Doc]) -> None:
        """Count the commit in the group's daily budget (and index history documents)."""
        if self.ledger is None:
            return
        day, _ = utc_day(self.clock.now_ms())
        indexes = [doc.index for doc in batch if doc.index is not None]
        self._owed.append((day, len(batch), indexes))
        if day == self.used_day:
            self.used += len(batch)  # known at once, whatever Redis says
        try:
            while self._owed:
                owed_day, count, owed_indexes = self._owed[0]
                used = await self.ledger.record(owed_day, count, owed_indexes)
                self._owed.pop(0)
                self.observe_used(owed_day, used)
            self._ledger_failed = False
        except Exception as exc:  # noqa: BLE001 - Redis away: owed, retried, and reported as degraded
            self._ledger_failed = True
            self.stats.ledger_failures += 1
            if len(self._owed) > 100:  # bounded, but nothing forgotten: older counts merged per day
                merged: dict[str, tuple[int, list[Any]]] = {}
                for owed_day, count, owed_indexes in self._owed:
                    held = merged.get(owed_day, (0, []))
                    merged[owed_day] = (held[0] + count, held[1] + owed_indexes)
                self._owed = [(d, c, i) for d, (c, i) in merged.items()]
            log.warning(
                "could not record firestore writes in Redis; retried with the next commit",
                extra={"event": "firestore_ledger_failed", "error": str(exc), "owed": len(self._owed)},
            )

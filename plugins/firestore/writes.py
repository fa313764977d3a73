"""What the sink works with: where commits go (:class:`Store`), where the group's daily count is
kept (:class:`Ledger`), what it remembers of a document it wrote, and its counters.

Apart from the writer task (:mod:`.sink`) so that its budget and pacing (:mod:`.budget`) name
the same types without importing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from .documents import Doc


class Store(Protocol):
    """Where committed documents go: Firestore, or the log of a dry run."""

    dry_run: bool

    async def commit(self, docs: Sequence[Doc]) -> None: ...

    async def aclose(self) -> None: ...


class Ledger(Protocol):
    """The Redis side: the group's write count per UTC day, and the history index."""

    async def record(self, day: str, count: int, indexes: Sequence[tuple[str, str, int]]) -> int: ...


@dataclass(slots=True)
class Written:
    at: float
    content: str
    sig: str
    amount: Decimal | None


@dataclass
class SinkStats:
    #: Operations committed (documents written or deleted), and commits.
    writes: int = 0
    batches: int = 0
    #: Failed commits, and the failures in a row so far (0 once a commit succeeds).
    failures: int = 0
    consecutive_failures: int = 0
    #: Updates that replaced a waiting version of their document.
    coalesced: int = 0
    #: New documents refused by a full queue.
    shed: int = 0
    #: Documents held back by the budget at the last look.
    deferred: int = 0
    #: Dry run: operations that would have been committed.
    would_write: int = 0
    last_success_ms: int = 0
    last_failure_ms: int = 0
    last_failure: str = ""
    #: When the current run of failures began (0: the last commit succeeded).
    failing_since_ms: int = 0
    #: The write count could not be recorded in Redis (retried with the next commit).
    ledger_failures: int = 0

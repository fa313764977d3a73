"""The sink's health while it counts its writes in the group's daily budget (Redis).

A count in flight is not a problem; only a count Redis refused is (``ledger``). Before, a
heartbeat built while the count of the last commit was still on its way said ``degraded``
whenever the machine was busy enough for a tick to land in that window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal

import msgspec
from support import START_MS

from navstream import ManualClock
from navstream.plugins.firestore.config import FirestoreConfig
from navstream.plugins.firestore.documents import Doc
from navstream.plugins.firestore.sink import Sink


class Store:
    dry_run = False

    def __init__(self) -> None:
        self.commits: list[list[Doc]] = []

    async def commit(self, docs: Sequence[Doc]) -> None:
        self.commits.append(list(docs))

    async def aclose(self) -> None:
        pass


class Ledger:
    """Holds each count until released; refuses while ``failing`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.failing: Exception | None = None
        self.counted = 0

    async def record(self, day: str, count: int, indexes: Sequence[tuple[str, str, int]]) -> int:
        self.entered.set()
        await self.release.wait()
        if self.failing is not None:
            raise self.failing
        self.counted += count
        return self.counted


def sink_with(ledger: Ledger) -> Sink:
    cfg = msgspec.convert({"enabled": True, "project": "p", "env": "dev", "min_interval_s": 0.01}, FirestoreConfig)
    return Sink(cfg, Store(), ledger, ManualClock(START_MS))


def doc(path: str) -> Doc:
    return Doc(path, {"v": "x"}, "nav", "changes", shared=False, content="x", sig="ok", amount=Decimal("1"))


async def test_a_count_in_flight_is_not_a_problem_and_a_refused_one_is() -> None:
    ledger = Ledger()
    sink = sink_with(ledger)
    sink.start()
    try:
        sink.offer(doc("nav/a"))
        await asyncio.wait_for(ledger.entered.wait(), 5)
        # The commit is done, its count is on its way to Redis: nothing is wrong.
        assert sink.problems(START_MS) == []
        assert sink.health(START_MS)["status"] == "ok"
        ledger.release.set()
        await sink.settle()
        assert ledger.counted == 1 and sink.problems(START_MS) == []

        ledger.failing = ConnectionError("redis away")
        sink.offer(doc("nav/b"))
        await sink.settle()
        await asyncio.sleep(0)
        codes = [code for code, _ in sink.problems(START_MS)]
        assert codes == ["ledger"], sink.problems(START_MS)
        assert sink.health(START_MS)["status"] == "degraded"

        ledger.failing = None  # Redis back: the next commit's count carries the owed one too
        sink.offer(doc("nav/c"))
        await sink.settle()
        await asyncio.sleep(0)
        assert ledger.counted == 3 and sink.problems(START_MS) == []
    finally:
        await sink.close(1.0)

"""A small cache of quotes, so sources and rounds reuse a fresh one instead of asking again.

An entry is fresh while it was *fetched* less than its TTL ago; what it holds is the quote as
the venue observed it, with the venue's ``ts``, so re-publishing it never makes a price look
younger than it is (the NAV's freshness still judges its real age). Only successful quotes are
cached: a failed or missing one is never remembered, let alone as 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from navstream.contract.events import Price

#: Entries kept at most; the oldest fetched go first beyond it.
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Cached:
    price: Price
    fetched_at: float


class PriceCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[tuple[str, str, str], Cached] = {}
        self.hits = 0
        self.misses = 0

    def put(self, prices: Iterable[Price]) -> None:
        now = self.clock()
        for p in prices:
            key = (p.source, p.base, p.quote)
            self._entries.pop(key, None)  # re-inserted last: the dict stays in fetch order
            self._entries[key] = Cached(p, now)
        while len(self._entries) > MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]

    def get(self, source: str, base: str, quote: str, ttl_s: float) -> Price | None:
        """The quote fetched less than ``ttl_s`` ago, or None (``ttl_s`` 0: never)."""
        held = self._entries.get((source, base, quote))
        if held is None or ttl_s <= 0 or self.clock() - held.fetched_at >= ttl_s:
            self.misses += 1
            return None
        self.hits += 1
        return held.price

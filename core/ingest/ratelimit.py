"""A request-weight budget per host, shared by every source that calls it.

Venues limit by weight per rolling window per IP (Binance: spot 6,000 and futures 2,400 a
minute; CoinGecko: calls a minute by plan). Every request first takes its weight from the
host's budget, waiting if the window is spent, so a burst of assets never becomes a burst of
requests. A 429 stops the host until its ``Retry-After`` has passed; a 418 (Binance's IP ban
after an ignored 429) stops it harder, doubling each time. A wait that would outlast the
caller's deadline is not waited for: it fails at once with the time the host frees up, so a
fetch reports "rate limited" instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

#: 418 without Retry-After: first ban assumed this long, doubling up to the cap.
BAN_FIRST_S = 120.0
BAN_MAX_S = 3_600.0
#: 429 without Retry-After.
RETRY_AFTER_DEFAULT_S = 60.0


class RateLimited(RuntimeError):
    """The host cannot be called before ``until`` (monotonic seconds)."""

    def __init__(self, message: str, until: float) -> None:
        super().__init__(message)
        self.until = until


class HostLimiter:
    """Weight budget of one host over a rolling window.

    :param weight_per_window: what the venue allows in one window (the lowest any source of
        this host declared).
    :param window_s: the window (60 s for "per minute" limits).
    """

    def __init__(
        self, host: str, weight_per_window: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if weight_per_window < 1:
            raise ValueError(f"{host}: the weight budget must be at least 1")
        self.host = host
        self.budget = weight_per_window
        self.window_s = window_s
        self.clock = clock
        self._spent: deque[tuple[float, int]] = deque()  # (when, weight), oldest first
        self._spent_total = 0
        self.blocked_until = 0.0
        self.block_reason = ""
        self._ban_s = 0.0
        self._lock = asyncio.Lock()  # first come, first served: waiters queue in order
        #: Counters for status, metrics (``navstream ingest``'s /metrics) and tests: requests let
        #: through, waits for room and their total seconds, requests refused (no room before the
        #: deadline), 429 and 418 answers.
        self.requests = 0
        self.waits = 0
        self.waited_s = 0.0
        self.rejections = 0
        self.too_many = 0
        self.bans = 0

    def limit(self, weight_per_window: int) -> None:
        """Another source declares a budget for this host: the lower one stands."""
        self.budget = min(self.budget, weight_per_window)

    def spent(self) -> int:
        self._expire(self.clock())
        return self._spent_total

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.window_s:
            self._spent_total -= self._spent.popleft()[1]

    def _free_at(self, weight: int, now: float) -> float:
        """When ``weight`` fits in the window (``now`` if it does already)."""
        if weight > self.budget:
            raise ValueError(f"{self.host}: one request of weight {weight} exceeds the whole budget {self.budget}")
        at = max(now, self.blocked_until)
        excess = self._spent_total + weight - self.budget
        if excess > 0:
            freed = 0
            for when, w in self._spent:
                freed += w
                if freed >= excess:
                    at = max(at, when + self.window_s)
                    break
        return at

    async def acquire(self, weight: int, deadline: float) -> None:
        """Take ``weight`` from the budget, waiting for room until ``deadline`` (monotonic).

        :raises RateLimited: the host is blocked, or has no room, past the deadline.
        """
        async with self._lock:
            while True:
                now = self.clock()
                self._expire(now)
                at = self._free_at(weight, now)
                if at <= now:
                    break
                if at > deadline:
                    self.rejections += 1
                    why = (
                        self.block_reason
                        if self.blocked_until > now
                        else f"weight budget {self.budget}/{self.window_s:g}s spent"
                    )
                    raise RateLimited(f"{self.host}: {why}; free in {at - now:.1f}s, after this fetch's deadline", at)
                self.waits += 1
                self.waited_s += at - now
                await asyncio.sleep(at - now)
            self._spent.append((now, weight))
            self._spent_total += weight
            self.requests += 1

    def observe_used(self, used: int) -> None:
        """The venue reports the weight it counted in the current window (Binance's
        ``X-MBX-USED-WEIGHT-1M``): others on the same IP spend it too, so never count less."""
        now = self.clock()
        self._expire(now)
        if used > self._spent_total:
            self._spent.append((now, used - self._spent_total))
            self._spent_total = used

    def too_many_requests(self, retry_after_s: float | None) -> float:
        """A 429: stop until ``Retry-After`` (or a minute); returns the seconds blocked."""
        self.too_many += 1
        wait = retry_after_s if retry_after_s is not None and retry_after_s >= 0 else RETRY_AFTER_DEFAULT_S
        self._block(wait, f"HTTP 429 (rate limited), retry after {wait:g}s")
        return wait

    def banned(self, retry_after_s: float | None) -> float:
        """A 418: the IP is banned. Stop for ``Retry-After`` if given, and never less than
        twice the last ban (from two minutes, capped at an hour); returns the seconds blocked."""
        self.bans += 1
        self._ban_s = min(BAN_MAX_S, self._ban_s * 2 if self._ban_s else BAN_FIRST_S)
        wait = max(self._ban_s, retry_after_s or 0.0)
        self._block(wait, f"HTTP 418 (IP banned), backing off {wait:g}s")
        return wait

    def _block(self, seconds: float, reason: str) -> None:
        until = self.clock() + seconds
        if until > self.blocked_until:
            self.blocked_until = until
            self.block_reason = reason

    def succeeded(self) -> None:
        """A normal answer: the ban escalation starts again from the beginning."""
        self._ban_s = 0.0

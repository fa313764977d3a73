"""The demo's sources: the real ingest code, its HTTP answered in process by the stub venue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

import httpx
import msgspec
import redis.asyncio as aioredis

from navstream.app import ManualClock
from navstream.config import SOURCES_SECTION, ConfigError, Settings
from navstream.contract.keys import Keys
from navstream.demo.scenario import ScenarioError, SourceAttempt, VenueAnswer, clock_label, demo_sources
from navstream.ingest.httppool import HttpPool
from navstream.ingest.runner import Ingest
from navstream.sources import SourceKind

#: CoinGecko's answer to a client over its rate limit, as its public API sends it (with
#: ``Retry-After``, e.g. 119 s, in the headers).
COINGECKO_429_BODY = (
    '{"status":{"error_code":429,"error_message":"You\'ve exceeded the Rate Limit. Please visit '
    'https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate limits."}}'
)


#: Exact JSON numbers: the stub venue sends the scenario's prices as CoinGecko does, as numbers.
_NUMBERS = msgspec.json.Encoder(decimal_format="number")


class StubVenue:
    """The venue the demo's sources talk to, in process: the handler of an
    ``httpx.MockTransport``. Before each attempt the demo tells it the step's answer
    (:meth:`expect`); it answers every request of that attempt with it, as CoinGecko would
    (``/simple/price`` bodies for the ids asked, its 429), and records what was asked. A request
    it has no answer for is answered 500 and recorded as unexpected: the demo then stops with a
    :class:`ScenarioError` instead of showing a failure the scenario did not script.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.answer: VenueAnswer | None = None
        #: The requests of the current attempt: (path, ids asked).
        self.asked: list[tuple[str, list[str]]] = []
        self.unexpected: list[str] = []

    def expect(self, answer: VenueAnswer | None) -> None:
        self.answer, self.asked, self.unexpected = answer, [], []

    def handle(self, request: httpx.Request) -> httpx.Response:
        ids = [i for i in request.url.params.get("ids", "").split(",") if i]
        self.asked.append((request.url.path, ids))
        answer = self.answer
        if answer is None or not request.url.path.endswith("/simple/price"):
            self.unexpected.append(f"{request.method} {request.url.copy_with(query=None)}")
            return httpx.Response(500, text="stub venue: no answer scripted for this request")
        if answer.timeout:
            raise httpx.ReadTimeout("stub venue: no answer before the timeout", request=request)
        status = answer.status or 200
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if answer.retry_after_s is not None:
            headers["Retry-After"] = str(answer.retry_after_s)
        if status == 200:
            vs = request.url.params.get("vs_currencies", "usd")
            observed = self.clock.now_ms() // 1000 - answer.age_s
            body = {
                cg_id: {vs: Decimal(answer.prices[cg_id]), "last_updated_at": observed}
                for cg_id in ids
                if cg_id in answer.prices
            }
            return httpx.Response(200, headers=headers, content=_NUMBERS.encode(body))
        if answer.body is not None:
            text = answer.body
        elif status == 429:
            text = COINGECKO_429_BODY
        else:
            text, headers["Content-Type"] = httpx.codes.get_reason_phrase(status), "text/plain"
        return httpx.Response(status, headers=headers, text=text)


@dataclass
class SourceReport:
    """One attempt of a source at a step: what the stub venue was asked and answered, and what
    the source published to ``P:events`` (read back from the stream, as written)."""

    source: str
    #: The step's scripted answer; None: the source was expected not to ask.
    answer: VenueAnswer | None
    #: Requests the stub venue received, and the ids they asked.
    requests: int
    ids: int
    #: The entries the attempt wrote, in stream order: its prices, then its source_status.
    written: list[dict[str, str]]

    @property
    def status(self) -> dict[str, str]:
        return next((f for f in reversed(self.written) if f.get("type") == "source_status"), {})

    @property
    def ok(self) -> bool:
        return self.status.get("ok") == "true"

    @property
    def prices(self) -> int:
        return sum(1 for f in self.written if f.get("type") == "price")

    def action(self) -> str:
        """``asked 4 ids, HTTP 429, Retry-After 120 s -> no price``: the summary without its verdict."""
        if self.requests:
            asked = f"asked {self.ids} ids, {self.answer.describe() if self.answer else 'no answer'}"
        else:
            blocked = "HTTP 429" in self.status.get("error", "")
            asked = "not asked (host blocked by the 429)" if blocked else "not asked"
        published = f"{self.prices} prices" if self.prices else "no price"
        return f"{asked} -> {published}"


class DemoSources:
    """The demo's ingest side: the ``[sources.*]`` of its settings built by the real
    :class:`Ingest` from the loaded plugins' source kinds, HTTP through the :class:`StubVenue`,
    the HTTP pool and its limiters on the simulated clock, writing to ``P:events`` through
    ``redis`` exactly as ``navstream ingest`` does."""

    def __init__(
        self, settings: Settings, kinds: Mapping[str, SourceKind], redis: aioredis.Redis, clock: ManualClock
    ) -> None:
        self.clock = clock
        self.venue = StubVenue(clock)
        missing = sorted({s.kind for s in demo_sources(settings.extra.get(SOURCES_SECTION, {})).values()} - set(kinds))
        if missing:
            raise ConfigError(
                f"{settings.source}: the demo's prices come from source kind(s) {', '.join(missing)} "
                "of the built-in plugin `sources`, which is not loaded (see `navstream plugins`, "
                "NAVSTREAM_PLUGINS)"
            )
        self.http = HttpPool(transport=httpx.MockTransport(self.venue.handle), clock=self.monotonic_s)
        self.ingest = Ingest(settings, kinds, redis, clock=clock, http=self.http, env={})
        self.keys = Keys(settings.redis.prefix)
        self.redis = redis

    def monotonic_s(self) -> float:
        """The pool's clock: the simulated time in seconds, so Retry-After and budgets count it."""
        return self.clock.now_ms() / 1000

    def _check_waits(self, attempt: SourceAttempt, at_s: int) -> None:
        """A source whose host is blocked, or out of budget, for less than its ``timeout_s``
        would wait for it in real time while the simulated clock stands still: refused."""
        run = self.ingest.runs[attempt.source]
        now = self.monotonic_s()
        for limiter in self.http.limiters.values():
            limiter.spent()  # expires the window's old requests
            free = limiter._free_at(1, now)  # what acquire() would wait for (every demo request weighs 1)
            if now < free <= now + run.source.settings.timeout_s:
                raise ScenarioError(
                    f"{clock_label(at_s)}: {attempt.source} would wait {free - now:g}s for "
                    f"{limiter.host} ({limiter.block_reason or 'its call budget'}), and simulated "
                    "time does not pass within a step: move the step"
                )

    async def attempt(self, attempt: SourceAttempt, at_s: int) -> SourceReport:
        """One fetch of ``attempt.source``, answered by the stub venue, published by the ingest code.

        :raises ScenarioError: the source asked with no answer scripted, or did not ask for one.
        """
        self._check_waits(attempt, at_s)
        last = cast("list[tuple[str, dict[str, str]]]", await self.redis.xrevrange(self.keys.events, count=1))
        after = last[0][0] if last else "0-0"
        self.venue.expect(attempt.answer)
        await self.ingest.attempt(self.ingest.runs[attempt.source])
        asked, unexpected = self.venue.asked, self.venue.unexpected
        if unexpected:
            raise ScenarioError(
                f"{clock_label(at_s)}: {attempt.source} sent {', '.join(unexpected)} with no answer scripted"
            )
        if attempt.answer is not None and not asked:
            raise ScenarioError(
                f"{clock_label(at_s)}: an answer is scripted for {attempt.source}, which asked nothing (rate limited?)"
            )
        rows = cast(
            "list[tuple[str, dict[str, str]]]", await self.redis.xrange(self.keys.events, min=f"({after}", max="+")
        )
        written = [dict(fields) for _, fields in rows or []]
        return SourceReport(attempt.source, attempt.answer, len(asked), sum(len(ids) for _, ids in asked), written)

    async def aclose(self) -> None:
        await self.ingest.aclose()

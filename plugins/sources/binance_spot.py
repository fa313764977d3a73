"""Source kind ``binance-spot``: last prices of spot pairs from Binance's ``/api/v3/ticker/price``.

Every configured pair goes in ONE request (``symbols=["BTCUSDT","ETHUSDT"]``, weight 4 however
many), so adding pairs never adds requests. Binance limits request weight per minute per IP
(spot: 6,000) and answers an ignored 429 with a 418 ban of minutes to days: the host's budget
is declared here and the shared limiter obeys both (see ``navstream.ingest.ratelimit``).

Amounts come as strings and stay exact; one outside the wire's number grammar or bounds
(``navstream.contract.numbers``) is a problem, never published. The answer carries no time, so ``ts`` is when the
response arrived: the latest moment the price is known to have held. A pair missing from the
answer, or priced 0, is a problem and not published. A symbol Binance does not know fails the
whole request (``-1121 Invalid symbol``): that is a config error to fix, quoted as Binance
says it.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import msgspec

from navstream import Fetched, Price, SourceContext, SourceError, SourceEvent, SourceSettings

from .common import BaseSource, check_binance, deadline, decode_json, exact, quoted, valid_base_url

#: ``/api/v3/ticker/price`` with ``symbols``: weight 4 whatever the count.
WEIGHT = 4
_PAIR = re.compile(r"^([A-Z0-9]{1,20})/([A-Z0-9]{1,20})$")


# The options are SourceSettings' own, restated for type checkers.
class BinanceSpotSettings(SourceSettings, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[sources.<name>]`` of kind ``binance-spot`` (frozen, and unknown keys rejected, as
    every ``SourceSettings``)."""

    base_url: str = "https://api.binance.com"
    #: Pairs as ``BASE/QUOTE`` (``"BTC/USDT"``): the events' base and quote.
    pairs: list[str] = []
    #: The host's request-weight budget a minute (Binance spot: 6,000 per IP).
    weight_per_minute: Annotated[int, msgspec.Meta(ge=WEIGHT, le=1_000_000)] = 6000

    def __post_init__(self) -> None:
        valid_base_url(self.base_url)
        if not self.pairs:
            raise ValueError('`pairs` must list at least one pair, like ["BTC/USDT"]')
        symbols: dict[str, str] = {}
        for pair in self.pairs:
            if not _PAIR.match(pair):
                raise ValueError(f'`pairs`: {pair!r} is not BASE/QUOTE in upper case, like "BTC/USDT"')
            symbol = pair.replace("/", "")
            if symbol in symbols:
                raise ValueError(
                    f"`pairs`: {pair!r} and {symbols[symbol]!r} are both Binance symbol {symbol}"
                    if symbols[symbol] != pair
                    else f"`pairs`: {pair!r} is listed twice"
                )
            symbols[symbol] = pair


class BinanceSpotSource(BaseSource):
    def __init__(self, name: str, settings: BinanceSpotSettings, ctx: SourceContext) -> None:
        super().__init__(name, settings, ctx, venue="binance")
        self.url = valid_base_url(settings.base_url) + "/api/v3/ticker/price"
        ctx.http.limit(self.url, settings.weight_per_minute)
        #: Binance symbol -> (base, quote).
        self.pairs = {p.replace("/", ""): (p.split("/")[0], p.split("/")[1]) for p in settings.pairs}
        self.symbols = json.dumps(list(self.pairs), separators=(",", ":"))  # compact, as Binance wants

    async def fetch(self) -> Fetched:
        what = f"binance /api/v3/ticker/price ({len(self.pairs)} symbols)"
        response = await self.ctx.http.request(
            "GET",
            self.url,
            deadline=deadline(self.ctx, self.settings),
            weight=WEIGHT,
            params={"symbols": self.symbols},
            headers={"Accept": "application/json"},
            what=what,
        )
        arrival = self.ctx.clock.now_ms()
        check_binance(response, what)
        body = decode_json(response, what)
        if not isinstance(body, list):
            raise SourceError(f"{what}: expected a JSON array of tickers, got {type(body).__name__}")
        answered = {
            t["symbol"]: t.get("price") for t in body if isinstance(t, dict) and isinstance(t.get("symbol"), str)
        }
        events: list[SourceEvent] = []
        problems: list[str] = []
        for symbol, (base, quote) in self.pairs.items():
            if symbol not in answered:
                problems.append(f"{base}/{quote} ({symbol}): not in Binance's answer")
                continue
            price = exact(answered[symbol])
            if price is None or price <= 0:
                problems.append(
                    f"{base}/{quote} ({symbol}): no usable price in Binance's answer (got {quoted(answered[symbol])})"
                )
                continue
            events.append(Price(ts=arrival, base=base, quote=quote, price=price, source=self.name))
        return Fetched(events, problems)

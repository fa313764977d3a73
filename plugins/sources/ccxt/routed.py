"""A CCXT exchange whose every request goes through navstream's HTTP pool, with exact numbers.

CCXT has its own rate limiter and its own HTTP stack (aiohttp). Two limiters that share no state
cannot keep a desk under a venue's limit, so navstream's pool is the one authority: the subclass
made here turns CCXT's ``throttle(cost)`` into a note of the request's cost, and its ``fetch``
sends through ``ctx.http.request`` with that cost as the weight and the fetch's deadline. The
host's budget is declared in CCXT's cost units (60,000 / ``rateLimit`` a minute, which is what
CCXT's own limiter would allow); every source of that host shares it, a 429 or 418 blocks the
host for its ``Retry-After`` before CCXT sees the answer, and one venue's wait never holds up
another's (the pool's limiters are per host). No aiohttp session is ever opened.

The answer then goes through CCXT's own ``parse_json``, ``handle_errors`` and
``handle_http_status_code``, so CCXT's mapping of each venue's error codes is kept. Numbers:
``number = str`` makes every unified amount the venue's decimal string, and the JSON parser
keeps JSON numbers as their text (``parse_float=str``; not ``Decimal``, which CCXT's
``safe_string`` drops), so no amount passes through a binary float.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from navstream import SourceContext, SourceError, clip, redact

#: The CCXT cost of the request being prepared: ``throttle`` sets it and ``fetch`` reads it, in
#: the same task (CCXT's ``fetch2`` awaits one, then calls ``sign`` and the other).
_COST: ContextVar[float] = ContextVar("navstream_ccxt_cost", default=1.0)
#: Exchange id -> the key of its answers' envelope holding the server's time of the answer
#: (epoch ms). Exchanges not listed have none: their answers are stamped on arrival.
SERVER_TIME = {"bybit": "time"}


def bybit_positions_scope(market: Any) -> dict[str, str] | None:
    """Bybit's position list is read one category at a time, and for linear contracts one settle
    coin at a time (with no symbol, CCXT asks ``settleCoin=USDT`` alone): the ``fetch_positions``
    params of the slice holding ``market``'s positions, or None when it has none (spot)."""
    if not isinstance(market, dict) or not market.get("contract"):
        return None
    if market.get("inverse"):
        return {"type": "swap", "subType": "inverse"}
    settle = market.get("settleId")
    if market.get("linear") and isinstance(settle, str) and settle:
        return {"type": "swap", "subType": "linear", "settleCoin": settle}
    return None


#: Exchange id -> the ``fetch_positions`` params of the slice of the venue's positions a market
#: belongs to, for exchanges where one call reads one slice: a complete read asks every slice
#: the loaded markets have, one call each. Exchanges not listed read every position in one call
#: with no params (OKX: every instrument type; Kraken: the signed body stays exactly
#: nonce/docalcs/consolidation).
POSITIONS_SCOPE: dict[str, Callable[[Any], dict[str, str] | None]] = {"bybit": bybit_positions_scope}
#: Most positions one ``fetch_positions`` call returns, where CCXT asks one page and does not
#: follow the venue's cursor (Bybit: ``limit=200``): a full page may be one of several.
POSITIONS_PAGE: dict[str, int] = {"bybit": 200}


def exact_json(text: str) -> Any:
    """JSON with every non-integer number kept as its text (integers stay ``int``)."""
    return json.loads(text, parse_float=str)


def rebase(urls: Any, base_url: str) -> Any:
    """``urls`` (CCXT's ``urls['api']``: a string, or dicts of them) with scheme and host of each
    URL replaced by ``base_url``'s. ``{hostname}`` placeholders are left for CCXT to fill."""
    if isinstance(urls, dict):
        return {key: rebase(value, base_url) for key, value in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        base = urlsplit(base_url)
        parts = urlsplit(urls.replace("{hostname}", "hostname.invalid"))
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))
    return urls


def routed(cls: type[Any]) -> type[Any]:
    """A subclass of CCXT's exchange class ``cls`` routed through a navstream HTTP pool."""

    class Routed(cls):  # CCXT is untyped: cls is type[Any]
        navstream_ctx: SourceContext
        #: When the current fetch must be done (the pool's clock); set by the source per fetch.
        navstream_deadline: float = 0.0
        #: While a balance is parsed: unified code -> the venue ids that CCXT mapped onto it.
        navstream_ids: dict[str, list[str]] | None = None
        #: While positions are asked: each answer's envelope time (``SERVER_TIME``), as sent.
        navstream_times: list[Any] | None = None

        async def throttle(self, cost: Any = None) -> None:
            _COST.set(1.0 if cost is None else float(cost))

        def safe_ticker(self, ticker: Any, market: Any = None) -> Any:
            """CCXT's, except that a ticker the venue sent without a usable last price (absent,
            empty, 0) keeps ``last`` (and ``close``) None: CCXT would make one up from the 24 h
            open and change, or the average, and the source would publish it as a price."""
            sent = self.omit_zero(self.safe_string_2(ticker, "close", "last"))
            out = super().safe_ticker(ticker, market)
            if sent is None and isinstance(out, dict):
                out["last"] = out["close"] = None
            return out

        def safe_currency_code(self, currency_id: Any, currency: Any = None) -> Any:
            code = super().safe_currency_code(currency_id, currency)
            if self.navstream_ids is not None and isinstance(currency_id, str) and isinstance(code, str):
                ids = self.navstream_ids.setdefault(code, [])
                if currency_id not in ids:
                    ids.append(currency_id)
            return code

        async def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            what = f"{self.id} {method} {urlsplit(url).path}"  # never the query: it may be signed
            request_headers = self.prepare_request_headers(headers)
            content = body.encode() if isinstance(body, str) else body
            response = await self.navstream_ctx.http.request(
                method,
                url,
                deadline=self.navstream_deadline,
                weight=max(1, math.ceil(_COST.get())),
                headers=request_headers,
                content=content,
                what=what,
            )
            text = response.text
            parsed = self.parse_json(text)
            reply_headers = dict(response.headers)
            self.handle_errors(
                response.status_code, response.reason_phrase, url, method, reply_headers, text, parsed, headers, body
            )
            self.handle_http_status_code(response.status_code, response.reason_phrase, url, method, text)
            if not response.is_success:
                raise SourceError(redact(f"HTTP {response.status_code} on {what}: {clip(text.strip(), 200)}"))
            if parsed is None:
                raise SourceError(
                    redact(f"{what}: malformed JSON in the answer: {clip(text.strip(), 120) or '(empty body)'}")
                )
            key = SERVER_TIME.get(self.id)
            if self.navstream_times is not None:
                self.navstream_times.append(parsed.get(key) if key and isinstance(parsed, dict) else None)
            return parsed

    Routed.__name__ = Routed.__qualname__ = f"Routed_{cls.__name__}"
    return Routed


def build_exchange(
    cls: type[Any], ctx: SourceContext, *, market_type: str, base_url: str, credentials: dict[str, str]
) -> Any:
    """A routed instance of ``cls`` with exact numbers and no limiter of its own."""
    exchange = routed(cls)(
        {
            **credentials,
            "enableRateLimit": True,  # keeps fetch2 calling throttle() (our cost note); nothing waits in it
            "options": {"defaultType": market_type},
        }
    )
    exchange.navstream_ctx = ctx
    exchange.number = str
    exchange.on_json_response = exact_json
    exchange.timeout_on_exit = 0
    exchange.has["fetchCurrencies"] = False  # costly, often a private call a read-only key may not make
    if market_type == "spot":
        contracts_for_positions(exchange)
    if base_url:
        exchange.urls["api"] = rebase(exchange.urls["api"], base_url)
    return exchange


def contracts_for_positions(exchange: Any) -> None:
    """Positions exist for contracts only: with a spot wallet (``defaultType`` spot), exchanges
    that take ``fetchPositions``' market type from CCXT's options would ask for spot positions,
    which a venue refuses (Bybit: ``/v5/position/list?category=spot``). The method's own option
    says swap instead; exchanges that ask for every position (OKX) or none by type (Kraken)
    never read it, and no request gets an extra parameter. A type CCXT already set is kept."""
    options = exchange.options.get("fetchPositions")
    if options is None:
        exchange.options["fetchPositions"] = {"defaultType": "swap"}
    elif isinstance(options, dict) and options.get("defaultType") is None and options.get("type") is None:
        options["defaultType"] = "swap"

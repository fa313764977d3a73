"""The ``ccxt`` source: one configured venue account (and/or its prices) through one CCXT exchange.

Each fetch loads the venue's markets (first time, then hourly: contract sizes, symbols), then
asks what ``fetch`` lists, one after another: balances, positions, prices. A CCXT error fails
the whole fetch with a reason built from its class and the venue's own code (``errors``), so a
failed round publishes nothing and ``source_status`` says why; what is wrong with single values
(an unknown or missing symbol, an unreadable amount, two venue codes on one asset) is a problem,
and the rest of the round is published. navstream's exceptions (``SourceError`` for a timeout or
a transport error, the pool's ``RateLimited``) pass through unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from navstream import Fetched, SourceContext, SourceError, SourceEvent, clip, redact

from ..common import BaseSource, deadline, epoch_ms
from .convert import Reader
from .errors import is_ccxt_error, source_error
from .routed import POSITIONS_PAGE, POSITIONS_SCOPE, build_exchange
from .settings import CREDENTIALS, CcxtSettings, ccxt_budget, exchange_class

#: Markets are loaded again after this long (listings and contract sizes change, rarely).
MARKETS_TTL_S = 3600.0
#: Which of an exchange's ``options['fetchMarkets']['types']`` to load for each need; options
#: are never loaded (one request per underlying, and no kind here reads them).
SPOT_TYPES = {"spot", "margin"}
CONTRACT_TYPES = {"swap", "future", "linear", "inverse"}
#: What CCXT's parsers (and ours) raise on an answer of the wrong shape or with garbage in it.
UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)
#: Symbols (assets) remembered to publish as 0 once their position (balance) is gone; beyond
#: it the oldest go.
MAX_SYMBOLS = 5_000


class CcxtSource(BaseSource):
    """Built once at startup: the exchange instance, its credentials (a missing variable fails
    there, naming it) and the host's budget."""

    def __init__(self, name: str, settings: CcxtSettings, ctx: SourceContext) -> None:
        super().__init__(name, settings, ctx, venue=settings.venue_name, account=settings.account or None)
        self.cfg = settings
        cls = exchange_class(settings.exchange)
        credentials = {}
        if settings.private:
            for credential, setting in CREDENTIALS.items():
                env_name = getattr(settings, setting)
                if env_name:
                    credentials[credential] = ctx.secret(name, setting, env_name)
        self.exchange = build_exchange(
            cls, ctx, market_type=settings.market_type, base_url=settings.base_url, credentials=credentials
        )
        self._restrict_market_types()
        limit = ccxt_budget(self.exchange.rateLimit)
        self.budget = min(limit, settings.weight_per_minute) if settings.weight_per_minute else limit
        for url in self.api_urls(self.exchange.urls.get("api")):
            ctx.http.limit(url, self.budget)
        self.reader = Reader(self.venue, settings.account, settings.assets, name)
        self.markets_at: float | None = None
        #: Every position symbol seen, published as 0 once the venue stops listing it.
        self.held: dict[str, None] = {}
        #: Every desk asset published (-> its venue code), published as 0 once a successful
        #: balance answer omits it. In-process only: after a restart, assets held before are not
        #: known, and the NAV marks their last value stale at its age limit.
        self.assets_held: dict[str, str | None] = {}

    @staticmethod
    def api_urls(urls: Any) -> list[str]:
        """Every concrete http(s) URL in CCXT's ``urls['api']`` (placeholders filled as CCXT would not know yet)."""
        if isinstance(urls, dict):
            return [u for value in urls.values() for u in CcxtSource.api_urls(value)]
        if isinstance(urls, str) and urls.startswith(("http://", "https://")) and "{" not in urls:
            return [urls]
        return []

    def _restrict_market_types(self) -> None:
        """Load only the market types this source needs (never options)."""
        fetch_markets = self.exchange.options.get("fetchMarkets")
        types = fetch_markets.get("types") if isinstance(fetch_markets, dict) else None
        if not isinstance(types, list):
            return
        symbols = [*self.cfg.symbols, *self.cfg.position_symbols]
        wanted: set[str] = set()
        if self.cfg.market_type in ("spot", "margin") or any(":" not in s for s in symbols):
            wanted |= SPOT_TYPES
        contracts = "positions" in self.cfg.fetch or any(":" in s for s in symbols)
        if self.cfg.market_type in ("swap", "future") or contracts:
            wanted |= CONTRACT_TYPES
        kept = [t for t in types if t in wanted]
        if kept:
            fetch_markets["types"] = kept

    async def aclose(self) -> None:
        """Closes CCXT's instance (no session was opened; ``timeout_on_exit`` is 0, so no wait)."""
        await self.exchange.close()

    async def fetch(self) -> Fetched:
        self.exchange.navstream_deadline = deadline(self.ctx, self.settings)
        events: list[SourceEvent] = []
        problems: list[str] = []
        step = "markets"
        try:
            await self._markets()
            for step in self.cfg.fetch:
                if step == "balances":
                    events.extend(await self._balances(problems))
                elif step == "positions":
                    events.extend(await self._positions(problems))
                else:
                    events.extend(await self._prices(problems))
        except Exception as exc:
            if is_ccxt_error(exc):
                raise source_error(exc, f"{self.venue} {step}") from None
            if isinstance(exc, UNREADABLE):  # CCXT's parsing choked on the answer (Precise on "NaN", ...)
                raise SourceError(
                    redact(
                        f"{self.venue} {step}: the answer could not be read "
                        f"({type(exc).__name__}: {clip(str(exc), 160)})"
                    )
                ) from None
            raise
        return Fetched(events, problems)

    async def _markets(self) -> None:
        now = float(self.ctx.http.clock())
        stale = self.markets_at is None or now - self.markets_at >= MARKETS_TTL_S
        if stale:
            await self.exchange.load_markets(reload=self.markets_at is not None)
            self.markets_at = now

    def _listed(self, symbols: list[str], kind: str, problems: list[str]) -> list[str]:
        """``symbols`` the venue lists; the others are problems (CCXT would fail the whole call)."""
        markets = self.exchange.markets or {}
        listed = [s for s in symbols if s in markets]
        for symbol in symbols:
            if symbol not in markets:
                problems.append(
                    f"{kind} {symbol}: {self.cfg.exchange} does not list this symbol (BadSymbol); not published"
                )
        return listed

    async def _balances(self, problems: list[str]) -> list[SourceEvent]:
        self.exchange.navstream_ids = {}
        try:
            balance = await self.exchange.fetch_balance()
            ids = self.exchange.navstream_ids
        finally:
            self.exchange.navstream_ids = None
        arrival = self.ctx.clock.now_ms()
        if not isinstance(balance, dict) or not isinstance(balance.get("total"), dict) or not balance["total"]:
            raise SourceError(
                f"{self.venue} balances: the answer holds no {self.cfg.market_type} wallet (no asset at all); "
                "nothing published"
            )
        out = self.reader.balances(balance, ids, arrival, problems, self.assets_held)
        for event in out:
            self.assets_held[event.asset] = event.venue_asset
        while len(self.assets_held) > MAX_SYMBOLS:
            del self.assets_held[next(iter(self.assets_held))]
        return list(out)

    def _position_queries(
        self, wanted: list[str] | None, problems: list[str]
    ) -> tuple[list[tuple[list[str] | None, dict[str, str]]], Callable[[str], bool]]:
        """The ``fetch_positions`` calls (symbols, params) that together read every position
        asked for, and which symbols they read (a held symbol outside them is never zeroed).
        An exchange in ``POSITIONS_SCOPE`` is asked one call per slice (Bybit: category and
        settle coin) that the wanted symbols, or else the loaded markets, have."""
        scope = POSITIONS_SCOPE.get(self.exchange.id)
        if scope is None:
            return [(wanted, {})], lambda symbol: wanted is None or symbol in wanted
        markets = self.exchange.markets or {}
        slices: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for symbol in wanted if wanted is not None else markets:
            params = scope(markets.get(symbol))
            if params is not None:
                slices.setdefault(tuple(sorted(params.items())), params)
            elif wanted is not None:
                problems.append(
                    f"position {symbol}: not a contract {self.cfg.exchange} keeps positions of; not published"
                )
        queries: list[tuple[list[str] | None, dict[str, str]]] = [(None, dict(slices[k])) for k in sorted(slices)]

        def read(symbol: str) -> bool:
            params = scope(markets.get(symbol))
            asked = params is not None and tuple(sorted(params.items())) in slices
            return asked and (wanted is None or symbol in wanted)

        return queries, read

    async def _positions(self, problems: list[str]) -> list[SourceEvent]:
        wanted = self._listed(self.cfg.position_symbols, "position", problems) if self.cfg.position_symbols else None
        if wanted == []:
            return []
        queries, covered = self._position_queries(wanted, problems)
        self.exchange.navstream_times = []
        answer: list[Any] = []
        try:
            for symbols, params in queries:  # one failing fails the round: never a partial read as complete
                part = await self.exchange.fetch_positions(symbols, params)
                if not isinstance(part, list):
                    raise ValueError("the positions answer is not a list")
                page = POSITIONS_PAGE.get(self.exchange.id)
                if page is not None and len(part) >= page:  # more may follow: never taken as the whole
                    raise SourceError(
                        f"{self.venue} positions: one answer holds {len(part)} positions, a full page of "
                        f"{page}, and more may follow unread; none is published or closed"
                    )
                answer.extend(p for p in part if wanted is None or not isinstance(p, dict) or p.get("symbol") in wanted)
            times = self.exchange.navstream_times
        finally:
            self.exchange.navstream_times = None
        arrival = self.ctx.clock.now_ms()
        # the answer's time (the oldest envelope's when CCXT asked several pages or slices),
        # never a position's own last-change time: an untouched position is as fresh as the answer
        venue_ms = [t for t in map(epoch_ms, times) if t is not None]
        ts = self.reader.stamp(min(venue_ms) if venue_ms and len(venue_ms) == len(times) else None, arrival, problems)
        read = self.reader.positions(answer, ts, arrival, problems, self.exchange.markets or {})
        out: list[SourceEvent] = [p for p in read.values() if p is not None]
        for symbol in self.held:
            if symbol not in read and covered(symbol):
                out.append(self.reader.closed(symbol, ts))
        for symbol in read:
            self.held.setdefault(symbol)
        while len(self.held) > MAX_SYMBOLS:
            del self.held[next(iter(self.held))]
        return out

    async def _prices(self, problems: list[str]) -> list[SourceEvent]:
        listed = self._listed(self.cfg.symbols, "price", problems)
        markets = self.exchange.markets
        groups: dict[str, list[str]] = defaultdict(list)  # one request per market type
        for symbol in listed:
            groups[str(markets[symbol].get("type"))].append(symbol)
        tickers: dict[str, Any] = {}
        for symbols in groups.values():
            if self.exchange.has.get("fetchTickers"):
                answer = await self.exchange.fetch_tickers(symbols)
                tickers.update(answer if isinstance(answer, dict) else {})
            else:
                for symbol in symbols:
                    tickers[symbol] = await self.exchange.fetch_ticker(symbol)
        arrival = self.ctx.clock.now_ms()
        out: list[SourceEvent] = []
        for symbol in listed:
            price = self.reader.price(symbol, markets[symbol], tickers.get(symbol), arrival, problems)
            if price is not None:
                out.append(price)
        return out

"""Source kind ``binance-usdm-account``: wallet balances and positions of one USD-M futures account.

One signed request (``GET /fapi/v3/account``, weight 5, HMAC-SHA256 of the query string) gives
one ``balance`` per entry of ``assets[]`` (``walletBalance`` with its ``unrealizedProfit``) and
one ``position`` per symbol of ``positions[]``, zeros included, so a withdrawn or liquidated
wallet reads 0 instead of keeping its last value. The ``total*`` fields are never used: in
single-asset mode they count USDT only, and a desk holding USDC margin would lose it.

Binance's v3 payload is leaner than v2's, and nothing is made up to fill the gaps:

- positions carry no ``entryPrice`` or ``markPrice``; the contract requires ``entry_price``, so
  it is 0 ("not reported") unless the venue sends one, and ``mark_price`` is sent only when
  given. Neither feeds the NAV, which rests on balances and their unrealized PnL.
- hedge mode lists a ``LONG`` and a ``SHORT`` entry per symbol; events are keyed by symbol, so
  the two are netted (``qty`` and ``unrealized_pnl`` added) rather than one overwriting the other.
- ``positions[]`` lists only symbols with a position or open orders: a closed one simply
  vanishes. Every symbol this process has seen is therefore published each round, as 0 when
  absent (absolute snapshots: a lost or superseded write is repaired by the next round).
- there is no top-level ``updateTime``, so ``ts`` is when the answer arrived. The per-entry
  ``updateTime`` values say when an entry last *changed*, not when the venue observed it (an
  untouched wallet would look days old and stale the NAV); they serve only to spot a venue
  clock running ahead of ours, which is reported.

A balance missing from an answer that had it before is a problem, not a 0: a wallet emptied
reads ``"0"``, so an absent asset is an odd answer, and its last value ages until the NAV says
stale. Credentials come from the environment at startup and appear in no message; error texts
go through ``redact`` in case one quotes the signed query.
"""

from __future__ import annotations

import decimal
import hashlib
import hmac
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import msgspec

from navstream import (
    Balance,
    Fetched,
    Position,
    SourceContext,
    SourceError,
    SourceEvent,
    SourceSettings,
    clip,
    numbers,
    redact,
)
from navstream import check_response as check

from .common import (
    BaseSource,
    binance_error,
    deadline,
    decode_json,
    epoch_ms,
    exact,
    quoted,
    skew_problem,
    skewed,
    valid_base_url,
)

PATH = "/fapi/v3/account"
WEIGHT = 5
#: Binance codes meaning "this key/secret/IP is not accepted": -2014 bad key format, -2015
#: invalid key, IP or permissions, -1022 bad signature (wrong secret).
CREDENTIAL_CODES = {-2014, -2015, -1022}
#: The request's timestamp is outside recvWindow: a clock problem, not a credential one.
TIMESTAMP_CODE = -1021
#: Symbols remembered to publish as 0 once closed; beyond it the oldest are forgotten.
MAX_SYMBOLS = 5_000
ZERO = Decimal(0)
#: Netting hedge-mode legs: wide enough that adding accepted amounts never rounds (the default
#: context would, past 28 digits); the net is checked against the bounds before it is published.
NETTING = decimal.Context(
    prec=2 * (numbers.MAX_INTEGER_DIGITS + numbers.MAX_FRACTION_DIGITS), traps=[decimal.InvalidOperation]
)


# The options are SourceSettings' own, restated for type checkers.
class BinanceUsdmAccountSettings(SourceSettings, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[sources.<name>]`` of kind ``binance-usdm-account`` (frozen, and unknown keys rejected, as
    every ``SourceSettings``)."""

    base_url: str = "https://fapi.binance.com"
    #: The navstream account name its events carry (``[[nav.accounts]]`` ``account``).
    account: str = ""
    #: Environment variables holding the API key and its secret (both required).
    api_key_env: str = ""
    api_secret_env: str = ""
    #: How long after its ``timestamp`` Binance still accepts the request (max 60,000).
    recv_window_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 5000
    #: The host's request-weight budget a minute (Binance USD-M futures: 2,400 per IP).
    weight_per_minute: Annotated[int, msgspec.Meta(ge=WEIGHT, le=1_000_000)] = 2400

    def __post_init__(self) -> None:
        valid_base_url(self.base_url)
        if not self.account.strip() or len(self.account) > 256:
            raise ValueError("`account` must name the navstream account these balances belong to")
        for setting in ("api_key_env", "api_secret_env"):
            if not getattr(self, setting):
                raise ValueError(
                    f"`{setting}` must name the environment variable holding the "
                    f"{'API key' if setting == 'api_key_env' else 'API secret'}"
                )


@dataclass
class _Leg:
    """One symbol's position, netted over its hedge-mode legs."""

    qty: Decimal = Decimal(0)
    pnl: Decimal = Decimal(0)
    legs: int = 0
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None


class BinanceUsdmAccountSource(BaseSource):
    def __init__(self, name: str, settings: BinanceUsdmAccountSettings, ctx: SourceContext) -> None:
        super().__init__(name, settings, ctx, venue="binance", account=settings.account)
        self.cfg = settings
        self.url = valid_base_url(settings.base_url) + PATH
        # Read once, here: a missing variable stops the ingest process at startup.
        self._key = ctx.secret(name, "api_key_env", settings.api_key_env)
        self._secret = ctx.secret(name, "api_secret_env", settings.api_secret_env).encode()
        ctx.http.limit(self.url, settings.weight_per_minute)
        #: Every symbol seen (published as 0 once gone) and every asset seen, in order.
        self.symbols: dict[str, None] = {}
        self.assets: dict[str, None] = {}

    def signed_query(self, timestamp_ms: int) -> str:
        """``timestamp=...&recvWindow=...&signature=<hex HMAC-SHA256 of what precedes>``."""
        query = urlencode([("timestamp", timestamp_ms), ("recvWindow", self.cfg.recv_window_ms)])
        signature = hmac.new(self._secret, query.encode(), hashlib.sha256).hexdigest()
        return f"{query}&signature={signature}"

    async def fetch(self) -> Fetched:
        what = f"binance GET {PATH} (account {self.cfg.account})"
        response = await self.ctx.http.request(
            "GET",
            f"{self.url}?{self.signed_query(self.ctx.clock.now_ms())}",
            deadline=deadline(self.ctx, self.settings),
            weight=WEIGHT,
            headers={"X-MBX-APIKEY": self._key, "Accept": "application/json"},
            what=what,
        )
        arrival = self.ctx.clock.now_ms()
        self._check(response, what)
        body = decode_json(response, what)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("assets"), list)
            or not isinstance(body.get("positions"), list)
        ):
            raise SourceError(f"{what}: expected an object with assets[] and positions[]: {clip(response.text, 200)}")
        problems: list[str] = []
        ts = self._ts(body, arrival, problems)
        events: list[SourceEvent] = []
        events.extend(self._balances(body["assets"], ts, problems))
        events.extend(self._positions(body["positions"], ts, problems))
        return Fetched(events, problems)

    def _ts(self, body: dict[str, Any], arrival_ms: int, problems: list[str]) -> int:
        """The response's own ``updateTime`` if it has one (v3 has not) and it is not from the
        future, else the arrival time; a venue clock ahead of ours is reported either way."""
        own = epoch_ms(body.get("updateTime"))
        changed = [
            epoch_ms(e.get("updateTime")) for key in ("assets", "positions") for e in body[key] if isinstance(e, dict)
        ]
        latest = max([t for t in (own, *changed) if t is not None], default=None)
        if latest is not None and skewed(latest, arrival_ms):
            problems.append(skew_problem("Binance"))
        return own if own is not None and not skewed(own, arrival_ms) else arrival_ms

    def _balances(self, entries: list[Any], ts: int, problems: list[str]) -> list[Balance]:
        out = []
        seen = set()
        for entry in entries:
            asset = entry.get("asset") if isinstance(entry, dict) else None
            if not isinstance(asset, str) or not asset:
                problems.append(f"an assets[] entry without an asset name: {clip(str(entry), 100)}")
                continue
            seen.add(asset)
            self.assets.setdefault(asset)
            balance, pnl = exact(entry.get("walletBalance")), exact(entry.get("unrealizedProfit"))
            if balance is None or pnl is None:
                problems.append(
                    f"{asset}: walletBalance {quoted(entry.get('walletBalance'))} / unrealizedProfit "
                    f"{quoted(entry.get('unrealizedProfit'))} not both usable amounts; its balance is not "
                    "published"
                )
                continue
            out.append(
                Balance(
                    ts=ts, venue=self.venue, account=self.cfg.account, asset=asset, balance=balance, unrealized_pnl=pnl
                )
            )
        for asset in self.assets:
            if asset not in seen:
                problems.append(f"{asset}: in an earlier answer but not in this one; its balance is not published")
        return out

    def _positions(self, entries: list[Any], ts: int, problems: list[str]) -> list[Position]:
        held: dict[str, _Leg] = {}
        unreadable: set[str] = set()
        for entry in entries:
            symbol = entry.get("symbol") if isinstance(entry, dict) else None
            if not isinstance(symbol, str) or not symbol:
                problems.append(f"a positions[] entry without a symbol: {clip(str(entry), 100)}")
                continue
            qty, pnl = exact(entry.get("positionAmt")), exact(entry.get("unrealizedProfit"))
            if qty is None or pnl is None:
                problems.append(
                    f"{symbol}: positionAmt {quoted(entry.get('positionAmt'))} / unrealizedProfit "
                    f"{quoted(entry.get('unrealizedProfit'))} not both usable amounts; its position is "
                    "not published"
                )
                unreadable.add(symbol)
                continue
            leg = held.setdefault(symbol, _Leg())
            leg.qty = NETTING.add(leg.qty, qty)
            leg.pnl = NETTING.add(leg.pnl, pnl)
            leg.legs += 1
            leg.entry_price = exact(entry.get("entryPrice"))
            leg.mark_price = exact(entry.get("markPrice"))
            for key in ("entryPrice", "markPrice"):  # optional, but a value sent is a value to read
                if entry.get(key) is not None and exact(entry.get(key)) is None:
                    problems.append(f"{symbol}: {key} {quoted(entry.get(key))}; published without it")
        out = []
        for symbol, leg in held.items():
            if symbol in unreadable:  # half a hedged position is no position: none rather than wrong
                continue
            net = {"positionAmt": leg.qty, "unrealizedProfit": leg.pnl}
            refused = [
                f"net {name} {numbers.show(value)} is {why}"
                for name, value in net.items()
                if (why := numbers.decimal_refusal(value))
            ]
            if refused:  # the legs were each in bounds, their sum is not
                problems.append(f"{symbol}: {'; '.join(refused)}; its position is not published")
                continue
            single = leg.legs == 1
            out.append(
                Position(
                    ts=ts,
                    venue=self.venue,
                    account=self.cfg.account,
                    symbol=symbol,
                    qty=leg.qty,
                    entry_price=leg.entry_price if single and leg.entry_price is not None else ZERO,
                    mark_price=leg.mark_price if single else None,
                    unrealized_pnl=leg.pnl,
                )
            )
        for symbol in self.symbols:
            if symbol not in held and symbol not in unreadable:  # gone from the answer: closed
                out.append(
                    Position(
                        ts=ts,
                        venue=self.venue,
                        account=self.cfg.account,
                        symbol=symbol,
                        qty=ZERO,
                        entry_price=ZERO,
                        unrealized_pnl=ZERO,
                    )
                )
        for symbol in (*held, *unreadable):
            self.symbols.setdefault(symbol)
        while len(self.symbols) > MAX_SYMBOLS:
            del self.symbols[next(iter(self.symbols))]
        return out

    def _check(self, response: httpx.Response, what: str) -> None:
        """A SourceError naming the cause: rejected credentials, a clock out of recvWindow, or
        Binance's own code and message."""
        if response.is_success:
            return
        error = binance_error(response)
        code, msg = error if error else (None, "")
        said = f"HTTP {response.status_code}" + (f", Binance error {code}: {msg}" if error else "")
        if response.status_code in (401, 403) or code in CREDENTIAL_CODES:
            raise SourceError(
                redact(
                    f"{what}: credentials rejected ({said}); check the key in {self.cfg.api_key_env} and the secret in "
                    f"{self.cfg.api_secret_env}, the key's IP whitelist and its futures permission"
                )
            )
        if code == TIMESTAMP_CODE:
            raise SourceError(
                redact(
                    f"{what}: Binance refused the request's timestamp ({said}): this host's clock is off from "
                    f"Binance's by more than recv_window_ms = {self.cfg.recv_window_ms} (or over 1 s ahead); sync it "
                    "(NTP, chrony)"
                )
            )
        if error:
            raise SourceError(redact(f"{what}: {said}"))
        try:
            check(response, what)
        except SourceError as exc:
            raise SourceError(redact(str(exc))) from None

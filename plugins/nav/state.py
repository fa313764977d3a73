"""Where the NAV plugin keeps its inputs and results in Redis, and how it reads them back.

All of it under ``P:state:nav:``, so any consumer of the group can take over:

- ``nav:balances:<venue>:<account>``: hash, asset -> ``"<ts> ["<balance>", "<unrealized_pnl>", <received>]"``,
  with a trailing ``"<venue_asset>"`` when the event carried one (the venue's own code)
- ``nav:positions:<venue>:<account>``: hash, symbol -> ``"<ts> {"qty", "entry_price", ..., "received"}"``
- ``nav:prices``: hash, ``<base>/<quote>@<source>`` ->
  ``"<ts> ["<base>", "<quote>", "<source>", "<price>", <received>]"``
- ``nav:sources``: hash, ``<venue>/<source>/<account or *>`` -> ``"<ts> {"venue", ..., "ok", "error", "received"}"``
- ``nav:accounts``: hash, ``<venue>/<account>`` -> ``["venue", "account"]``, every account with balances
- ``nav:latest``: hash, scope id -> ``"<computed_at> <snapshot JSON>"``, the one source of truth
  for every reader of NAV (risk, status, ``navstream nav``, sinks)
- ``nav:writer``: string, the stamp of whoever wrote NAV state last (see :data:`WRITER`)
- ``nav:holdings``: hash, account scope id -> ``"<computed_at> <snapshot JSON with holdings>"``:
  the account as the last tick valued it, holding by holding, for ``navstream nav`` (written by
  ticks only, so the hot path neither writes nor parses it)

Every member is last-``ts``-wins (``Outputs.put_latest_field``), so duplicated, redelivered and
out-of-order events converge on the same state, whichever consumer applies them. Names are
escaped (``%3A`` for ``:``, ...) so that no two (venue, account) pairs share a key.

``received`` (epoch ms, an addition: the trailing array element or the ``received`` key) is the
clock of the batch that stored the member: freshness is judged from ``min(ts, received)``, so a
``ts`` ahead of the clock is never fresher than the data's arrival, while ``ts`` alone still
orders the members. A member stored without it (by an earlier navstream) reads as
:data:`~.valuation.UNKNOWN_RECEIPT`: stale until its source sends it again.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from navstream import AppProtocol, Balance, Event, Outputs, Position, Price, SourceStatus, as_str_map, parse_field

from .valuation import UNKNOWN_RECEIPT, Holding, Quote, Snapshot, SourceState, escape

ACCOUNTS = ("nav", "accounts")
PRICES = ("nav", "prices")
SOURCES = ("nav", "sources")
LATEST = ("nav", "latest")
HOLDINGS = ("nav", "holdings")
#: String: the stamp of the last batch or tick that wrote NAV state (``Outputs.stamp``), so a
#: consumer finding its own stamp there knows nobody wrote since and its copy is exact.
WRITER = ("nav", "writer")


def balances_key(venue: str, account: str) -> tuple[str, ...]:
    return ("nav", "balances", escape(venue), escape(account))


#: Prefix of the positions hashes (``nav:positions:<venue>:<account>``).
POSITIONS = "nav:positions:"


def positions_key(venue: str, account: str) -> tuple[str, ...]:
    return ("nav", "positions", escape(venue), escape(account))


def account_id(venue: str, account: str) -> str:
    return f"{escape(venue)}/{escape(account)}"


@functools.lru_cache(maxsize=16_384)
def price_id(base: str, quote: str, source: str) -> str:
    """Cached: every batch asks for the same few hundred, twice a price (apply, buffer_writes)."""
    return f"{escape(base)}/{escape(quote)}@{escape(source)}"


@functools.lru_cache(maxsize=16_384)
def source_id(venue: str, source: str, account: str | None) -> str:
    return f"{escape(venue)}/{escape(source)}/{escape(account) if account else '*'}"


class BalancePayload(msgspec.Struct, frozen=True, array_like=True):
    """Compact (a JSON array): balances and prices are most of what every batch writes."""

    balance: Decimal
    unrealized_pnl: Decimal
    #: When navstream received it (epoch ms); None: stored by an earlier navstream.
    received: int | None = None
    #: The event's ``venue_asset`` (an addition: a trailing element, absent when the event had
    #: none; an earlier navstream reading it ignores it).
    venue_asset: str | None = None


class PositionPayload(msgspec.Struct, frozen=True, omit_defaults=True):
    symbol: str
    qty: Decimal
    entry_price: Decimal
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    #: When navstream received it (the batch's clock, epoch ms): judge a position's freshness
    #: by ``min(ts, received)``; None: stored by an earlier navstream (unknown: not fresh).
    received: int | None = None


class PricePayload(msgspec.Struct, frozen=True, array_like=True):
    base: str
    quote: str
    source: str
    price: Decimal
    #: As :attr:`BalancePayload.received`.
    received: int | None = None


class SourcePayload(msgspec.Struct, frozen=True, omit_defaults=True):
    venue: str
    source: str
    account: str | None
    ok: bool
    error: str
    #: As :attr:`BalancePayload.received`.
    received: int | None = None


def receipt(received: int | None) -> int:
    """A payload's ``received`` as the valuation takes it (:data:`UNKNOWN_RECEIPT` for none)."""
    return UNKNOWN_RECEIPT if received is None else received


_encode = msgspec.json.Encoder(decimal_format="string").encode
_balance = msgspec.json.Decoder(BalancePayload)
_position = msgspec.json.Decoder(PositionPayload)
_price = msgspec.json.Decoder(PricePayload)
_source = msgspec.json.Decoder(SourcePayload)
_snapshot = msgspec.json.Decoder(Snapshot)
_pair = msgspec.json.Decoder(tuple[str, str])


class StateError(RuntimeError):
    """A state member navstream cannot read: fail closed, naming the key and member."""


def _parse(what: str, member: str, raw: str, decoder: msgspec.json.Decoder[Any]) -> tuple[int, Any]:
    try:
        ts, payload = parse_field(raw)
        return ts, decoder.decode(payload)
    except (ValueError, msgspec.DecodeError) as exc:
        raise StateError(
            f"P:state:{what} member {member!r} is unreadable ({exc}); "
            "fix or delete it (it is rebuilt from the next events)"
        ) from exc


def encode_snapshot(snapshot: Snapshot, holdings: bool = False) -> str:
    """The snapshot, without its holdings unless asked (those go to :data:`HOLDINGS`)."""
    if snapshot.holdings and not holdings:
        snapshot = msgspec.structs.replace(snapshot, holdings=[])
    return _encode(snapshot).decode()


def decode_snapshot(member: str, raw: str) -> Snapshot:
    return _parse(":".join(LATEST), member, raw, _snapshot)[1]


@dataclass
class Inputs:
    """The latest inputs per key: read from Redis, then the batch's events applied on top with
    the same last-``ts``-wins rule Redis applies when the batch is written."""

    balances: dict[tuple[str, str], dict[str, Holding]] = field(default_factory=dict)
    quotes: dict[str, Quote] = field(default_factory=dict)
    sources: dict[str, SourceState] = field(default_factory=dict)
    latest: dict[str, Snapshot] = field(default_factory=dict)
    registry: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The stamp Redis held when these inputs were read ("" for none).
    stamp: str = ""

    def apply(self, event: Event, received: int) -> bool:
        """Apply ``event``, received at ``received`` (the batch's clock), unless this copy holds
        a newer one for its key; whether it did."""
        if type(event) is Price:
            pid = price_id(event.base, event.quote, event.source)
            old_quote = self.quotes.get(pid)
            if old_quote is None or event.ts >= old_quote.ts:
                self.quotes[pid] = Quote(event.base, event.quote, event.source, event.price, event.ts, received)
                return True
        elif type(event) is Balance:
            key = (event.venue, event.account)
            held = self.balances.get(key)
            if held is None:  # not setdefault(key, {}): that builds a dict per call
                held = self.balances[key] = {}
            old = held.get(event.asset)
            if old is None or event.ts >= old.ts:
                held[event.asset] = Holding(
                    event.balance, event.unrealized_pnl, event.ts, received, event.venue_asset or ""
                )
                return True
        elif type(event) is SourceStatus:
            sid = source_id(event.venue, event.source, event.account)
            old_source = self.sources.get(sid)
            if old_source is None or event.ts >= old_source.ts:
                self.sources[sid] = SourceState(
                    event.venue, event.source, event.account or None, event.ok, event.error or "", event.ts, received
                )
                return True
        return False


@functools.lru_cache(maxsize=16_384)
def _price_head(base: str, quote: str, source: str) -> str:
    """A price payload up to its price: ``["BTC","USDT","binance-spot",``."""
    return _encode((base, quote, source)).decode()[:-1] + ","


def newest(events: Iterable[Event]) -> list[Event]:
    """The newest event per key of a batch (Redis would keep only it anyway), in no order."""
    latest: dict[tuple[Any, ...], Event] = {}
    for event in events:
        kind = type(event)
        if isinstance(event, Price):
            key: tuple[Any, ...] = (kind, event.base, event.quote, event.source)
        elif isinstance(event, Balance):
            key = (kind, event.venue, event.account, event.asset)
        elif isinstance(event, Position):
            key = (kind, event.venue, event.account, event.symbol)
        else:
            key = (kind, event.venue, event.source, event.account)
        held = latest.get(key)
        if held is None or event.ts >= held.ts:
            latest[key] = event
    return list(latest.values())


def buffer_writes(out: Outputs, events: Iterable[Event]) -> None:
    """Buffer the state writes of events (the newest per key), each with its receipt time
    (``out.now_ms``, the batch's clock), one ``put_latest_fields`` per hash; prices and
    balances, the hot path, get their JSON by hand: a Decimal's str is plain ASCII (``!s``: half
    the cost of formatting a Decimal with an empty spec, the same text)."""
    prices: dict[str, tuple[int, str]] = {}
    balances: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
    positions: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
    sources: dict[str, tuple[int, str]] = {}
    received = int(out.now_ms)
    for event in events:
        if type(event) is Price:
            prices[price_id(event.base, event.quote, event.source)] = (
                event.ts,
                f'{_price_head(event.base, event.quote, event.source)}"{event.price!s}",{received}]',
            )
        elif type(event) is Balance:
            key = (event.venue, event.account)
            members = balances.get(key)
            if members is None:
                members = balances[key] = {}
            tail = f",{_encode(event.venue_asset).decode()}" if event.venue_asset is not None else ""
            members[event.asset] = (event.ts, f'["{event.balance!s}","{event.unrealized_pnl!s}",{received}{tail}]')
        elif isinstance(event, Position):
            payload = PositionPayload(
                event.symbol, event.qty, event.entry_price, event.mark_price, event.unrealized_pnl, received
            )
            positions.setdefault((event.venue, event.account), {})[event.symbol] = (
                event.ts,
                _encode(payload).decode(),
            )
        elif isinstance(event, SourceStatus):
            report = SourcePayload(
                event.venue, event.source, event.account or None, event.ok, event.error or "", received
            )
            sources[source_id(event.venue, event.source, event.account)] = (event.ts, _encode(report).decode())
    if prices:
        out.put_latest_fields(":".join(PRICES), prices)
    for (venue, account), members in balances.items():
        out.put_latest_fields(":".join(balances_key(venue, account)), members)
    if balances:
        out.hset(":".join(ACCOUNTS), {account_id(v, a): _encode((v, a)).decode() for v, a in balances})
    for (venue, account), members in positions.items():
        out.put_latest_fields(":".join(positions_key(venue, account)), members)
    if sources:
        out.put_latest_fields(":".join(SOURCES), sources)


async def read_inputs(app: AppProtocol) -> Inputs:
    """Every input and the latest NAVs: the stamp, registry, prices, sources and latest
    snapshots in one MULTI/EXEC, then every registered account's balances in a second."""
    keys = app.keys
    pipe = app.redis.pipeline(transaction=True)
    pipe.get(keys.state(*WRITER))
    for name in (ACCOUNTS, PRICES, SOURCES, LATEST):
        pipe.hgetall(keys.state(*name))
    stamp, registry_raw, prices_raw, sources_raw, latest_raw = await pipe.execute()
    # Read with the state: if anything is written before the balances below are read, the
    # stamp this copy is written back with will not match, and the copy will not be trusted.
    inputs = Inputs(stamp=stamp or "")
    for member, raw in registry_raw.items():
        try:
            inputs.registry[member] = _pair.decode(raw)
        except msgspec.DecodeError as exc:
            raise StateError(f"P:state:nav:accounts member {member!r} is unreadable ({exc})") from exc
    inputs.quotes = parse_quotes(prices_raw)
    inputs.sources = parse_sources(sources_raw)
    for member, raw in latest_raw.items():
        inputs.latest[member] = decode_snapshot(member, raw)
    accounts = list(inputs.registry.values())
    if accounts:
        pipe = app.redis.pipeline(transaction=True)
        for venue, account in accounts:
            pipe.hgetall(keys.state(*balances_key(venue, account)))
        for key, raw in zip(accounts, await pipe.execute()):
            inputs.balances[key] = _holdings(key, raw)
    return inputs


def _holdings(key: tuple[str, str], raw: dict[str, str]) -> dict[str, Holding]:
    where = ":".join(balances_key(*key))
    out = {}
    for asset, value in raw.items():
        ts, b = _parse(where, asset, value, _balance)
        out[asset] = Holding(b.balance, b.unrealized_pnl, ts, receipt(b.received), b.venue_asset or "")
    return out


def parse_quotes(raw: dict[str, str]) -> dict[str, Quote]:
    """``nav:prices`` as read with HGETALL: member -> quote."""
    out = {}
    for member, value in raw.items():
        ts, p = _parse(":".join(PRICES), member, value, _price)
        out[member] = Quote(p.base, p.quote, p.source, p.price, ts, receipt(p.received))
    return out


def parse_sources(raw: dict[str, str]) -> dict[str, SourceState]:
    """``nav:sources`` as read with HGETALL: member -> the latest report."""
    out = {}
    for member, value in raw.items():
        ts, s = _parse(":".join(SOURCES), member, value, _source)
        out[member] = SourceState(s.venue, s.source, s.account, s.ok, s.error, ts, receipt(s.received))
    return out


def parse_positions(venue: str, account: str, raw: dict[str, str]) -> dict[str, tuple[int, PositionPayload]]:
    """An account's ``nav:positions`` hash as read with HGETALL: symbol -> (ts, position);
    ``position.received`` is when navstream received it (None: stored by an earlier navstream)."""
    where = ":".join(positions_key(venue, account))
    return {symbol: _parse(where, symbol, value, _position) for symbol, value in raw.items()}


async def read_positions(app: AppProtocol, venue: str, account: str) -> dict[str, tuple[int, PositionPayload]]:
    raw = await app.redis.hgetall(app.keys.state(*positions_key(venue, account)))
    return parse_positions(venue, account, as_str_map(raw))


async def read_latest(app: AppProtocol) -> dict[str, Snapshot]:
    """Every scope's latest NAV, as the plugin last wrote it."""
    raw = as_str_map(await app.redis.hgetall(app.keys.state(*LATEST)))
    return {member: decode_snapshot(member, value) for member, value in raw.items()}


async def read_detailed(app: AppProtocol) -> dict[str, Snapshot]:
    """Each account's snapshot with its holdings, as the last tick valued them."""
    raw = as_str_map(await app.redis.hgetall(app.keys.state(*HOLDINGS)))
    return {member: _parse(":".join(HOLDINGS), member, value, _snapshot)[1] for member, value in raw.items()}

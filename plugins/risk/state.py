"""Where the risk gate keeps its state in Redis, and how one batch of orders reads it.

All under ``P:state:risk:``, shared by every consumer of the group:

- ``risk:decisions``: hash, order_id -> the first decision given (``Outputs.emit_first``),
  repeated for every later delivery of that id until it is pruned
- ``risk:decided``: sorted set, order_id -> when it was first decided (ms), to prune the
  decisions after ``decision_retention_s``
- ``risk:approved:<venue>``: sorted set, order_id -> when it was approved (ms): the venue's
  orders-per-minute window, trimmed to the last minutes by ticks
- ``risk:venues``: hash, escaped venue -> venue, every venue that had an approved order
- ``risk:reused``: hash, ``<content hash>:<order_id>`` -> the veto given to an ``order_id``
  sent again with other content (``Outputs.emit_first``, so its redeliveries get that veto
  again); ``risk:reused_at``: sorted set, the same members -> when (ms), to prune them
- ``risk:inflight:<venue>:<account>``: hash, order_id -> ``[order_id, symbol, side, qty,
  approved_at]``, the account's approved orders until a position update covers them or
  ``open_order_ttl_s`` passes (the batch that reads them then forgets them, and ticks prune
  them); ``risk:inflight_accounts``: hash,
  ``<venue>/<account>`` -> ``[venue, account]``, the accounts that have such a hash
- ``risk:trading``: hash, ``*`` (the desk) or ``<venue>/<account>`` -> :class:`TradingRecord`
  JSON. Changed only by compare-and-set (:data:`CAS_LUA`), so an operator's command and a
  tick's drawdown never overwrite each other's update unseen.

The NAV, prices, sources and positions are the nav plugin's (``P:state:nav:*``), read as it
wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from navstream import DECISION_STORE, REUSED_STORE, AppProtocol, InvalidOrder, Order, as_str_map, parse_first, scope_id
from navstream.plugins.nav.api import (
    LATEST,
    PRICES,
    SOURCES,
    PositionPayload,
    Quote,
    Snapshot,
    SourceState,
    StateError,
    decode_snapshot,
    escape,
    parse_positions,
    parse_quotes,
    parse_sources,
    positions_key,
)

from .inflight import InFlight
from .inputs import PositionInput
from .trading import TradingRecord

DECISIONS = DECISION_STORE  # the wire contract's key, shared with the client
DECIDED = "risk:decided"
VENUES = "risk:venues"
TRADING = "risk:trading"
REUSED = REUSED_STORE
REUSED_AT = "risk:reused_at"
INFLIGHT_ACCOUNTS = "risk:inflight_accounts"
#: The member of :data:`TRADING` that holds the desk-wide state.
DESK = "*"
WINDOW_MS = 60_000
#: ``by`` of the record that stands in for an unreadable one.
UNREADABLE = "navstream:unreadable"

# KEYS[1] the hash; ARGV: member, the value read ('' for none), the new value. Sets the member
# only if it still holds what was read; returns 1 if it did, else 0.
CAS_LUA = """
local held = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if held ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
# KEYS[1] a hash; ARGV: member, value, member, value, ... Deletes each member that still holds
# the value read; returns how many it deleted.
FORGET_LUA = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""
#: Members one FORGET_LUA call deletes at most (a long script holds up every client of Redis).
FORGET_CHUNK = 500


def approved_key(venue: str) -> str:
    return f"risk:approved:{escape(venue)}"


def account_member(venue: str, account: str) -> str:
    return f"{escape(venue)}/{escape(account)}"


def inflight_key(venue: str, account: str) -> str:
    return f"risk:inflight:{escape(venue)}:{escape(account)}"


def reused_member(content_hash: str, order_id: str) -> str:
    """Hash first: it is always 64 hex digits, so no order_id can forge another's member."""
    return f"{content_hash}:{order_id}"


_inflight = msgspec.json.Decoder(InFlight)
_encode_inflight = msgspec.json.Encoder(decimal_format="string").encode


def encode_inflight(order: InFlight) -> str:
    return _encode_inflight(order).decode()


def decode_inflight(where: str, member: str, raw: str) -> InFlight:
    try:
        return _inflight.decode(raw)
    except msgspec.DecodeError as exc:
        raise StateError(f"P:state:{where} member {member!r} is unreadable ({exc})") from exc


#: One member of an in-flight hash as read: (member, its raw value, the order it holds).
Flying = tuple[str, str, InFlight]


class InFlightCache:
    """The orders in flight decoded, per hash and raw value, across batches and ticks.

    An account with a backlog is read whole by every batch; decoding each entry (a Decimal
    each) costs twenty times looking it up. A value decodes to the same order whatever reads
    it, so a cached one is exact. Each full read of a hash keeps just the values it found, so
    the cache never holds more than Redis does."""

    def __init__(self) -> None:
        self._by_hash: dict[str, dict[str, InFlight]] = {}

    def decode(self, where: str, raw: Mapping[str, str]) -> list[Flying]:
        """Every member of in-flight hash ``where`` (as :func:`inflight_key` names it), as
        read whole. :class:`StateError` for the first that cannot be read (then nothing of
        this read is kept)."""
        known = self._by_hash.get(where, {}).get
        fresh: dict[str, InFlight] = {}
        out: list[Flying] = []
        for member, value in raw.items():
            entry = known(value) or decode_inflight(where, member, value)
            fresh[value] = entry
            out.append((member, value, entry))
        if fresh:
            self._by_hash[where] = fresh
        else:
            self._by_hash.pop(where, None)
        return out

    def forget(self, where: str) -> None:
        self._by_hash.pop(where, None)

    def discard(self, done: Mapping[str, Mapping[str, str]]) -> None:
        """Drop the values about to be deleted (``{hash: {member: value}}``)."""
        for where, members in done.items():
            held = self._by_hash.get(where)
            if held is not None:
                for value in members.values():
                    held.pop(value, None)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by_hash.values())


async def forget_inflight(app: AppProtocol, done: Mapping[str, Mapping[str, str]]) -> int:
    """Delete the members of in-flight hashes (``{hash: {member: value read}}``) that no
    decision counts any more, each only if it still holds the value read (an order_id
    approved again since is not touched). Returns how many were deleted."""
    pipe = app.redis.pipeline(transaction=False)
    for where, members in done.items():
        pairs = [part for member, value in members.items() for part in (member, value)]
        for start in range(0, len(pairs), 2 * FORGET_CHUNK):
            pipe.eval(FORGET_LUA, 1, app.keys.state(where), *pairs[start : start + 2 * FORGET_CHUNK])
    if not len(pipe):
        return 0
    return sum(int(n) for n in await pipe.execute())


_record = msgspec.json.Decoder(TradingRecord)
_encode = msgspec.json.Encoder(decimal_format="string").encode


def encode_record(record: TradingRecord) -> str:
    return _encode(record).decode()


def decode_record(member: str, raw: str | None) -> TradingRecord:
    if raw is None or raw == "":
        return TradingRecord()
    try:
        return _record.decode(raw)
    except msgspec.DecodeError as exc:
        # Fail closed: nobody can tell what an operator meant, so the scope counts as halted
        # (and every veto says why) until it is set again.
        return TradingRecord(
            "halted",
            f"trading record P:state:{TRADING} {member!r} is unreadable ({exc}); "
            "set it again with `navstream risk halt|reduce|resume`",
            UNREADABLE,
            0,
        )


def stored_fields(order_id: str, raw: str) -> dict[str, str]:
    """A decision stored by ``emit_first`` (a JSON array of fields and values)."""
    fields = parse_first(raw)
    if fields is None:
        raise StateError(f"P:state:{DECISIONS} member {order_id!r} is no stored decision: {raw[:100]!r}")
    return fields


@dataclass
class BatchState:
    """What a batch of orders is judged against, read in one round trip."""

    now_ms: int
    #: order_id -> the decision already given (fields), for orders decided before.
    decided: dict[str, dict[str, str]] = field(default_factory=dict)
    navs: dict[str, Snapshot] = field(default_factory=dict)
    quotes: list[Quote] = field(default_factory=list)
    sources: list[SourceState] = field(default_factory=list)
    records: dict[str, TradingRecord] = field(default_factory=dict)
    positions: dict[tuple[str, str], dict[str, PositionInput]] = field(default_factory=dict)
    #: venue -> approved orders in the last minute, as Redis holds them.
    approved: dict[str, int] = field(default_factory=dict)
    #: (venue, account) -> its in-flight hash as read, member by member (in no set order):
    #: what :class:`.inputs.PendingBook` counts and the batch forgets.
    inflight: dict[tuple[str, str], list[Flying]] = field(default_factory=dict)
    #: (content hash, order_id) -> the veto already given to that reuse of the id.
    reused: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    #: What could not be read, so the orders resting on it are vetoed (``state_unreadable``)
    #: instead of left unanswered: ``"*"`` (prices, sources: every order), an order_id (its
    #: stored decision), or ``"venue/account"`` (that account's NAV, positions, orders in flight).
    unreadable: dict[str, str] = field(default_factory=dict)

    def unreadable_for(self, order_id: str, venue: str, account: str) -> str | None:
        u = self.unreadable
        return u.get(order_id) or u.get("*") or u.get(account_member(venue, account))

    def nav(self, venue: str, account: str) -> Snapshot | None:
        return self.navs.get(scope_id("account", venue, account))

    def desk_nav(self) -> Snapshot | None:
        return self.navs.get(scope_id("total"))

    def record(self, member: str) -> TradingRecord:
        return self.records.get(member) or TradingRecord()


async def read_batch_state(
    app: AppProtocol,
    orders: Sequence[Order | InvalidOrder],
    now_ms: int,
    hashes: Sequence[str] = (),
    cache: InFlightCache | None = None,
) -> BatchState:
    """The decisions already given for these orders, and every input the gate judges one by:
    one MULTI/EXEC, so all of it is one instant of Redis, in one round trip.

    ``hashes`` holds each order's content hash (in the order of ``orders``), so the vetoes
    given to an id reused with other content are read too. A member that cannot be read does
    not fail the batch: it is noted in ``unreadable``, and the orders resting on it are vetoed.
    ``cache`` saves decoding the orders in flight read by an earlier batch.
    """
    cache = cache if cache is not None else InFlightCache()
    state = BatchState(now_ms)
    keys = app.keys
    ids = list(dict.fromkeys(o.order_id for o in orders))
    valid = [o for o in orders if isinstance(o, Order)]
    accounts = list(dict.fromkeys((o.venue, o.account) for o in valid))
    venues = list(dict.fromkeys(o.venue for o in valid))
    scopes = [scope_id("account", v, a) for v, a in accounts] + [scope_id("total")]
    members = [account_member(v, a) for v, a in accounts] + [DESK]
    reuses = list(dict.fromkeys(zip(hashes, (o.order_id for o in orders)))) if hashes else []
    pipe = app.redis.pipeline(transaction=True)
    pipe.hmget(keys.state(DECISIONS), ids)
    pipe.hmget(keys.state(*LATEST), scopes)
    pipe.hgetall(keys.state(*PRICES))
    pipe.hgetall(keys.state(*SOURCES))
    pipe.hmget(keys.state(TRADING), members)
    pipe.hmget(keys.state(REUSED), [reused_member(h, i) for h, i in reuses] or ["-"])
    for venue, account in accounts:
        pipe.hgetall(keys.state(*positions_key(venue, account)))
        pipe.hgetall(keys.state(inflight_key(venue, account)))
    for venue in venues:
        pipe.zcount(keys.state(approved_key(venue)), f"({now_ms - WINDOW_MS}", "+inf")
    replies: list[Any] = await pipe.execute()
    stored, latest, prices, sources, records, reused = replies[:6]
    unreadable = state.unreadable
    for order_id, raw in zip(ids, stored):
        if raw is not None:
            try:
                state.decided[order_id] = stored_fields(order_id, raw)
            except StateError as exc:
                unreadable[order_id] = str(exc)
    for (content, order_id), raw in zip(reuses, reused):
        fields = parse_first(raw) if raw is not None else None
        if fields is not None:
            state.reused[(content, order_id)] = fields
        elif raw is not None:
            unreadable[order_id] = f"P:state:{REUSED} member for {order_id!r} is no stored decision: {raw[:100]!r}"
    for scope, raw in zip(scopes, latest):
        if raw is not None:
            try:
                state.navs[scope] = decode_snapshot(scope, raw)
            except StateError as exc:
                unreadable["*" if scope == scope_id("total") else _member_of_scope(scope, accounts)] = str(exc)
    try:
        state.quotes = list(parse_quotes(prices).values())
        state.sources = list(parse_sources(sources).values())
    except StateError as exc:
        unreadable["*"] = str(exc)
    for member, raw in zip(members, records):
        state.records[member] = decode_record(member, raw)
    rest = replies[6:]
    for n, (venue, account) in enumerate(accounts):
        positions_raw, inflight_raw = rest[2 * n], rest[2 * n + 1]
        try:
            state.positions[(venue, account)] = {
                symbol: PositionInput(p.qty, p.mark_price, observed_at(ts, p))
                for symbol, (ts, p) in sorted(parse_positions(venue, account, positions_raw).items())
            }
            state.inflight[(venue, account)] = cache.decode(inflight_key(venue, account), inflight_raw)
        except StateError as exc:
            unreadable[account_member(venue, account)] = str(exc)
    for venue, count in zip(venues, rest[2 * len(accounts) :]):
        state.approved[venue] = int(count)
    return state


def observed_at(ts: int, position: PositionPayload) -> int:
    """When a position was observed, for its age: its ``ts``, but never later than when
    navstream received it (a clock ahead must not make it look fresh). One stored before
    receipt times were kept cannot show when it arrived: 0, too old to rest on."""
    return 0 if position.received is None else min(ts, position.received)


def _member_of_scope(scope: str, accounts: Sequence[tuple[str, str]]) -> str:
    for venue, account in accounts:
        if scope_id("account", venue, account) == scope:
            return account_member(venue, account)
    return "*"


async def read_records(app: AppProtocol) -> dict[str, tuple[str, TradingRecord]]:
    """Every trading record: member -> (the raw value, for compare-and-set; the record)."""
    raw = as_str_map(await app.redis.hgetall(app.keys.state(TRADING)))
    return {member: (value, decode_record(member, value)) for member, value in raw.items()}


async def compare_and_set(app: AppProtocol, member: str, seen: str, record: TradingRecord) -> bool:
    """Store ``record`` for ``member`` if Redis still holds ``seen`` there ('' for nothing)."""
    done = await app.redis.eval(CAS_LUA, 1, app.keys.state(TRADING), member, seen, encode_record(record))
    return bool(done)

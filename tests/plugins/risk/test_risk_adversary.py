"""The risk gate against an adversary (issue 13): a stateful hunt for a sequence that breaks a promise.

A ``RuleBasedStateMachine`` drives the real consumer loop (nav and risk plugins, on fakeredis,
and briefly on a real Redis) with events stamped in the past and in the future within the
allowed skew, positions, orders at any limit price, ids re-sent with other content, trading
state changes, ticks and clock jumps. Beside it runs a model of what the gate was *told*, kept
independently of the gate's code: every input with its ``ts`` and when it was sent, the
approvals still in flight, the first content per ``order_id``. After every order it checks:

- nothing is approved unless every input the account's NAV rests on is fresh by the reader's
  rule (``min(ts, received)`` within ``[nav] max_age_s``), whatever the last tick said;
- the notional at the worse of the limit and the market price is within every limit;
- the worst position the approvals in flight could leave is within the exposure limit, and in
  ``reducing`` only what shrinks that worst position passes;
- an ``order_id`` re-sent with new content is never approved, and an identical re-send gets
  the first answer;
- every order is answered, by a decision carrying its own content hash.

The same machine run against mutant gates (one that trusts the limit price, one that forgets
orders in flight, one that answers by id alone, one that trusts the tick's status) must fail.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import fakeredis
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from support import REDIS_URL, START_MS, require_real_redis

from navstream.app import App, ManualClock
from navstream.config import load_settings
from navstream.contract.fingerprint import order_hash
from navstream.loop.consumer import Consumer
from navstream.plugin.manager import build_plugin_manager
from navstream.plugins.risk.state import DESK, TRADING, account_member, compare_and_set, decode_record, read_records
from navstream.plugins.risk.trading import set_by_ops

D = Decimal
VENUE, ACCOUNT, SYMBOL = "binance", "main", "BTCUSDT"
NAV_MAX_AGE_MS = 10_000  # [nav] max_age_s, below the gate's own limit: the reader rule matters
# Tight enough that a few approvals in flight reach the exposure limit (0.6 x a NAV of 100,000:
# two buys of 0.5 BTC at 50,000, not three), so a sequence that breaks it is within reach.
RISK = {
    "max_nav_age_s": 60,
    "max_order_notional": "100000",
    "max_order_pct_nav": 50,
    "max_gross_exposure_x": 0.6,
    "max_order_age_s": 5,
    "max_price_deviation_pct": 5,
    "open_order_ttl_s": 60,
    "max_orders_per_minute": 100_000,
}
MAX_NOTIONAL, PCT_NAV, GROSS_X = D(RISK["max_order_notional"]), D(50), D("0.6")  # type: ignore[arg-type]
MAX_ORDER_AGE_MS, TTL_MS, MAX_FUTURE_MS = 5_000, 60_000, 5_000


@dataclass
class Seen:
    """One input as sent: its value, its ts, and when the gate's consumer received it."""

    value: Any
    ts: int
    received: int

    @property
    def observed(self) -> int:
        return min(self.ts, self.received)


@dataclass
class Model:
    """What the gate was told, kept without any of its code."""

    balances: dict[str, Seen] = field(default_factory=dict)
    price: Seen | None = None
    price_status: Seen | None = None
    venue_status: Seen | None = None
    position: Seen | None = None  # value: (qty, mark)
    states: dict[str, str] = field(default_factory=lambda: {"account": "active", "desk": "active"})
    #: order_id -> (side, qty, approved at)
    inflight: dict[str, tuple[str, Decimal, int]] = field(default_factory=dict)
    #: order_id -> (content hash, the first answer's fields)
    first: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    def put(self, name: str, held: Seen | None, new: Seen) -> Seen:
        """Last ts wins, an equal ts replaces (the contract's rule)."""
        return new if held is None or new.ts >= held.ts else held

    def fresh(self, seen: Seen | None, now: int, limit: int = NAV_MAX_AGE_MS) -> bool:
        return seen is not None and now - seen.observed <= limit

    def nav_rests_on_fresh_inputs(self, now: int) -> bool:
        """Necessary for an ok NAV: a balance; every balance, the price and both sources'
        reports fresh by the reader rule; both sources reporting ok."""
        if not self.balances or not all(self.fresh(b, now) for b in self.balances.values()):
            return False
        for status in (self.venue_status, self.price_status):
            if not self.fresh(status, now) or not status.value:  # type: ignore[union-attr]
                return False
        btc = self.balances.get("BTC")
        return btc is None or btc.value == 0 or self.fresh(self.price, now)

    def nav(self) -> Decimal:
        total = D(0)
        for asset, b in self.balances.items():
            total += b.value if asset == "USDT" else b.value * (self.price.value if self.price else D(0))
        return total

    def pending(self, now: int) -> tuple[Decimal, Decimal]:
        """Approved buys and sells no position observed at or after them covers, within the TTL."""
        buys = sells = D(0)
        covered_until = self.position.observed if self.position is not None else -1
        for side, qty, at in self.inflight.values():
            if now - at > TTL_MS or covered_until > at:
                continue
            if side == "buy":
                buys += qty
            else:
                sells += qty
        return buys, sells


def content(o: dict[str, str]) -> str:
    return order_hash(
        venue=o["venue"],
        account=o["account"],
        symbol=o["symbol"],
        side=o["side"],
        qty=D(o["qty"]),
        price=D(o["price"]) if "price" in o else None,
        reduce_only=o.get("reduce_only") == "true",
    )


ages = st.sampled_from([0, 0, 0, -1_000, -9_000, -11_000, -70_000, 3_000, MAX_FUTURE_MS])
order_ages = st.sampled_from([0, 0, 0, -1_000, -MAX_ORDER_AGE_MS, -MAX_ORDER_AGE_MS - 1, -86_400_000, 2_000])


class GateMachine(RuleBasedStateMachine):
    """One account on one fakeredis (or a real Redis under a fresh prefix), driven through the
    real loop; see the module docstring for the promises checked."""

    connect: Callable[[str], Callable[[bool], aioredis.Redis]] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(START_MS)
        self.audit = tempfile.mkdtemp(prefix="nav-adv-")
        self.prefix = f"adv-{uuid.uuid4().hex[:8]}"
        server = fakeredis.FakeServer()
        connect = (
            type(self).connect(self.prefix)
            if type(self).connect
            else (lambda decode: fakeredis.FakeAsyncRedis(server=server, decode_responses=decode))
        )
        overrides = {
            "redis": {"prefix": self.prefix, "group": "g"},
            "consumer": {"name": "c", "max_future_ms": MAX_FUTURE_MS},
        }
        cfg = msgspec.structs.replace(
            load_settings(env={}, overrides=overrides),
            extra={
                "nav": {
                    "max_age_s": NAV_MAX_AGE_MS / 1000,
                    "pegs": {"USDT": "1"},
                    "routes": {"BTC": "BTC/USDT"},
                    "publish_every_s": 600,
                    "alert_every_s": 600,
                },
                "risk": {**RISK, "audit_dir": self.audit},
            },
        )
        plugins = build_plugin_manager(load_entrypoints=True, env={}, disabled=["source_monitor"])
        self.app = App.create(cfg, connect=connect, clock=self.clock, plugins=plugins)
        self.consumer = Consumer(self.app)
        self.run(self.consumer.setup())
        self.model = Model()
        self.ids = 0
        self.sent: list[dict[str, str]] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        async def close() -> None:
            await self.consumer.shutdown()
            if type(self).connect is not None:
                keys = [k async for k in self.app.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
                if keys:
                    await self.app.redis.delete(*keys)
            await self.app.aclose()

        try:
            self.run(close())
        finally:
            self.loop.close()
            shutil.rmtree(self.audit, ignore_errors=True)

    # --- driving ----------------------------------------------------------------------------

    def publish(self, entry: dict[str, str]) -> None:
        async def go() -> None:
            await self.app.redis.xadd(self.app.keys.events, entry)
            while await self.consumer.step(block_ms=1):
                pass

        self.run(go())

    def now(self) -> int:
        return self.clock.now_ms()

    def accepted(self, ts: int) -> bool:
        """Entries stamped past the allowed skew go to the dead-letter stream, not the state."""
        return ts <= self.now() + MAX_FUTURE_MS

    @initialize(age=st.sampled_from([0, -8_000]))
    def funded(self, age: int) -> None:
        """Most sequences start from a healthy account, or approvals would never be tested;
        its balance sometimes older than its price, so the NAV ages out before the market."""
        now = self.now()
        self.balance_of("USDT", D(100_000), age)
        self.price_at(D(50_000), 0)
        self.status("venue", True, 0)
        self.status("price", True, 0)
        assert self.model.nav() == D(100_000) and now == self.now()

    @rule(asset=st.sampled_from(["USDT", "BTC"]), amount=st.sampled_from(["0", "1", "2", "50000", "100000"]), age=ages)
    def balance_of(self, asset: str, amount: Decimal | str, age: int) -> None:
        ts = self.now() + age
        self.publish(
            {
                "type": "balance",
                "venue": VENUE,
                "account": ACCOUNT,
                "asset": asset,
                "balance": str(amount),
                "ts": str(ts),
            }
        )
        if self.accepted(ts):
            m = self.model
            m.balances[asset] = m.put(asset, m.balances.get(asset), Seen(D(amount), ts, self.now()))

    @rule(value=st.sampled_from([D(40_000), D(50_000), D(60_000)]), age=ages)
    def price_at(self, value: Decimal, age: int) -> None:
        ts = self.now() + age
        self.publish(
            {
                "type": "price",
                "base": "BTC",
                "quote": "USDT",
                "price": str(value),
                "source": "binance-spot",
                "ts": str(ts),
            }
        )
        if self.accepted(ts):
            self.model.price = self.model.put("price", self.model.price, Seen(value, ts, self.now()))

    @rule(which=st.sampled_from(["venue", "price"]), ok=st.sampled_from([True, True, False]), age=ages)
    def status(self, which: str, ok: bool, age: int) -> None:
        ts = self.now() + age
        entry = {"type": "source_status", "ok": "true" if ok else "false", "ts": str(ts)}
        if which == "venue":
            entry.update(venue=VENUE, source="binance-usdm", account=ACCOUNT)
        else:
            entry.update(venue="binance-spot", source="binance-spot")
        self.publish(entry)
        if self.accepted(ts):
            m = self.model
            if which == "venue":
                m.venue_status = m.put(which, m.venue_status, Seen(ok, ts, self.now()))
            else:
                m.price_status = m.put(which, m.price_status, Seen(ok, ts, self.now()))

    @rule(qty=st.sampled_from(["-1", "-0.06", "0", "0.06", "1"]), age=ages)
    def position(self, qty: str, age: int) -> None:
        ts = self.now() + age
        mark = str(self.model.price.value) if self.model.price else "50000"
        self.publish(
            {
                "type": "position",
                "venue": VENUE,
                "account": ACCOUNT,
                "symbol": SYMBOL,
                "qty": qty,
                "entry_price": mark,
                "mark_price": mark,
                "ts": str(ts),
            }
        )
        if self.accepted(ts):
            self.model.position = self.model.put(
                "position", self.model.position, Seen((D(qty), D(mark)), ts, self.now())
            )

    @rule(scope=st.sampled_from(["account", "desk"]), state=st.sampled_from(["active", "reducing", "halted"]))
    def trading(self, scope: str, state: str) -> None:
        member = DESK if scope == "desk" else account_member(VENUE, ACCOUNT)

        async def go() -> None:
            seen = await self.app.redis.hget(self.app.keys.state(TRADING), member) or ""
            record = set_by_ops(decode_record(member, seen), state, "adversary", "test", self.now())  # type: ignore[arg-type]
            assert await compare_and_set(self.app, member, seen, record)

        self.run(go())
        self.model.states[scope] = state

    @rule(ms=st.sampled_from([1, 2_500, 9_000, 11_000, 30_000, 61_000]))
    def wait(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def tick(self) -> None:
        self.run(self.consumer.tick())

    @rule(side=st.sampled_from(["buy", "sell"]), qty=st.sampled_from(["0.01", "0.5"]))
    def plain_order(self, side: str, qty: str) -> None:
        """A new, small, current market order: the common case, so approvals are frequent."""
        self.ids += 1
        self.judge(
            [
                {
                    "type": "order",
                    "order_id": f"o-{self.ids}",
                    "venue": VENUE,
                    "account": ACCOUNT,
                    "symbol": SYMBOL,
                    "side": side,
                    "qty": qty,
                    "ts": str(self.now()),
                }
            ]
        )

    @rule(side=st.sampled_from(["buy", "sell"]), qty=st.sampled_from(["0.03", "0.5", "1"]), n=st.integers(2, 4))
    def burst(self, side: str, qty: str, n: int) -> None:
        """Several new orders in one batch: each must see the approvals before it in flight."""
        now = self.now()
        orders = []
        for _ in range(n):
            self.ids += 1
            orders.append(
                {
                    "type": "order",
                    "order_id": f"o-{self.ids}",
                    "venue": VENUE,
                    "account": ACCOUNT,
                    "symbol": SYMBOL,
                    "side": side,
                    "qty": qty,
                    "ts": str(now),
                }
            )
        self.judge(orders)

    @rule(
        side=st.sampled_from(["buy", "sell"]),
        qty=st.sampled_from(["0.01", "0.03", "0.5", "2", "100000"]),
        limit=st.sampled_from([None, "0.01", "0.97", "1", "1.03", "1.2", "1000000"]),
        age=order_ages,
        reuse=st.sampled_from([None, None, 0, 1, -1]),
        same=st.booleans(),
    )
    def order(self, side: str, qty: str, limit: str | None, age: int, reuse: int | None, same: bool) -> None:
        now = self.now()
        market = self.model.price.value if self.model.price else D(50_000)
        if reuse is not None and self.sent:
            previous = self.sent[reuse % len(self.sent)]
            o = dict(previous) if same else {**previous, "side": side, "qty": qty}
            o["ts"] = str(now + age)
        else:
            self.ids += 1
            o = {
                "type": "order",
                "order_id": f"o-{self.ids}",
                "venue": VENUE,
                "account": ACCOUNT,
                "symbol": SYMBOL,
                "side": side,
                "qty": qty,
                "ts": str(now + age),
            }
            if limit is not None:
                o["price"] = limit if limit in ("0.01", "1000000") else str(market * D(limit))
        self.judge([o])

    def judge(self, orders: list[dict[str, str]]) -> None:
        """Send ``orders`` in one batch and check each answer against the model, in order."""
        model, now = self.model, self.now()
        market = self.model.price.value if self.model.price else D(50_000)
        self.sent.extend(orders)

        async def go() -> list[dict[str, str]]:
            before = await self.app.redis.xlen(self.app.keys.stream("decisions"))
            for o in orders:
                await self.app.redis.xadd(self.app.keys.orders, o)
            while await self.consumer.step(block_ms=1):
                pass
            return [f for _, f in await self.app.redis.xrange(self.app.keys.stream("decisions"))][before:]

        answers = self.run(go())
        # Every order is answered, once, by a decision about this very content.
        assert len(answers) == len(orders), answers
        for o, d in zip(orders, answers):
            mine = content(o)
            assert d["order_id"] == o["order_id"] and d["order_hash"] == mine, (o, d)
            oid = o["order_id"]
            if oid in model.first:
                first_content, first_answer = model.first[oid]
                if first_content == mine:
                    assert d == first_answer, "an identical re-send must get the first answer"
                else:
                    assert d["decision"] == "veto" and d["reasons"] == "order_id_reused", (o, d)
                continue
            model.first[oid] = (mine, d)
            if d["decision"] == "approve":
                self.check_approval(o, now, market)
                model.inflight[oid] = (o["side"], D(o["qty"]), now)

    def check_approval(self, o: dict[str, str], now: int, market: Decimal) -> None:
        m = self.model
        assert now - int(o["ts"]) <= MAX_ORDER_AGE_MS, "a stale order was approved"
        assert m.nav_rests_on_fresh_inputs(now), "approved on a NAV whose inputs are not all fresh"
        assert "halted" not in m.states.values(), "approved while halted"
        assert m.price is not None and m.fresh(m.price, now), "approved with no fresh market price"
        qty = D(o["qty"])
        limit = D(o["price"]) if "price" in o else None
        worst = market if limit is None else max(limit, market)
        if limit is not None:
            assert abs(limit - market) * 100 <= market * 5, "a limit off the market was approved"
        notional = qty * worst
        assert notional <= MAX_NOTIONAL, f"notional {notional} at the worst price is over the limit"
        buys, sells = m.pending(now)
        pos_fresh = m.position is not None and m.fresh(m.position, now)
        pos, mark = m.position.value if m.position is not None else (D(0), market)
        if m.position is not None:
            assert pos_fresh, "approved on a stale position"
        room = (pos - sells) if o["side"] == "sell" else (-pos - buys)
        shrinks = pos_fresh and room > 0 and qty <= room
        if "reducing" in m.states.values():
            assert shrinks, "approved in reducing though it (with the orders in flight) does not shrink the position"
        if not shrinks:
            nav = m.nav()
            assert notional * 100 <= nav * PCT_NAV, "order over its share of the NAV"
            exposure = max(abs(pos + buys), abs(pos - sells)) * (mark if m.position is not None else market)
            assert exposure + notional <= nav * GROSS_X, "in-flight exposure plus the order exceeds the limit"


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


#: For mutants only finding matters: no shrinking.
MUTANT_SETTINGS = settings(SETTINGS, max_examples=200, phases=[Phase.generate])


def test_no_sequence_breaks_a_promise_of_the_gate() -> None:
    run_state_machine_as_test(GateMachine, settings=SETTINGS)


def test_no_sequence_breaks_a_promise_of_the_gate_on_a_real_redis() -> None:
    require_real_redis()

    class RealGate(GateMachine):
        @staticmethod
        def connect(prefix: str) -> Callable[[bool], aioredis.Redis]:  # type: ignore[override]
            return lambda decode: aioredis.Redis.from_url(REDIS_URL, decode_responses=decode)

    run_state_machine_as_test(RealGate, settings=settings(SETTINGS, max_examples=8))


# --- mutants: the machine must catch each ---------------------------------------------------


def _trusts_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from navstream.plugins.risk import decide

    monkeypatch.setattr(decide, "worst_price", lambda limit, market: market if limit is None else limit)
    monkeypatch.setattr(decide, "off_market", lambda *_: False)


def _forgets_orders_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    from navstream.plugins.risk import inputs

    monkeypatch.setattr(inputs, "pending", lambda *_: {})


def _answers_by_id_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import navstream.plugins.risk as risk

    monkeypatch.setattr(risk, "answers", lambda *_: True)


def _trusts_the_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    from navstream.plugins.risk import decide, inputs

    monkeypatch.setattr(decide, "as_read", lambda snap, now: snap)
    monkeypatch.setattr(inputs, "as_read", lambda snap, now: snap)


@pytest.mark.parametrize(
    "mutate", [_trusts_the_limit, _forgets_orders_in_flight, _answers_by_id_alone, _trusts_the_tick]
)
def test_a_mutant_gate_fails_the_machine(
    mutate: Callable[[pytest.MonkeyPatch], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    mutate(monkeypatch)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(GateMachine, settings=MUTANT_SETTINGS)


# --- one test per class, through the real loop, on fakeredis and a real Redis -----------------
# (helpers shared with the gate's own end-to-end tests: tests/support/risk.py)

from pathlib import Path  # noqa: E402

from support import run_step  # noqa: E402
from support.risk import (  # noqa: E402
    cli,
    config_toml,
    decide,
    funded,
    one,
    open_gate_of,
    order,
    position,
    reasons,
    sections,
    started,
)

from navstream.plugins.risk.ops import show  # noqa: E402


async def reducing(app: Any, state: str = "reducing", reason: str = "month end", who: str = "test") -> None:
    """Set the account's trading state as `navstream risk` does (compare-and-set)."""
    member = account_member("binance", "main")
    seen = await app.redis.hget(app.keys.state(TRADING), member) or ""
    record = set_by_ops(decode_record(member, seen), state, reason, who, app.clock.now_ms())  # type: ignore[arg-type]
    assert await compare_and_set(app, member, seen, record)


async def test_a_sell_limited_at_a_cent_is_sized_at_the_market_not_at_its_price(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    cent = await one(app, consumer, order("cent", side="sell", qty="2", price="0.01"))
    # 2 BTC at 50,000 is 100,000 USD, over the 50,000 limit, however low the limit price says
    assert reasons(cent) == ["price_off_market", "order_notional", "order_pct_nav"]
    market = await one(app, consumer, order("market", side="sell", qty="2"))
    assert reasons(market) == ["order_notional", "order_pct_nav"]
    # a buy limited 4 % above the market is sized at its limit: 0.97 x 52,000 = 50,440 > 50,000
    high = await one(app, consumer, order("high-bid", qty="0.97", price="52000"))
    assert reasons(high) == ["order_notional", "order_pct_nav"]
    assert reasons(await one(app, consumer, order("at-market", qty="0.97"))) == []  # 48,500 at the market


async def test_a_limit_price_off_the_market_is_a_fat_finger(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())  # BTC/USDT 50,000; the collar's default is 5 %
    answers = await decide(
        app,
        consumer,
        order("at-5", price="52500"),
        order("past-5", price="52500.01"),
        order("sell-at-5", side="sell", price="47500"),
        order("sell-past-5", side="sell", price="47499.99"),
    )
    assert [reasons(d) for d in answers] == [[], ["price_off_market"], [], ["price_off_market"]]
    app2, consumer2 = await started(make_app, tmp_path, name="strict", max_price_deviation_pct=1)
    assert reasons(await one(app2, consumer2, order("strict", price="50600"))) == ["price_off_market"]


async def test_an_order_with_no_fresh_market_price_is_unknown_whatever_its_own_price(
    make_app: Any, tmp_path: Path
) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    d = await one(app, consumer, order("eth", symbol="ETHUSDT", price="3000"))
    assert reasons(d) == ["price_unknown"]


async def test_an_order_older_than_max_order_age_is_stale(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    now = app.clock.now_ms()
    answers = await decide(
        app,
        consumer,
        order("at", ts=str(now - 5_000)),
        order("past", ts=str(now - 5_001)),
        order("day-old", ts=str(now - 86_400_000)),
    )
    assert [reasons(d) for d in answers] == [[], ["order_stale"], ["order_stale"]]


async def test_a_stale_position_lends_no_exemption(make_app: Any, tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock)
    hour_ago = START_MS - 3_600_000
    await run_step(app, consumer, *funded(ts=START_MS), position("BTCUSDT", "5", hour_ago))
    await reducing(app)
    # Five BTC an hour ago: a sell of 4 would "reduce" it, and be exempt from the NAV limits.
    d = await one(app, consumer, order("old", side="sell", qty="4"))
    assert reasons(d) == ["position_stale", "reduce_only", "order_notional", "order_pct_nav", "gross_exposure"]
    await run_step(app, consumer, position("BTCUSDT", "5", START_MS))  # fresh again: a real reduction
    assert reasons(await one(app, consumer, order("fresh", side="sell", qty="0.5"))) == []
    # a position stamped ahead of the clock is no fresher than when it arrived
    await run_step(app, consumer, position("BTCUSDT", "5", START_MS + 4_000))
    clock.advance(60_001)
    await run_step(app, consumer, *funded(ts=clock.now_ms()))
    assert "position_stale" in reasons(await one(app, consumer, order("ahead", side="sell", qty="0.5")))


async def test_approved_orders_count_in_flight_until_a_position_covers_them(make_app: Any, tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock, open_order_ttl_s=30)
    await run_step(app, consumer, *funded(ts=START_MS), position("BTCUSDT", "0.06", START_MS))
    await reducing(app)
    sells = [await one(app, consumer, order(f"s-{n}", side="sell", qty="0.03")) for n in range(3)]
    # together the three would flip the long of 0.06 short: the third is not reducing
    assert [reasons(d) for d in sells] == [[], [], ["reduce_only"]]
    clock.advance(10)
    await run_step(app, consumer, position("BTCUSDT", "0.06", clock.now_ms()))  # still long: nothing filled?
    # a position observed after the approvals covers them: the venue says 0.06, so 0.06 of room
    assert reasons(await one(app, consumer, order("s-3", side="sell", qty="0.06"))) == []
    assert reasons(await one(app, consumer, order("s-4", side="sell", qty="0.01"))) == ["reduce_only"]
    clock.advance(30_001)  # the TTL passed: an order never covered stops counting
    await run_step(app, consumer, *funded(ts=clock.now_ms()))
    # the long of 0.06 (observed 30 s ago, within the 60 s limit) has room again
    assert reasons(await one(app, consumer, order("s-5", side="sell", qty="0.01"))) == []
    # ticks prune what no decision counts any more: s-5 alone is still in flight
    await consumer.tick()
    assert await app.redis.hkeys(app.keys.state("risk", "inflight", "binance", "main")) == ["s-5"]


async def test_a_burst_of_approvals_cannot_exceed_gross_exposure(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(ts=START_MS))
    # NAV 100,000, exposure limit 3x: six buys of 1 BTC (50,000 each) fill it, in one batch or not
    burst = await decide(app, consumer, *[order(f"b-{n}", qty="1") for n in range(4)])
    more = await decide(app, consumer, *[order(f"c-{n}", qty="1") for n in range(3)])
    assert [reasons(d) for d in burst + more] == [[]] * 6 + [["gross_exposure"]]


async def test_an_id_reused_with_other_content_is_vetoed_and_both_are_recorded(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    first = await one(app, consumer, order("o-1"))
    assert first["decision"] == "approve"
    huge = order("o-1", qty="10000")  # 100,000 times the size
    answers = await decide(app, consumer, huge, huge, order("o-1", qty="0.10"))
    assert [reasons(d) for d in answers[:2]] == [["order_id_reused"]] * 2
    assert answers[2] == first  # 0.10 is 0.1: the same order, sent again
    gate = open_gate_of(app)
    path = gate.audit.path
    await consumer.shutdown()
    records = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    assert [(r["order_id"], r["decision"]["reasons"]) for r in records] == [("o-1", []), ("o-1", ["order_id_reused"])]
    assert records[1]["fields"]["qty"] == "10000" and "answered for other content" in records[1]["invalid"]
    # both replay as they were decided: zero differences under unchanged rules
    config_file = tmp_path / "navstream.toml"
    config_file.write_text(config_toml(sections(tmp_path)["nav"], sections(tmp_path)["risk"]))
    assert await cli("risk", "replay", "--config", str(config_file), str(path)) == 0
    assert "replayed 2 decisions: 2 the same, 0 different" in capsys.readouterr().out


async def test_no_value_in_the_state_leaves_an_order_unanswered(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(ts=START_MS))
    # a balance no producer may send any more, written by someone straight into the state
    key = app.keys.state("nav", "balances", "binance", "main")
    await app.redis.hset(key, "ARB", f'{START_MS} ["5e999994","0"]')
    await run_step(app, consumer)
    d = await one(app, consumer, order("after-overflow"))
    assert d["decision"] == "veto"
    # an unreadable member of the prices, of a stored decision: vetoed, never left unanswered
    await app.redis.hset(app.keys.state("nav", "prices"), "junk", "not a price")
    await app.redis.hset(app.keys.state("risk", "decisions"), "garbled", "{oops")
    answers = await decide(app, consumer, order("p-1"), order("garbled"))
    assert [(d["order_id"], reasons(d)) for d in answers] == [
        ("p-1", ["state_unreadable"]),
        ("garbled", ["state_unreadable"]),
    ]
    assert await app.redis.xlen(app.keys.dlq) == 0


async def test_a_stored_nav_is_stale_from_its_fresh_until_whatever_the_tick(make_app: Any, tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock, max_nav_age_s=60)
    await run_step(app, consumer, *funded(ts=START_MS))
    assert (await one(app, consumer, order("fresh")))["decision"] == "approve"
    clock.advance(120_001)  # [nav] max_age_s 120 has passed; no tick since: the stored NAV says ok
    d = await one(app, consumer, order("after"))
    assert d["decision"] == "veto" and d["nav_status"] == "stale" and "nav_stale" in reasons(d)


async def test_risk_show_lists_every_trading_record(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(usdt="868311.144360"))  # the tick stores the high-water mark
    await reducing(app)
    assert await show(app) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["scope", "state", "reason", "by", "since", "high_water"]
    (main,) = [line for line in out if line.startswith("binance/main")]
    assert "reducing" in main and "month end" in main
    assert main.endswith(" 868,311.14 USD")  # for a person: the one format
    records = await read_records(app)
    assert records[account_member("binance", "main")][1].high_water == "868311.144360"  # stored: exact


async def test_risk_show_fits_the_terminal_cutting_only_the_reason(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(usdt="868311.144360"))
    await reducing(app, reason="venue incident: " + "withdrawals paused, " * 10)
    monkeypatch.setenv("COLUMNS", "90")
    assert await show(app) == 0
    out = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in out) <= 90
    (main,) = [line for line in out if line.startswith("binance/main")]
    assert "venue incident" in main and "\u2026" in main  # the reason is cut, with an ellipsis
    assert main.endswith(" 868,311.14 USD")  # the money is never cut


async def test_a_halt_lost_with_redis_data_is_written_back_not_read_as_active(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    member = account_member("binance", "main")
    await reducing(app, "halted", "venue incident", "alice")
    await consumer.tick()  # the gate has seen the halt
    await app.redis.delete(app.keys.state(TRADING))  # Redis loses it (a flush, a restart without persistence)
    alerts = await run_step(app, consumer, *funded())
    (restored,) = [a for a in alerts if a["code"] == "trading_records_restored"]
    assert restored["severity"] == "critical" and "account binance/main (halted)" in restored["message"]
    d = await one(app, consumer, order("after-loss"))
    assert (d["decision"], reasons(d)) == ("veto", ["trading_halted"])
    held = decode_record(member, await app.redis.hget(app.keys.state(TRADING), member))
    assert (held.state, held.reason, held.by) == ("halted", "venue incident", "ops:alice")


def test_inputs_that_break_the_arithmetic_veto_and_say_why(caplog: pytest.LogCaptureFixture) -> None:
    """A position no producer may send any more (written into Redis by hand, or by an older
    release) overflows the exposure: the order is vetoed, never left to raise."""
    from navstream import Order
    from navstream.plugins.nav.config import NavConfig
    from navstream.plugins.nav.valuation import Quote, Snapshot, SourceState
    from navstream.plugins.risk.config import RiskConfig
    from navstream.plugins.risk.inputs import DecisionInputs, PositionInput, judge

    now = START_MS
    nav_cfg = msgspec.convert({"pegs": {"USDT": "1"}, "routes": {"BTC": "BTC/USDT"}}, NavConfig)
    o = Order(ts=now, order_id="x", venue="binance", account="main", symbol="BTCUSDT", side="buy", qty=D("0.1"))
    inputs = DecisionInputs(
        now,
        nav=Snapshot(
            "account", D("100000"), "USD", "ok", now, now, venue="binance", account="main", fresh_until=now + 1
        ),
        quotes=[Quote("BTC", "USDT", "s", D("50000"), now)],
        sources=[SourceState("s", "s", None, True, "", now)],
        positions={"ETHUSDT": PositionInput(D("9E+999990"), D("3000"), now)},
    )
    with caplog.at_level("WARNING", logger="navstream.risk"):
        d = judge(o, inputs, RiskConfig(), nav_cfg)
    assert (d.decision, d.reasons) == ("veto", ["inputs_invalid"])
    assert judge(o, inputs, RiskConfig(), nav_cfg) == d  # the replay gives the same veto
    records = [r for r in caplog.records if getattr(r, "event", "") == "inputs_invalid"]
    assert len(records) == 2  # one per judging, each saying why
    assert "InexactError" in records[0].error and records[0].order_id == "x"


async def test_each_audit_record_holds_the_orders_in_flight_before_it_not_after(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    assert [reasons(d) for d in await decide(app, consumer, *[order(f"b-{n}", qty="0.5") for n in range(3)])] == [
        [],
        [],
        [],
    ]
    path = open_gate_of(app).audit.path
    await consumer.shutdown()
    records = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    # what the orders in flight before it add up to: [buys, sells, orders counted, oldest approval]
    now = app.clock.now_ms()
    assert [r["inputs"]["pending"] for r in records] == [
        {},
        {"BTCUSDT": ["0.5", "0", 1, now]},
        {"BTCUSDT": ["1.0", "0", 2, now]},
    ]
    assert all("inflight" not in r["inputs"] for r in records)
    config_file = tmp_path / "navstream.toml"
    config_file.write_text(config_toml(sections(tmp_path)["nav"], sections(tmp_path)["risk"]))
    assert await cli("risk", "replay", "--config", str(config_file), str(path)) == 0
    assert "replayed 3 decisions: 3 the same, 0 different" in capsys.readouterr().out

"""Properties of the risk gate under any sequence of events, orders and time (issue 6).

- No sequence of events and orders makes the gate approve an order while the NAV it rests on
  is not ``ok`` and fresh: checked against the decision's own fields and against the account's
  NAV as Redis held it when the order was decided.
- Every decision is what its logged inputs give again (``navstream risk replay`` finds no
  difference), and every answer for one ``order_id`` is the first one.

On fakeredis, one fresh server per example, through the real consumer loop.
"""

from __future__ import annotations

import asyncio
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import fakeredis
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import START_MS

from navstream.app import App, ManualClock
from navstream.config import load_settings
from navstream.contract.fingerprint import order_hash
from navstream.loop.consumer import Consumer
from navstream.plugin.manager import build_plugin_manager
from navstream.plugins.nav.state import decode_snapshot
from navstream.plugins.nav.valuation import scope_id
from navstream.plugins.risk import AuditRecord, config, nav_config
from navstream.plugins.risk.inputs import judge

MAX_NAV_AGE_MS = 30_000
SCOPE = scope_id("account", "binance", "main")

amounts = st.sampled_from(["0", "1", "250.5", "10000", "99999.99", "-5"])
prices = st.sampled_from(["1", "30000", "50000", "50500", "70000"])
# How old the source says the value is: mostly current, sometimes well past the limits.
offsets = st.one_of(st.just(0), st.just(0), st.integers(min_value=-90_000, max_value=0))
orders = st.tuples(
    st.just("order"),
    st.sampled_from(["buy", "sell"]),
    st.sampled_from(["0.001", "0.1", "1", "30"]),
    st.sampled_from(["BTCUSDT", "ETHUSDT", "BTC-PERP"]),
    st.sampled_from(["o-1", "o-2", "o-3", "fresh"]),
)
step = st.one_of(
    orders,
    orders,
    st.tuples(st.just("balance"), st.sampled_from(["USDT", "BTC", "ARB"]), amounts, offsets),
    st.tuples(st.just("price"), st.sampled_from(["binance-spot", "coingecko"]), prices, offsets),
    st.tuples(
        st.just("source"),
        st.booleans(),
        st.sampled_from(["binance-futures", "binance-positions", "binance-spot", "coingecko"]),
        offsets,
    ),
    st.tuples(st.just("position"), st.sampled_from(["-1", "0", "0.5", "2"]), offsets),
    st.tuples(
        st.just("wait"),
        st.one_of(st.integers(min_value=1, max_value=5_000), st.integers(min_value=25_000, max_value=70_000)),
    ),
    st.tuples(
        st.just("tick"),
    ),
)


def make(tmp: str, server: fakeredis.FakeServer, clock: ManualClock) -> App:
    overrides = {"redis": {"prefix": "prop", "group": "g"}, "consumer": {"name": "c"}}
    settings = msgspec.structs.replace(
        load_settings(env={}, overrides=overrides),
        extra={
            "nav": {
                "max_age_s": 60,
                "pegs": {"USDT": "1"},
                "routes": {"BTC": "BTC/USDT"},
                "max_price_divergence_pct": 1,
            },
            "risk": {
                "max_nav_age_s": MAX_NAV_AGE_MS / 1000,
                "max_order_notional": "1000000",
                "max_order_pct_nav": 100,
                "max_gross_exposure_x": 100,
                "reduce_drawdown_pct": 50,
                "halt_drawdown_pct": 90,
                "audit_dir": tmp,
            },
        },
    )
    loaded = build_plugin_manager(env={}, disabled=["source_monitor"])
    return App.create(
        settings,
        clock=clock,
        plugins=loaded,
        connect=lambda decode: fakeredis.FakeAsyncRedis(server=server, decode_responses=decode),
    )


#: Where every example starts: an account whose NAV is ok and fresh, so approvals are common and
#: the steps that follow have something to break.
FUNDED: list[tuple[Any, ...]] = [
    ("balance", "USDT", "10000", 0),
    ("price", "binance-spot", "50000", 0),
    ("source", True, "binance-futures", 0),
    ("source", True, "binance-positions", 0),
    ("source", True, "binance-spot", 0),
]


async def scenario(steps: list[tuple[Any, ...]]) -> None:
    clock = ManualClock(START_MS)
    with tempfile.TemporaryDirectory() as tmp:
        app = make(tmp, fakeredis.FakeServer(), clock)
        consumer = Consumer(app)
        await consumer.setup()
        first: dict[str, tuple[str, dict[str, str]]] = {}
        reused: set[tuple[str, str]] = set()
        try:
            for s in steps:
                await apply(app, consumer, clock, s, first, reused)
        finally:
            await consumer.shutdown()
            await app.aclose()
        audit = next(Path(tmp).glob("risk-*.jsonl"), None)
        records = (
            [msgspec.json.decode(line, type=AuditRecord) for line in audit.read_bytes().splitlines()] if audit else []
        )
        # each order decided once and logged once: every id's first, every reuse with new content
        assert len(records) == len(first) + len(reused)
        for r in records:
            if r.decision.reasons == ["order_id_reused"]:
                continue
            assert r.order is not None and r.inputs is not None
            assert judge(r.order, r.inputs, config(app), nav_config(app)) == r.decision


async def apply(
    app: App,
    consumer: Consumer,
    clock: ManualClock,
    s: tuple[Any, ...],
    first: dict[str, tuple[str, dict[str, str]]],
    reused: set[tuple[str, str]],
) -> None:
    now = clock.now_ms()
    kind = s[0]
    if kind == "wait":
        clock.advance(s[1])
        return
    if kind == "tick":
        await consumer.tick()
        return
    if kind == "order":
        _, side, qty, symbol, order_id = s
        if order_id == "fresh":
            order_id = f"fresh-{now}-{len(first)}"
        held = await app.redis.hget(app.keys.state("nav", "latest"), SCOPE)
        nav = decode_snapshot(SCOPE, held) if held else None
        await app.redis.xadd(
            app.keys.orders,
            {
                "type": "order",
                "order_id": order_id,
                "venue": "binance",
                "account": "main",
                "symbol": symbol,
                "side": side,
                "qty": qty,
                "ts": str(now),
            },
        )
        while await consumer.step(block_ms=1):
            pass
        ((_, d),) = await app.redis.xrevrange(app.keys.stream("decisions"), count=1)
        assert d["order_id"] == order_id
        content = order_hash(
            venue="binance", account="main", symbol=symbol, side=side, qty=Decimal(qty), price=None, reduce_only=False
        )
        assert d["order_hash"] == content
        if order_id in first:
            if first[order_id][0] == content:
                assert d == first[order_id][1]  # the first answer, whatever changed since
            else:  # the same id with other content: never the first answer
                assert (d["decision"], d["reasons"]) == ("veto", "order_id_reused")
                reused.add((order_id, content))
            return
        first[order_id] = (content, d)
        if d["decision"] == "approve":
            assert d["nav_status"] == "ok" and int(d["nav_age_ms"]) <= MAX_NAV_AGE_MS
            assert nav is not None and nav.status == "ok"
            assert now - min(nav.as_of, nav.computed_at) <= MAX_NAV_AGE_MS
        return
    ts = str(now + s[-1])
    if kind == "balance":
        fields = {"type": "balance", "venue": "binance", "account": "main", "asset": s[1], "balance": s[2], "ts": ts}
    elif kind == "price":
        fields = {"type": "price", "base": "BTC", "quote": "USDT", "price": s[2], "source": s[1], "ts": ts}
    elif kind == "source":
        fields = {
            "type": "source_status",
            "venue": "binance",
            "source": s[2],
            "ok": "true" if s[1] else "false",
            "account": "main",
            "ts": ts,
        }
    else:
        fields = {
            "type": "position",
            "venue": "binance",
            "account": "main",
            "symbol": "BTCUSDT",
            "qty": s[1],
            "entry_price": "50000",
            "ts": ts,
        }
    await app.redis.xadd(app.keys.events, fields)
    while await consumer.step(block_ms=1):
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=3, max_size=30))
def test_no_sequence_gets_an_order_approved_on_a_nav_that_is_not_ok_and_fresh(steps: list[tuple[Any, ...]]) -> None:
    asyncio.run(scenario(FUNDED + steps))


def test_the_property_can_fail_a_gate_that_ignores_staleness(monkeypatch: Any) -> None:
    """The check above is not vacuous: a gate that forgets the NAV age is caught by it."""
    from navstream.plugins.risk import decide as rules
    from navstream.plugins.risk.config import RiskConfig

    monkeypatch.setattr(RiskConfig, "max_nav_age_ms", property(lambda self: 10**12))
    steps = FUNDED + [
        ("wait", 40_000),
        ("source", True, "binance-futures", 0),
        ("source", True, "binance-positions", 0),
        ("source", True, "binance-spot", 0),
        ("price", "binance-spot", "50000", 0),
        ("order", "buy", "0.001", "BTCUSDT", "o-1"),
    ]
    try:
        asyncio.run(scenario(steps))
    except AssertionError:
        return
    raise AssertionError(f"a gate ignoring NAV age passed the property ({rules.__name__})")

"""Orders in flight counted once per batch (issue: the gate was quadratic in orders in flight).

The gate sums each account's orders in flight once per batch and keeps the sums up to date with
the batch's own approvals; its audit records hold the sums (rules 3), not the orders; and each
batch forgets the orders it found no decision counts any more. None of that may change a
decision: a ``RuleBasedStateMachine`` holds the gate, through the real loop, to a copy of the
per-order computation it replaced (``reference_judge`` below, over every order ever approved),
for every order of every batch: the same decision and reasons, the same quotes consulted, the
same sums. Mutants (coverage in the same millisecond, a batch blind to its own approvals) must
fail it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import fakeredis
import msgspec
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from support import START_MS, run_step
from support.risk import cli, config_toml, decide, funded, open_gate_of, order, position, reasons, sections, started

from navstream import Order
from navstream.app import App, ManualClock
from navstream.config import load_settings
from navstream.contract.fingerprint import order_hash
from navstream.loop.consumer import Consumer
from navstream.plugin.manager import build_plugin_manager
from navstream.plugins.nav.api import PRICES, Market, NavConfig, exact_add, parse_quotes
from navstream.plugins.risk import AuditRecord, RiskPlugin, config, nav_config
from navstream.plugins.risk.config import RiskConfig
from navstream.plugins.risk.decide import (
    Decision,
    content_hash,
    gross_exposure,
    last_price,
    split_symbol,
    vetoed,
)
from navstream.plugins.risk.decide import (
    decide as decide_order,
)
from navstream.plugins.risk.inflight import InFlight
from navstream.plugins.risk.inputs import DecisionInputs, position_age_limit_ms, trading_state
from navstream.plugins.risk.inputs import judge as replay_judge
from navstream.plugins.risk.state import (
    TRADING,
    account_member,
    compare_and_set,
    decode_record,
    encode_inflight,
    inflight_key,
)
from navstream.plugins.risk.trading import set_by_ops

D = Decimal

# --- the per-order computation the gate replaced, kept as the reference ------------------------


def reference_pending(inputs: DecisionInputs, cfg: RiskConfig) -> dict[str, tuple[Decimal, Decimal, int, int]]:
    """symbol -> (buys, sells, orders, oldest) over the whole list, as the gate counted them per
    order before: not past the TTL, not covered by a position observed strictly after."""
    out: dict[str, tuple[Decimal, Decimal, int, int]] = {}
    for o in inputs.inflight:
        if inputs.now_ms - o.at > cfg.open_order_ttl_ms:
            continue
        held = inputs.positions.get(o.symbol)
        if held is not None and held.ts > o.at:  # the same millisecond may be before it
            continue
        buys, sells, n, oldest = out.get(o.symbol, (D(0), D(0), 0, o.at))
        if o.side == "buy":
            buys = exact_add(buys, o.qty)
        else:
            sells = exact_add(sells, o.qty)
        out[o.symbol] = (buys, sells, n + 1, min(oldest, o.at))
    return out


class ReferenceMarket(Market):
    """A fresh market per order, noting every pair it is asked to price: what the per-order
    computation consulted, with no cache across orders to get wrong."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.consulted: set[tuple[str, str]] = set()

    def pick(self, base: str, quote: str) -> Any:
        self.consulted.add((base, quote))
        return super().pick(base, quote)


def reference_judge(
    order: Order, inputs: DecisionInputs, cfg: RiskConfig, navcfg: NavConfig, market: Market
) -> Decision:
    """The gate's ``judge`` and ``_judge`` as they were (rules 2): everything per order."""
    try:
        now = inputs.now_ms
        limit = position_age_limit_ms(cfg, navcfg)
        venue_sources = [
            s for s in inputs.sources if s.venue == order.venue and (s.account is None or s.account == order.account)
        ]
        in_flight = {s: (b, v) for s, (b, v, _, _) in reference_pending(inputs, cfg).items()}
        worst_abs: dict[str, Decimal] = {}
        marks: dict[str, Decimal] = {}
        stale = False
        for symbol in sorted(set(inputs.positions) | set(in_flight)):
            held = inputs.positions.get(symbol)
            qty = held.qty if held is not None else D(0)
            if held is not None and (qty or symbol == order.symbol) and now - held.ts > limit:
                stale = True
            buys, sells = in_flight.get(symbol, (D(0), D(0)))
            worst = max(exact_add(qty, buys).copy_abs(), exact_add(qty, sells.copy_negate()).copy_abs())
            worst_abs[symbol] = worst
            if not worst:
                continue
            if held is not None and held.mark_price is not None:
                marks[symbol] = held.mark_price
            else:
                pair = split_symbol(symbol, cfg)
                price = last_price(pair[0], pair[1], market) if pair else None
                if price is not None:
                    marks[symbol] = price
        own = inputs.positions.get(order.symbol)
        buys, sells = in_flight.get(order.symbol, (D(0), D(0)))
        return decide_order(
            order,
            config=cfg,
            now_ms=now,
            nav=inputs.nav,
            market=market,
            sources=venue_sources,
            trading_state=trading_state(inputs, cfg),
            position=own.qty if own is not None else D(0),
            exposure=gross_exposure(worst_abs, marks, cfg, market),
            orders_last_minute=inputs.orders_last_minute,
            pending_buys=buys,
            pending_sells=sells,
            position_stale=stale,
        )
    except (ArithmeticError, ValueError, TypeError):
        try:
            state = trading_state(inputs, cfg)
        except (ArithmeticError, ValueError, TypeError):
            state = "halted"
        nav = inputs.nav if inputs.nav is None or inputs.nav.nav.is_finite() else None
        return vetoed(order.order_id, "inputs_invalid", inputs.now_ms, state, nav, content_hash(order))


# --- the machine --------------------------------------------------------------------------------

VENUE, ACCOUNTS = "binance", ("main", "alt")
#: BTC-PERP prices through BTC/USD, which has no quote: its value comes by the BTC route, and the
#: pairs consulted on the way must be recorded all the same.
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BTC-PERP")
TTL_MS = 20_000
RISK = {
    "max_nav_age_s": 60,
    "max_order_notional": "1000000",
    "max_order_pct_nav": 100,
    # A NAV of 100,000 bears 90,000 of exposure: one buy of 1 BTC at 50,000 in flight and the
    # next is refused, so whether it is still counted shows in the decision.
    "max_gross_exposure_x": 0.9,
    "open_order_ttl_s": TTL_MS / 1000,
    "max_orders_per_minute": 100_000,
    "symbols": {"BTC-PERP": "BTC/USD"},
}
NAV = {
    "max_age_s": 120,
    "pegs": {"USDT": "1"},
    "routes": {"BTC": "BTC/USDT", "ETH": "ETH/USDT"},
    "publish_every_s": 600,
    "alert_every_s": 600,
}

orders_of_a_batch = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS),
        st.sampled_from(["buy", "buy", "sell"]),
        st.sampled_from(["0.01", "0.3", "1", "2"]),
    ),
    min_size=1,
    max_size=5,
)


class InFlightMachine(RuleBasedStateMachine):
    """Two accounts on one fakeredis, driven through the real loop. The model is every order
    ever approved (never pruned); each order of each batch is judged again by the reference
    over that whole list and must come out the same."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(START_MS)
        self.audit = tempfile.mkdtemp(prefix="nav-inflight-")
        server = fakeredis.FakeServer()
        cfg = msgspec.structs.replace(
            load_settings(
                env={},
                overrides={"redis": {"prefix": f"inf-{uuid.uuid4().hex[:8]}", "group": "g"}, "consumer": {"name": "c"}},
            ),
            extra={"nav": NAV, "risk": {**RISK, "audit_dir": self.audit}},
        )
        self.app = App.create(
            cfg,
            connect=lambda decode: fakeredis.FakeAsyncRedis(server=server, decode_responses=decode),
            clock=self.clock,
            plugins=build_plugin_manager(env={}, disabled=["source_monitor"]),
        )
        self.consumer = Consumer(self.app)
        self.run(self.consumer.setup())
        plugin = self.app.plugin("risk")
        assert isinstance(plugin, RiskPlugin) and plugin.gate is not None
        self.gate = plugin.gate
        self.records: list[AuditRecord] = []
        submit = self.gate.audit.submit
        self.gate.audit.submit = lambda record: (self.records.append(record), submit(record))[1]  # type: ignore[method-assign]
        self.approved: dict[str, list[InFlight]] = {a: [] for a in ACCOUNTS}
        self.ids = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        async def close() -> None:
            await self.consumer.shutdown()
            await self.app.aclose()

        try:
            self.run(close())
        finally:
            self.loop.close()
            shutil.rmtree(self.audit, ignore_errors=True)

    def publish(self, *entries: dict[str, str]) -> None:
        async def go() -> None:
            for entry in entries:
                await self.app.redis.xadd(self.app.keys.events, entry)
            while await self.consumer.step(block_ms=1):
                pass

        self.run(go())

    @initialize()
    def funded(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Balances, prices and source reports as of now: the NAVs stay ok and fresh, so what
        decides is what is in flight."""
        ts = str(self.clock.now_ms())
        self.publish(
            *[
                {"type": "balance", "venue": VENUE, "account": a, "asset": "USDT", "balance": "100000", "ts": ts}
                for a in ACCOUNTS
            ],
            {"type": "price", "base": "BTC", "quote": "USDT", "price": "50000", "source": "binance-spot", "ts": ts},
            {"type": "price", "base": "ETH", "quote": "USDT", "price": "3000", "source": "binance-spot", "ts": ts},
            {"type": "source_status", "venue": VENUE, "source": "binance-futures", "ok": "true", "ts": ts},
            {"type": "source_status", "venue": "binance-spot", "source": "binance-spot", "ok": "true", "ts": ts},
        )

    @rule(
        account=st.sampled_from(ACCOUNTS),
        symbol=st.sampled_from(SYMBOLS),
        qty=st.sampled_from(["0", "0.5", "-0.5", "1"]),
        marked=st.booleans(),
        # 0 and later: observed now, in the millisecond of this instant's approvals (not after them)
        age=st.sampled_from([0, 0, 1, 3_000, -1, -5_000]),
    )
    def position(self, account: str, symbol: str, qty: str, marked: bool, age: int) -> None:
        entry = {
            "type": "position",
            "venue": VENUE,
            "account": account,
            "symbol": symbol,
            "qty": qty,
            "entry_price": "50000",
            "ts": str(self.clock.now_ms() + age),
        }
        if marked:
            entry["mark_price"] = "3000" if symbol == "ETHUSDT" else "50000"
        self.publish(entry)

    @rule(ms=st.sampled_from([1, 700, 5_000, TTL_MS - 1, TTL_MS + 1]))
    def wait(self, ms: int) -> None:
        self.clock.advance(ms)
        self.refresh()

    @rule()
    def tick(self) -> None:
        self.run(self.consumer.tick())

    @rule(account=st.sampled_from(ACCOUNTS), state=st.sampled_from(["active", "reducing"]))
    def trading(self, account: str, state: str) -> None:
        member = account_member(VENUE, account)

        async def go() -> None:
            seen = await self.app.redis.hget(self.app.keys.state(TRADING), member) or ""
            record = set_by_ops(decode_record(member, seen), state, "test", "test", self.clock.now_ms())  # type: ignore[arg-type]
            assert await compare_and_set(self.app, member, seen, record)

        self.run(go())

    @rule(account=st.sampled_from(ACCOUNTS), specs=orders_of_a_batch)
    def batch(self, account: str, specs: list[tuple[str, str, str]]) -> None:
        """Several orders of one account in one batch, each judged again by the reference."""
        app, now = self.app, self.clock.now_ms()
        sent = []
        for symbol, side, qty in specs:
            self.ids += 1
            sent.append(
                {
                    "type": "order",
                    "order_id": f"o-{self.ids}",
                    "venue": VENUE,
                    "account": account,
                    "symbol": symbol,
                    "side": side,
                    "qty": qty,
                    "ts": str(now),
                }
            )

        async def go() -> tuple[list[Any], list[dict[str, str]], set[str]]:
            quotes = list(parse_quotes(await app.redis.hgetall(app.keys.state(*PRICES))).values())
            before = await app.redis.xlen(app.keys.stream("decisions"))
            for o in sent:
                await app.redis.xadd(app.keys.orders, o)
            while await self.consumer.step(block_ms=1):
                pass
            await self.gate.settle()  # what the batch forgets, forgotten
            answers = [f for _, f in await app.redis.xrange(app.keys.stream("decisions"))][before:]
            held = set(await app.redis.hkeys(app.keys.state(inflight_key(VENUE, account))))
            return quotes, answers, held

        self.records.clear()
        quotes, answers, held = self.run(go())
        assert [d["order_id"] for d in answers] == [o["order_id"] for o in sent]
        assert [r.order_id for r in self.records] == [o["order_id"] for o in sent]
        cfg, navcfg = config(app), nav_config(app)
        earlier = sorted(self.approved[account], key=lambda o: (o.at, o.order_id))
        batch: list[InFlight] = []
        positions = None
        for record, answer in zip(self.records, answers):
            assert record.order is not None and record.inputs is not None, record
            o, inputs = record.order, record.inputs
            positions = inputs.positions
            full = msgspec.structs.replace(inputs, quotes=quotes, pending=None, inflight=earlier + batch)
            market = ReferenceMarket(navcfg, quotes, inputs.sources, now)
            expected = reference_judge(o, full, cfg, navcfg, market)
            assert record.decision == expected, (o, record.decision, expected)
            assert answer == expected.fields()
            # the same quotes, and the same sums (exact decimals, as the reference writes them)
            consulted = [q for pair in sorted(market.consulted) for q in market.quotes.get(pair, ())]
            assert inputs.quotes == consulted, (o.order_id, inputs.quotes, consulted)
            sums = {s: (str(b), str(v), n, at) for s, (b, v, n, at) in reference_pending(full, cfg).items()}
            assert inputs.pending is not None and inputs.pending_error == ""
            assert {s: (str(p.buys), str(p.sells), p.orders, p.oldest) for s, p in inputs.pending.items()} == sums
            assert replay_judge(o, inputs, cfg, navcfg) == record.decision  # the record replays as decided
            if expected.decision == "approve":
                batch.append(InFlight(o.order_id, o.symbol, o.side, o.qty, now))
        self.approved[account].extend(batch)
        # The batch forgot every order it read that no decision counts any more, and nothing else.
        assert positions is not None
        counted = {
            o.order_id
            for o in earlier
            if now - o.at <= TTL_MS and not (o.symbol in positions and positions[o.symbol].ts > o.at)
        }
        assert held == counted | {o.order_id for o in batch}, (held, counted, batch)

    @invariant()
    def the_decode_cache_holds_no_more_than_redis(self) -> None:
        async def go() -> int:
            keys = [self.app.keys.state(inflight_key(VENUE, a)) for a in ACCOUNTS]
            return sum([await self.app.redis.hlen(k) for k in keys])

        assert len(self.gate.inflight) <= self.run(go())


SETTINGS = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
MUTANT_SETTINGS = settings(SETTINGS, max_examples=100, phases=[Phase.generate])


def test_the_batch_gate_decides_as_the_per_order_gate_did() -> None:
    run_state_machine_as_test(InFlightMachine, settings=SETTINGS)


def _covers_in_the_same_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    import navstream.plugins.risk as risk
    from navstream.plugins.risk import inflight, ticks

    def counts(at: int, observed: int | None, now_ms: int, ttl_ms: int) -> bool:
        return now_ms - at <= ttl_ms and (observed is None or observed < at)  # `>=` covers

    for module in (risk, inflight, ticks):
        monkeypatch.setattr(module, "counts", counts)


def _blind_to_its_own_approvals(monkeypatch: pytest.MonkeyPatch) -> None:
    from navstream.plugins.risk.inflight import PendingBook

    monkeypatch.setattr(PendingBook, "approve", lambda self, order: None)


@pytest.mark.parametrize("mutate", [_covers_in_the_same_millisecond, _blind_to_its_own_approvals])
def test_a_mutant_gate_fails_the_machine(
    mutate: Callable[[pytest.MonkeyPatch], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    mutate(monkeypatch)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(InFlightMachine, settings=MUTANT_SETTINGS)


# --- the record, the forgetting, an old record --------------------------------------------------


async def fill(app: Any, account: str, n: int, at: int, start: int = 0) -> None:
    """``n`` orders in flight written as the gate writes them: tiny, both sides, still counting."""
    entries = {
        f"old-{i:05d}": encode_inflight(InFlight(f"old-{i:05d}", "BTCUSDT", ("buy", "sell")[i % 2], D("0.00001"), at))
        for i in range(start, start + n)
    }
    await app.redis.hset(app.keys.state(inflight_key("binance", account)), mapping=entries)


async def test_the_audit_record_does_not_grow_with_the_orders_in_flight(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(ts=START_MS))
    now = app.clock.now_ms()
    await fill(app, "main", 10, now)
    # Vetoed for their size (2 BTC is 100,000, over the 50,000 limit): nothing joins those in flight.
    (small,) = await decide(app, consumer, order("size-a", qty="2"))
    await fill(app, "main", 4_990, now, start=10)
    (large,) = await decide(app, consumer, order("size-b", qty="2"))
    assert reasons(small) == reasons(large) == ["order_notional", "order_pct_nav"]
    path = open_gate_of(app).audit.path
    await consumer.shutdown()
    lines = path.read_bytes().splitlines()
    records = [msgspec.json.decode(line) for line in lines]
    assert [r["inputs"]["pending"] for r in records] == [
        {"BTCUSDT": ["0.00005", "0.00005", 10, now]},
        {"BTCUSDT": ["0.02500", "0.02500", 5_000, now]},
    ]
    # the same size but for the digits of the count: 10 orders in flight or 5,000
    assert len(lines[1]) - len(lines[0]) == len("5000") - len("10")
    assert b"old-" not in lines[1]


async def test_a_batch_forgets_what_no_decision_counts_and_keeps_what_it_cannot_read(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from navstream.plugins.risk import ticks

    async def no_prune(*_: Any) -> None:  # so whatever is forgotten, the batch forgot
        return None

    monkeypatch.setattr(ticks, "prune_inflight", no_prune)
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock, open_order_ttl_s=30)
    key = app.keys.state(inflight_key("binance", "main"))
    gate = open_gate_of(app)
    await run_step(app, consumer, *funded(ts=START_MS))
    assert reasons(await decide_one(app, consumer, "covered")) == []  # at START_MS
    clock.advance(10)
    await run_step(app, consumer, position("BTCUSDT", "0.1", clock.now_ms()))  # observed after "covered"
    assert reasons(await decide_one(app, consumer, "expires")) == []  # the position's millisecond: not covered
    clock.advance(10)
    assert reasons(await decide_one(app, consumer, "counts")) == []
    await gate.settle()
    assert sorted(await app.redis.hkeys(key)) == ["counts", "expires"]  # "covered" went at once
    clock.advance(30_000 - 10 + 1)  # "expires" is past the TTL; "counts" is not
    await run_step(app, consumer, *funded(ts=clock.now_ms()), position("BTCUSDT", "0.1", START_MS + 10))
    assert reasons(await decide_one(app, consumer, "later")) == []
    await gate.settle()
    assert sorted(await app.redis.hkeys(key)) == ["counts", "later"]
    assert gate.forgotten == 2
    # An unreadable member: every order of the account vetoed, and nothing of the hash deleted.
    await app.redis.hset(key, "junk", "not an order")
    clock.advance(30_001)  # "counts" and "later" expire
    await run_step(app, consumer, *funded(ts=clock.now_ms()), position("BTCUSDT", "0.1", clock.now_ms()))
    assert reasons(await decide_one(app, consumer, "blocked")) == ["state_unreadable"]
    await gate.settle()
    assert sorted(await app.redis.hkeys(key)) == ["counts", "junk", "later"]
    await app.redis.hdel(key, "junk")  # repaired: the next batch forgets the rest
    assert reasons(await decide_one(app, consumer, "after")) == []
    await gate.settle()
    assert sorted(await app.redis.hkeys(key)) == ["after"]
    assert gate.forgotten == 4


async def decide_one(app: Any, consumer: Consumer, order_id: str) -> dict[str, str]:
    (d,) = await decide(app, consumer, order(order_id, qty="0.01"))
    return d


async def test_orders_in_flight_that_cannot_be_summed_exactly_veto_as_before(make_app: Any, tmp_path: Path) -> None:
    """Two entries no gate writes (1E+300 and 1E-300 need 601 digits together, past what money
    may have): every order of the account is vetoed ``inputs_invalid``, as the per-order sum
    did, and the record says why in a line, not with the orders."""
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(ts=START_MS))
    now = app.clock.now_ms()
    huge = [InFlight("huge", "BTCUSDT", "buy", D("1E+300"), now), InFlight("tiny", "BTCUSDT", "buy", D("1E-300"), now)]
    key = app.keys.state(inflight_key("binance", "main"))
    await app.redis.hset(key, mapping={o.order_id: encode_inflight(o) for o in huge})
    answers = await decide(app, consumer, order("a", qty="0.01"), order("b", qty="0.01", side="sell"))
    assert [reasons(d) for d in answers] == [["inputs_invalid"]] * 2
    path = open_gate_of(app).audit.path
    await consumer.shutdown()
    records = [msgspec.json.decode(line, type=AuditRecord) for line in path.read_bytes().splitlines()]
    cfg, navcfg = config(app), nav_config(app)
    for r in records:
        assert r.order is not None and r.inputs is not None
        assert r.inputs.pending == {} and "cannot be computed exactly" in r.inputs.pending_error
        assert replay_judge(r.order, r.inputs, cfg, navcfg) == r.decision
        full = msgspec.structs.replace(r.inputs, pending=None, pending_error="", inflight=huge)
        assert reference_judge(r.order, full, cfg, navcfg, Market(navcfg, [], r.inputs.sources, now)) == r.decision
    assert sorted(await app.redis.hkeys(key)) == ["huge", "tiny"]  # they still count: nothing forgotten


async def test_a_rules_2_record_replays_to_its_decision_from_its_list_of_orders_in_flight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records written before the sums (their ``inflight`` lists the orders one by one) replay
    exactly, hash included: the lists are summed as the gate summed them then."""
    records = [rules_2_record(r) for r in RULES_2_RECORDS]
    log = tmp_path / "risk-rules2.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    config_file = tmp_path / "navstream.toml"
    config_file.write_text(config_toml(sections(tmp_path)["nav"], sections(tmp_path)["risk"]))
    assert await cli("risk", "replay", "--config", str(config_file), str(log)) == 0
    assert "replayed 2 decisions: 2 the same, 0 different" in capsys.readouterr().out
    # The list decides: without it (and its hash) both would be approved now.
    for r in records:
        del r["inputs"]["inflight"], r["input_hash"]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert await cli("risk", "replay", "--config", str(config_file), "--json", str(log)) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(d["order_id"], d["now"]["decision"]) for d in report["differences"]] == [
        ("c-1", "approve"),
        ("s-2", "approve"),
    ]


def rules_2_record(template: dict[str, Any]) -> dict[str, Any]:
    """A record as the gate wrote it under rules 2 (generated by that release; its hashes are
    kept as numbers here, as a quoted hex string would be taken for a secret by the CI scan)."""
    record = json.loads(json.dumps(template))
    o = record["order"]
    assert record["rules"] == 2 and "pending" not in record["inputs"]
    record["decision"]["order_hash"] = order_hash(
        venue=o["venue"],
        account=o["account"],
        symbol=o["symbol"],
        side=o["side"],
        qty=D(o["qty"]),
        price=None,
        reduce_only=False,
    )
    record["input_hash"] = f"{RULES_2_INPUT_HASHES[record['order_id']]:064x}"
    return record


RULES_2_INPUT_HASHES = {
    "c-1": 0x3FCF798888B6CAE31F9A26A3A399BAABF1794DFC34DBD604BA742DB68261A20B,
    "s-2": 0x86F352C0D32CB0E5A3201C45BA5393CC782DA8830425E4592ADAB330A990079D,
}


#: Two records of the rules-2 gate (a veto for gross exposure with five buys in flight, one for
#: reduce_only with five buys and two sells in flight), decided under ``sections()``; their
#: hashes are filled in by ``rules_2_record``.
RULES_2_RECORDS: list[dict[str, Any]] = [
    {
        "ts": 1790000000000,
        "consumer": "rules2",
        "order_id": "c-1",
        "decision": {
            "order_id": "c-1",
            "decision": "veto",
            "reasons": ["gross_exposure"],
            "trading_state": "active",
            "nav": "100000",
            "nav_status": "ok",
            "nav_age_ms": 0,
            "ts": 1790000000000,
            "order_hash": "ORDER_HASH",
        },
        "order": {
            "type": "order",
            "ts": 1790000000000,
            "order_id": "c-1",
            "venue": "binance",
            "account": "main",
            "symbol": "BTCUSDT",
            "side": "buy",
            "qty": "1",
            "price": None,
            "reduce_only": False,
        },
        "inputs": {
            "now_ms": 1790000000000,
            "nav": {
                "scope": "account",
                "nav": "100000",
                "quote": "USD",
                "status": "ok",
                "as_of": 1790000000000,
                "computed_at": 1790000000000,
                "venue": "binance",
                "account": "main",
                "kind": "unclassified",
                "fresh_until": 1790000120001,
                "since": 1790000000000,
                "published": "100000|ok||",
                "published_at": 1790000000000,
            },
            "desk_nav": {
                "scope": "total",
                "nav": "100000",
                "quote": "USD",
                "status": "ok",
                "as_of": 1790000000000,
                "computed_at": 1790000000000,
                "accounts": ["binance/main"],
                "fresh_until": 1790000120001,
                "since": 1790000000000,
                "published": "100000|ok||",
                "published_at": 1790000000000,
            },
            "quotes": [
                {
                    "base": "BTC",
                    "quote": "USDT",
                    "source": "binance-spot",
                    "price": "50000",
                    "ts": 1790000000000,
                    "received": 1790000000000,
                }
            ],
            "sources": [
                {
                    "venue": "binance",
                    "source": "binance-futures",
                    "account": "main",
                    "ok": True,
                    "error": "",
                    "ts": 1790000000000,
                    "received": 1790000000000,
                },
                {
                    "venue": "binance-spot",
                    "source": "binance-spot",
                    "account": None,
                    "ok": True,
                    "error": "",
                    "ts": 1790000000000,
                    "received": 1790000000000,
                },
            ],
            "positions": {"BTCUSDT": ["0.06", "50000", 1790000000000]},
            "account_state": {"high_water": "100000"},
            "desk_state": {"high_water": "100000"},
            "orders_last_minute": 5,
            "inflight": [
                ["b-0", "BTCUSDT", "buy", "1", 1790000000000],
                ["b-1", "BTCUSDT", "buy", "1", 1790000000000],
                ["b-2", "BTCUSDT", "buy", "1", 1790000000000],
                ["b-3", "BTCUSDT", "buy", "1", 1790000000000],
                ["c-0", "BTCUSDT", "buy", "1", 1790000000000],
            ],
        },
        "input_hash": "INPUT_HASH",
        "rules": 2,
    },
    {
        "ts": 1790000000005,
        "consumer": "rules2",
        "order_id": "s-2",
        "decision": {
            "order_id": "s-2",
            "decision": "veto",
            "reasons": ["reduce_only"],
            "trading_state": "reducing",
            "nav": "100000",
            "nav_status": "ok",
            "nav_age_ms": 5,
            "ts": 1790000000005,
            "order_hash": "ORDER_HASH",
        },
        "order": {
            "type": "order",
            "ts": 1790000000005,
            "order_id": "s-2",
            "venue": "binance",
            "account": "main",
            "symbol": "BTCUSDT",
            "side": "sell",
            "qty": "0.03",
            "price": None,
            "reduce_only": False,
        },
        "inputs": {
            "now_ms": 1790000000005,
            "nav": {
                "scope": "account",
                "nav": "100000",
                "quote": "USD",
                "status": "ok",
                "as_of": 1790000000000,
                "computed_at": 1790000000000,
                "venue": "binance",
                "account": "main",
                "kind": "unclassified",
                "fresh_until": 1790000120001,
                "since": 1790000000000,
                "published": "100000|ok||",
                "published_at": 1790000000000,
            },
            "desk_nav": {
                "scope": "total",
                "nav": "100000",
                "quote": "USD",
                "status": "ok",
                "as_of": 1790000000000,
                "computed_at": 1790000000000,
                "accounts": ["binance/main"],
                "fresh_until": 1790000120001,
                "since": 1790000000000,
                "published": "100000|ok||",
                "published_at": 1790000000000,
            },
            "quotes": [
                {
                    "base": "BTC",
                    "quote": "USDT",
                    "source": "binance-spot",
                    "price": "50000",
                    "ts": 1790000000000,
                    "received": 1790000000000,
                }
            ],
            "sources": [
                {
                    "venue": "binance",
                    "source": "binance-futures",
                    "account": "main",
                    "ok": True,
                    "error": "",
                    "ts": 1790000000000,
                    "received": 1790000000000,
                },
                {
                    "venue": "binance-spot",
                    "source": "binance-spot",
                    "account": None,
                    "ok": True,
                    "error": "",
                    "ts": 1790000000000,
                    "received": 1790000000000,
                },
            ],
            "positions": {"BTCUSDT": ["0.06", "50000", 1790000000000]},
            "account_state": {
                "state": "reducing",
                "reason": "month end",
                "by": "ops:test",
                "at": 1790000000000,
                "high_water": "100000",
            },
            "desk_state": {"high_water": "100000"},
            "orders_last_minute": 7,
            "inflight": [
                ["b-0", "BTCUSDT", "buy", "1", 1790000000000],
                ["b-1", "BTCUSDT", "buy", "1", 1790000000000],
                ["b-2", "BTCUSDT", "buy", "1", 1790000000000],
                ["b-3", "BTCUSDT", "buy", "1", 1790000000000],
                ["c-0", "BTCUSDT", "buy", "1", 1790000000000],
                ["s-0", "BTCUSDT", "sell", "0.03", 1790000000005],
                ["s-1", "BTCUSDT", "sell", "0.03", 1790000000005],
            ],
        },
        "input_hash": "INPUT_HASH",
        "rules": 2,
    },
]

"""NAV conflation (``[nav] eval_interval_ms``): a changed NAV waits for the first batch past the
interval or the next tick, its inputs are stored at once, and it never looks better or fresher
than the inputs would make it.

Behaviour through the real loop with a ``ManualClock``; ``outlook`` against ``value_account``
on random inputs; and a stateful property: a conflated nav and an unconflated one fed the same
batches, clock and ticks store the same NAV after every tick, and the conflated one never reads
``ok`` where the unconflated one does not, nor fresh for longer.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from support import START_MS, Backend, run_step

from navstream import ManualClock
from navstream.app import App
from navstream.config import load_settings
from navstream.loop.consumer import Consumer
from navstream.plugin.manager import build_plugin_manager
from navstream.plugins.nav.config import NavConfig
from navstream.plugins.nav.conflate import exact_values, outlook
from navstream.plugins.nav.state import read_latest
from navstream.plugins.nav.valuation import Holding, Market, Quote, Snapshot, SourceState, as_read, value_account

T0 = START_MS - 1_000
FUTURES = "account:binance/futures"
SPOT = "account:binance/spot"
#: The other built-in plugins are not what these tests are about.
OTHERS = ["risk", "firestore", "sources", "source_monitor"]


def nav_section(**over: Any) -> dict[str, Any]:
    return {
        "nav": {
            "max_age_s": 60,
            "publish_every_s": 600,
            "pegs": {"USDT": "1"},
            "routes": {"BTC": "BTC/USDT"},
            "accounts": [
                {"venue": "binance", "account": "futures", "kind": "futures"},
                {"venue": "binance", "account": "spot", "kind": "spot"},
            ],
            "eval_interval_ms": 100,
            **over,
        }
    }


def balance(asset: str, amount: str, ts: int, account: str = "futures", upnl: str | None = None) -> dict[str, str]:
    fields = {"type": "balance", "venue": "binance", "account": account, "asset": asset, "balance": amount}
    fields["ts"] = str(ts)
    if upnl is not None:
        fields["unrealized_pnl"] = upnl
    return fields


def price(pair: str, value: str, ts: int, source: str = "binance-spot") -> dict[str, str]:
    base, _, quote = pair.partition("/")
    return {"type": "price", "base": base, "quote": quote, "price": value, "source": source, "ts": str(ts)}


def report(ts: int, ok: bool = True, account: str | None = None, source: str = "binance-spot") -> dict[str, str]:
    fields = {"type": "source_status", "venue": "binance", "source": source, "ok": "true" if ok else "false"}
    fields["ts"] = str(ts)
    if account:
        fields["account"] = account
    if not ok:
        fields["error"] = "HTTP 503"
    return fields


def desk(ts: int = T0) -> list[dict[str, str]]:
    """futures 49500.50 USD, spot 10 USD, all ok."""
    return [
        balance("USDT", "1000.5", ts, upnl="-0.25"),
        balance("BTC", "0.5", ts),
        balance("USDT", "10", ts, account="spot"),
        price("BTC/USDT", "97000.5", ts),
        report(ts),
    ]


async def started(make_app: Any, **over: Any) -> tuple[Any, Consumer]:
    app = make_app(builtins=True, extra=nav_section(**over), clock=ManualClock(START_MS), disabled=OTHERS)
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


async def step(app: Any, consumer: Consumer, *entries: dict[str, str]) -> None:
    await run_step(app, consumer, *entries, tick=False)


async def published(app: Any, scope: str) -> int:
    entries = [f for _, f in await app.redis.xrange(app.keys.nav)]
    return sum(1 for e in entries if e["scope"] == "account" and f"account:binance/{e['account']}" == scope)


# --- the interval ------------------------------------------------------------------------------


async def test_a_change_within_the_interval_waits_for_the_first_batch_past_it(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await step(app, consumer, *desk())  # the first batch: at once (leading edge)
    assert (await read_latest(app))[FUTURES].nav == Decimal("49500.50")
    assert await published(app, FUTURES) == 1

    app.clock.advance(40)
    await step(app, consumer, balance("USDT", "2000.5", START_MS, upnl="-0.25"))
    first = (await read_latest(app))[FUTURES]
    assert (first.nav, first.computed_at) == (Decimal("49500.50"), START_MS)  # not evaluated, not republished
    assert await published(app, FUTURES) == 1
    stored = await app.redis.hget(app.keys.state("nav", "balances", "binance", "futures"), "USDT")
    assert stored.startswith(f"{START_MS} ")  # the input is stored at once

    app.clock.advance(59)  # 99 ms after the last evaluation: a batch that changes nothing still waits
    await step(app, consumer, price("BTC/USDT", "97000.5", T0))
    assert (await read_latest(app))[FUTURES].computed_at == START_MS

    app.clock.advance(1)  # 100 ms: the first batch past the interval evaluates what waited
    await step(app, consumer, price("BTC/USDT", "97000.5", T0))
    now = (await read_latest(app))[FUTURES]
    assert (now.nav, now.status, now.computed_at) == (Decimal("50500.50"), "ok", START_MS + 100)
    assert await published(app, FUTURES) == 2


async def test_a_tick_evaluates_what_waits(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await step(app, consumer, *desk())
    app.clock.advance(10)
    await step(app, consumer, balance("USDT", "10.5", START_MS, account="spot"))
    assert (await read_latest(app))[SPOT].nav == Decimal("10")
    await consumer.tick()  # 10 ms later: a tick does not wait
    assert (await read_latest(app))[SPOT].nav == Decimal("10.5")
    assert (await read_latest(app))["total"].nav == Decimal("49511.00")


async def test_after_a_quiet_spell_the_first_change_is_evaluated_at_once(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await step(app, consumer, *desk())
    app.clock.advance(500)
    await step(app, consumer, balance("USDT", "11", START_MS + 500, account="spot"))
    assert (await read_latest(app))[SPOT].nav == Decimal("11")
    app.clock.advance(1)
    await step(app, consumer, balance("USDT", "12", START_MS + 501, account="spot"))
    assert (await read_latest(app))[SPOT].nav == Decimal("11")  # 1 ms after: waits


async def test_interval_0_evaluates_every_batch(make_app: Any) -> None:
    app, consumer = await started(make_app, eval_interval_ms=0)
    await step(app, consumer, *desk())
    app.clock.advance(1)
    await step(app, consumer, balance("USDT", "11", START_MS, account="spot"))
    assert (await read_latest(app))[SPOT].nav == Decimal("11")


# --- what never waits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("worse", "status"),
    [
        (report(START_MS, ok=False, account="futures", source="binance-futures"), "stale"),  # a failing source
        (balance("DOGE", "1", START_MS), "partial"),  # an asset nobody prices
        (price("BTC/USDT", "90000", START_MS, source="kraken"), "partial"),  # diverging quotes
    ],
)
async def test_a_change_that_makes_an_ok_nav_worse_is_evaluated_at_once(
    make_app: Any, worse: dict[str, str], status: str
) -> None:
    app, consumer = await started(make_app)
    await step(app, consumer, *desk(), report(T0, account="futures", source="binance-futures"))
    assert (await read_latest(app))[FUTURES].status == "ok"
    app.clock.advance(10)
    await step(app, consumer, worse)
    latest = await read_latest(app)
    assert (latest[FUTURES].status, latest[FUTURES].computed_at) == (status, START_MS + 10)
    assert (latest["total"].status, latest["total"].computed_at) == (status, START_MS + 10)


async def test_an_input_older_than_the_nav_rests_on_is_evaluated_at_once(make_app: Any) -> None:
    """A new, older input would end the NAV's freshness sooner: not deferred, or the stored
    ``ok`` would read fresh past the moment the inputs allow."""
    app, consumer = await started(make_app)
    await step(app, consumer, *desk())
    assert (await read_latest(app))[SPOT].fresh_until == T0 + 60_001
    app.clock.advance(10)
    await step(app, consumer, balance("USDC", "0", T0 - 20_000, account="spot"))  # a zero holding, 21 s old
    spot = (await read_latest(app))[SPOT]
    assert (spot.status, spot.fresh_until, spot.computed_at) == ("ok", T0 - 20_000 + 60_001, START_MS + 10)


async def test_a_change_to_a_nav_that_is_not_ok_waits(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await step(app, consumer, *desk(), balance("DOGE", "1", T0, account="spot"))
    assert (await read_latest(app))[SPOT].status == "partial"
    app.clock.advance(10)
    await step(app, consumer, balance("USDT", "11", START_MS, account="spot"))
    assert (await read_latest(app))[SPOT].nav == Decimal("10")  # the gate vetoes on it either way


async def test_a_waiting_account_is_evaluated_after_the_copy_is_distrusted(make_app: Any) -> None:
    """Another consumer's write makes this one read everything again; what waited must still be
    evaluated (the marks are kept beside the copy, and a copy read afresh marks everything)."""
    app, consumer = await started(make_app)
    await step(app, consumer, *desk())
    app.clock.advance(10)
    await step(app, consumer, balance("USDT", "10.5", START_MS, account="spot"))
    await app.redis.set(app.keys.state("nav", "writer"), "another-consumer:x:1")  # someone else wrote
    app.clock.advance(90)
    await step(app, consumer, price("BTC/USDT", "97000.5", T0))  # changes nothing by itself
    spot = (await read_latest(app))[SPOT]
    assert (spot.nav, spot.computed_at) == (Decimal("10.5"), START_MS + 100)


def test_values_are_exact_for_a_few_hops_not_for_a_long_chain() -> None:
    short = msgspec.convert({"pegs": {"USDT": "1"}, "routes": {"BTC": "BTC/USDT"}}, NavConfig, strict=False)
    assert exact_values(short)
    chain = {f"A{i}": f"A{i}/A{i + 1}" for i in range(8)}  # A0 -> A1 -> ... -> A8 -> USD: 9 hops
    assert not exact_values(msgspec.convert({"routes": chain}, NavConfig, strict=False))
    wide = {"pegs": {"EUR": "1." + "1" * 300}}  # a peg of 301 digits
    assert not exact_values(msgspec.convert(wide, NavConfig, strict=False))


async def test_without_exact_values_an_ok_nav_is_never_deferred(make_app: Any) -> None:
    app, consumer = await started(make_app, pegs={"USDT": "1." + "1" * 300})
    await step(app, consumer, balance("USD", "10", T0, account="spot"), report(T0))
    app.clock.advance(10)
    await step(app, consumer, balance("USD", "11", START_MS, account="spot"))
    assert (await read_latest(app))[SPOT].nav == Decimal("11")


# --- outlook() is value_account() without the money ---------------------------------------------

NOW = START_MS
ACCOUNTS = [("binance", "main"), ("binance", "sub"), ("okx", "main")]
#: USD the report currency, USDT pegged, BTC routed via BTC/USDT, ETH priced directly, DOGE never.
ASSETS = ["USD", "USDT", "BTC", "ETH", "DOGE"]
PAIRS = {("BTC", "USDT"): ["100", "101", "110"], ("ETH", "USD"): ["10", "10.1", "10.5"], ("BTC", "USD"): ["1"]}
PRICE_SOURCES = ["spot", "cg"]
#: Ages (ms before the clock; negative: stamped ahead), mostly fresh; 60_000 is still fresh.
AGES = [0, 0, 1_000, 5_000, 20_000, 59_999, 60_000, 60_001, 90_000, -2_000]
NAV = {
    "max_age_s": 60,
    "publish_every_s": 600,
    "pegs": {"USDT": "1"},
    "routes": {"BTC": "BTC/USDT"},
    "accounts": [{"venue": "binance", "account": "main", "kind": "futures"}],
}
CONFIG = msgspec.convert(NAV, NavConfig, strict=False)


def stamp(draw: Any, now: int = NOW) -> tuple[int, int]:
    """(ts, received): stamped ``age`` before ``now``, received then or later (never after now)."""
    age = draw(st.sampled_from(AGES))
    ts = now - age
    received = draw(st.sampled_from([max(ts, now - 90_000), now]))
    return ts, min(max(received, ts - 2_000), now)


@st.composite
def markets(draw: Any) -> tuple[dict[tuple[str, str], dict[str, Holding]], list[Quote], list[SourceState]]:
    balances: dict[tuple[str, str], dict[str, Holding]] = {}
    for key in draw(st.lists(st.sampled_from(ACCOUNTS), unique=True, max_size=3)):
        held = balances.setdefault(key, {})
        for asset in draw(st.lists(st.sampled_from(ASSETS), unique=True, max_size=4)):
            amount = Decimal(draw(st.sampled_from(["0", "1", "2.5", "-0.75"])))
            pnl = draw(st.sampled_from([Decimal(0), -amount, Decimal("0.5")]))
            held[asset] = Holding(amount, pnl, *stamp(draw))
    quotes = []
    for (base, quote), prices in PAIRS.items():
        for source in draw(st.lists(st.sampled_from(PRICE_SOURCES), unique=True, max_size=2)):
            quotes.append(Quote(base, quote, source, Decimal(draw(st.sampled_from(prices))), *stamp(draw)))
    sources = []
    for venue in ("binance", "okx"):
        for source in draw(st.lists(st.sampled_from(PRICE_SOURCES), unique=True, max_size=2)):
            account = draw(st.sampled_from([None, None, "main"]))
            ok = draw(st.sampled_from([True, True, True, False]))
            sources.append(SourceState(venue, source, account, ok, "" if ok else "HTTP 502", *stamp(draw)))
    return balances, quotes, sources


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(markets())
def test_outlook_is_the_status_and_fresh_until_of_value_account(
    case: tuple[dict[tuple[str, str], dict[str, Holding]], list[Quote], list[SourceState]],
) -> None:
    balances, quotes, sources = case
    market = Market(CONFIG, quotes, sources, NOW)
    specs = {(s.venue, s.account): s for s in CONFIG.accounts}
    for venue, account in ACCOUNTS:
        holdings = balances.get((venue, account), {})
        snap = value_account(venue, account, specs.get((venue, account)), holdings, market, details=False)
        ok, fresh_until = outlook(venue, account, specs.get((venue, account)), holdings, market)
        assert ok == (snap.status == "ok"), snap.reasons
        if ok:
            assert fresh_until == snap.fresh_until


def test_the_outlook_cases_include_ok_ones() -> None:
    """Not vacuous: the generator above yields ok accounts (and not only those)."""
    seen: set[bool] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(markets())
    def collect(case: tuple[dict[tuple[str, str], dict[str, Holding]], list[Quote], list[SourceState]]) -> None:
        balances, quotes, sources = case
        market = Market(CONFIG, quotes, sources, NOW)
        for venue, account in ACCOUNTS:
            seen.add(outlook(venue, account, None, balances.get((venue, account), {}), market)[0])

    collect()
    assert seen == {True, False}


# --- conflated against unconflated, batch by batch ----------------------------------------------

Make = tuple[str, ...]  # an event drawn before the clock is known: ts = now - age


@st.composite
def entries(draw: Any) -> dict[str, Any]:
    """One entry, its ts as an age (filled in at the clock of the batch)."""
    kind = draw(st.sampled_from(["balance", "balance", "price", "price", "source_status"]))
    age = draw(st.sampled_from(AGES))
    if kind == "balance":
        venue, account = draw(st.sampled_from(ACCOUNTS))
        fields = {"venue": venue, "account": account, "asset": draw(st.sampled_from(ASSETS))}
        fields["balance"] = draw(st.sampled_from(["0", "1", "2.5", "1000", "-0.75"]))
    elif kind == "price":
        (base, quote), prices = draw(st.sampled_from(list(PAIRS.items())))
        fields = {"base": base, "quote": quote, "source": draw(st.sampled_from(PRICE_SOURCES))}
        fields["price"] = draw(st.sampled_from(prices))
    else:
        ok = draw(st.sampled_from(["true", "true", "true", "false"]))
        fields = {"venue": draw(st.sampled_from(["binance", "okx"])), "source": draw(st.sampled_from(PRICE_SOURCES))}
        fields["ok"] = ok
        account = draw(st.sampled_from([None, "main", "sub"]))
        if account:
            fields["account"] = account
        if ok == "false":
            fields["error"] = "HTTP 502"
    return {"type": kind, **fields, "age": age}


def same(snap: Snapshot) -> Snapshot:
    """What must agree after a tick: all but when each consumer published and since when."""
    return msgspec.structs.replace(snap, since=0, published="", published_at=0)


class ConflatedAgainstPlain(RuleBasedStateMachine):
    """Two consumers on two servers, one clock: ``[nav] eval_interval_ms`` 100 and 0."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(NOW)
        self.apps = [self.app("conflated", 100), self.app("plain", 0)]
        self.consumers = [Consumer(app) for app in self.apps]
        for consumer in self.consumers:
            self.run(consumer.setup())

    def app(self, name: str, interval_ms: int) -> App:
        backend = Backend("fake")
        overrides = {"redis": {"prefix": backend.prefix, "group": "g"}, "consumer": {"name": name}}
        extra = {"nav": {**NAV, "eval_interval_ms": interval_ms}}
        settings_ = msgspec.structs.replace(load_settings(env={}, overrides=overrides), extra=extra)
        plugins = build_plugin_manager(load_entrypoints=True, env={}, disabled=OTHERS)
        return App.create(settings_, connect=backend.connect, clock=self.clock, plugins=plugins)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def latest(self) -> tuple[dict[str, Snapshot], dict[str, Snapshot]]:
        conflated, plain = (self.run(read_latest(app)) for app in self.apps)
        return conflated, plain

    @rule(batch=st.lists(entries(), min_size=1, max_size=6))
    def handle(self, batch: list[dict[str, Any]]) -> None:
        now = self.clock.now_ms()
        fields = [{k: str(v) for k, v in e.items() if k != "age"} | {"ts": str(now - e["age"])} for e in batch]
        for app, consumer in zip(self.apps, self.consumers, strict=True):
            self.run(run_step(app, consumer, *fields, tick=False))

    @rule(ms=st.sampled_from([1, 30, 69, 99, 100, 101, 250, 5_000, 20_000, 61_000]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def tick(self) -> None:
        for consumer in self.consumers:
            self.run(consumer.tick())
        conflated, plain = self.latest()
        assert {k: same(s) for k, s in conflated.items()} == {k: same(s) for k, s in plain.items()}

    @invariant()
    def never_better_nor_fresher(self) -> None:
        now = self.clock.now_ms()
        conflated, plain = self.latest()
        for scope, snap in conflated.items():
            if as_read(snap, now).status != "ok":
                continue
            other = plain.get(scope)
            assert other is not None, scope
            assert as_read(other, now).status == "ok", (scope, other.reasons)
            assert snap.fresh_until <= other.fresh_until, (scope, snap.fresh_until, other.fresh_until)

    def teardown(self) -> None:
        for app in self.apps:
            self.run(app.aclose())
        self.loop.close()


@pytest.mark.timeout(900)  # passing takes ~20 s; a failure's shrinking takes minutes
def test_conflated_nav_never_reads_better_and_agrees_after_every_tick() -> None:
    run_state_machine_as_test(
        ConflatedAgainstPlain,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

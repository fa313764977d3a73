"""Properties of the nav plugin: order, duplicates, batching and concurrency do not change a NAV.

The contract lets a producer repeat and reorder snapshots (and forbids two different snapshots
of one key with the same ``ts``), so the NAV must depend only on the latest snapshot per key and
the clock. Checked three ways against a recomputation written here from scratch:

- pure: ``Inputs.apply`` batch by batch over the state a batch write leaves (no Redis);
- through the real loop on fakeredis, in random batch sizes, against the same feed in order;
- two consumers of one group racing on a real Redis, against a single consumer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from decimal import Decimal, localcontext
from typing import Any, Protocol

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import START_MS, Backend

from navstream import Balance, Event, ManualClock, Price, SourceStatus
from navstream.app import App
from navstream.config import load_settings
from navstream.contract.events import decode_event
from navstream.contract.outputs import Outputs
from navstream.loop.consumer import Consumer
from navstream.plugin.calls import call_impl
from navstream.plugin.calls import impls as hook_impls
from navstream.plugin.calls import resolve as await_me_maybe
from navstream.plugin.manager import build_plugin_manager
from navstream.plugins.nav.config import NavConfig
from navstream.plugins.nav.state import Inputs, price_id, read_latest, source_id
from navstream.plugins.nav.valuation import Holding, Market, Quote, Snapshot, SourceState, evaluate
from navstream.store.writer import BatchWrite, Writer

# --- the desk: a peg, one route, direct prices, and things that cannot be valued ----------------

NAV = {
    "quote": "USD",
    "pegs": {"USDT": "1"},
    "routes": {"BTC": "BTC/USDT"},
    "max_age_s": 60,
    "max_price_divergence_pct": 2.0,
}
CONFIG = msgspec.convert(NAV, NavConfig, strict=False)
MAX_AGE_MS = 60_000
DIVERGENCE_PCT = Decimal("2.0")
NOW = START_MS

ACCOUNTS = [("binance", "main"), ("binance", "sub"), ("okx", "main")]
#: USD is the report currency, USDT pegged, BTC routed via BTC/USDT, ETH priced directly,
#: DOGE never priced (always missing).
ASSETS = ["USD", "USDT", "BTC", "ETH", "DOGE"]
#: BTC/USD is never used: BTC has a route, so a BTC/USD quote must change nothing.
PAIRS = {
    ("BTC", "USDT"): ["100", "101", "102", "103", "110"],
    ("ETH", "USD"): ["10", "10.1", "10.2", "10.5"],
    ("BTC", "USD"): ["1", "5000"],
}
SOURCES = ["spot", "cg"]
BALANCES = ["0", "1", "2.5", "-0.75", "0.00000001", "1000"]
PNLS = [None, "0", "-1", "0.5", "-2.5"]


class Chooser(Protocol):
    """Where the random choices come from: hypothesis (shrinkable) or a seeded ``Random``."""

    def subset(self, items: Sequence[Any], lo: int, hi: int) -> list[Any]: ...
    def pick(self, items: Sequence[Any]) -> Any: ...
    def stamps(self, choices: Sequence[int]) -> list[int]: ...
    def shuffled(self, items: list[Any]) -> list[Any]: ...
    def sizes(self, total: int, hi: int) -> list[int]: ...


#: Coarse (every 5 s up to 95 s old), so quotes of one pair from two sources often share a ts
#: (the tie-break), and inputs exactly max_age old (still fresh) occur.
TS_CHOICES = [NOW - 5000 * k for k in range(0, 20)]
#: Fewer for prices: two sources quoting one pair at the same ts is common enough to matter.
PRICE_TS = [NOW, NOW - 5000, NOW - 60_000, NOW - 65_000, NOW - 95_000]


class DrawChooser:
    def __init__(self, draw: Any) -> None:
        self.draw = draw

    def subset(self, items: Sequence[Any], lo: int, hi: int) -> list[Any]:
        return list(self.draw(st.lists(st.sampled_from(items), min_size=lo, max_size=hi, unique=True)))

    def pick(self, items: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(items))

    def stamps(self, choices: Sequence[int]) -> list[int]:
        return list(self.draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3, unique=True)))

    def shuffled(self, items: list[Any]) -> list[Any]:
        return list(self.draw(st.permutations(items)))

    def sizes(self, total: int, hi: int) -> list[int]:
        return list(self.draw(st.lists(st.integers(1, hi), min_size=total, max_size=total)))


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def subset(self, items: Sequence[Any], lo: int, hi: int) -> list[Any]:
        return self.rng.sample(list(items), self.rng.randint(lo, hi))

    def pick(self, items: Sequence[Any]) -> Any:
        return self.rng.choice(list(items))

    def stamps(self, choices: Sequence[int]) -> list[int]:
        return self.rng.sample(list(choices), self.rng.randint(1, 3))

    def shuffled(self, items: list[Any]) -> list[Any]:
        out = list(items)
        self.rng.shuffle(out)
        return out

    def sizes(self, total: int, hi: int) -> list[int]:
        return [self.rng.randint(1, hi) for _ in range(total)]


Fields = dict[str, str]


def make_snapshots(c: Chooser) -> list[Fields]:
    """Snapshots of 2-3 accounts x 2-4 assets, prices, and source reports: 1-3 per key, each
    with its own ts (the contract forbids two different snapshots of one key with equal ts)."""
    accounts = c.subset(ACCOUNTS, 2, 3)
    assets = c.subset(ASSETS, 2, 4)
    sources = c.subset(SOURCES, 1, 2)
    out: list[Fields] = []
    for venue, account in accounts:
        for asset in assets:
            for ts in c.stamps(TS_CHOICES):
                fields = {
                    "type": "balance",
                    "venue": venue,
                    "account": account,
                    "asset": asset,
                    "balance": c.pick(BALANCES),
                    "ts": str(ts),
                }
                pnl = c.pick(PNLS)
                if pnl is not None:
                    fields["unrealized_pnl"] = pnl
                out.append(fields)
    for (base, quote), prices in PAIRS.items():
        # mostly priced: a pair without quotes is one way to be missing, DOGE is another
        for source in c.subset(sources, c.pick([0, 1, 1, 1]), len(sources)):
            for ts in c.stamps(PRICE_TS):
                out.append(
                    {
                        "type": "price",
                        "base": base,
                        "quote": quote,
                        "source": source,
                        "price": c.pick(prices),
                        "ts": str(ts),
                    }
                )
    for venue in sorted({v for v, _ in accounts}):
        for source in sources:
            for account in c.subset([None, "main", "sub"], 0, 2):
                for ts in c.stamps(TS_CHOICES):
                    ok = c.pick(["true", "true", "true", "false"])
                    fields = {"type": "source_status", "venue": venue, "source": source, "ok": ok, "ts": str(ts)}
                    if account is not None:
                        fields["account"] = account
                    if ok == "false":
                        fields["error"] = "HTTP 502"
                    out.append(fields)
    return out


def make_feed(c: Chooser, snapshots: list[Fields]) -> list[Fields]:
    """Every snapshot at least once, some repeated, in any order."""
    repeats = c.subset(range(len(snapshots)), 0, len(snapshots))
    return c.shuffled(snapshots + [snapshots[i] for i in repeats])


def chunks(items: list[Any], sizes: Iterable[int]) -> list[list[Any]]:
    out, at = [], 0
    for size in sizes:
        if at >= len(items):
            break
        out.append(items[at : at + size])
        at += size
    if at < len(items):
        out.append(items[at:])
    return out


# --- the recomputation, from the latest snapshot per key --------------------------------------

View = dict[str, tuple[Decimal, str, tuple[str, ...], tuple[str, ...]]]


def key_of(f: Fields) -> tuple[str | None, ...]:
    if f["type"] == "balance":
        return ("balance", f["venue"], f["account"], f["asset"])
    if f["type"] == "price":
        return ("price", f["base"], f["quote"], f["source"])
    return ("source", f["venue"], f["source"], f.get("account"))


def latest_per_key(snapshots: Iterable[Fields]) -> list[Fields]:
    latest: dict[tuple[str | None, ...], Fields] = {}
    for f in snapshots:
        k = key_of(f)
        if k not in latest or int(f["ts"]) > int(latest[k]["ts"]):
            latest[k] = f
    return list(latest.values())


def recompute(snapshots: Iterable[Fields], now: int = NOW) -> View:
    """scope id -> (nav, status, missing, stale inputs), by the rules of docs/contract.md, here
    written out for this desk alone."""
    latest = latest_per_key(snapshots)
    balances = [f for f in latest if f["type"] == "balance"]
    prices = [f for f in latest if f["type"] == "price"]
    sources = [f for f in latest if f["type"] == "source_status"]

    def ts(f: Fields) -> int:
        return int(f["ts"])

    def old(f: Fields) -> bool:
        return now - ts(f) > MAX_AGE_MS

    def failing(s: Fields) -> bool:
        return s["ok"] == "false" or old(s)

    def label(s: Fields) -> str:
        return f"source:{s['venue']}/{s['source']}" + (f"/{s['account']}" if "account" in s else "")

    def price_source_problems(name: str) -> list[str]:
        reports = [s for s in sources if s["source"] == name]
        if not reports:  # silence is not health: a price source that never reported
            return [f"source:*/{name}/never-reported"]
        return [label(s) for s in reports if failing(s)]

    def price_of(base: str, quote: str) -> tuple[Decimal | None, list[str]]:
        quotes = [p for p in prices if (p["base"], p["quote"]) == (base, quote)]
        if not quotes:
            return None, []
        fresh = [p for p in quotes if not old(p)]
        if len({p["source"] for p in fresh}) >= 2:
            low = min(Decimal(p["price"]) for p in fresh)
            high = max(Decimal(p["price"]) for p in fresh)
            if (high - low) * 100 > DIVERGENCE_PCT * low:
                return None, []
        pool = fresh or quotes
        newest = max(ts(p) for p in pool)
        chosen = min((p for p in pool if ts(p) == newest), key=lambda p: p["source"])
        stale = [f"price:{base}/{quote}@{chosen['source']}"] if old(chosen) else []
        stale += price_source_problems(chosen["source"])
        return Decimal(chosen["price"]), stale

    def unit(asset: str) -> tuple[Decimal | None, list[str]]:
        if asset in ("USD", "USDT"):  # the report currency; the peg of 1
            return Decimal(1), []
        if asset == "BTC":  # BTC/USDT, then the USDT peg
            return price_of("BTC", "USDT")
        return price_of(asset, "USD")

    rank = {"ok": 0, "stale": 1, "partial": 2, "failed": 3}
    view: View = {}
    accounts: dict[str, list[tuple[Decimal, str, list[str], list[str]]]] = {}
    with localcontext() as ctx:
        ctx.prec = 100
        for venue, account in sorted({(b["venue"], b["account"]) for b in balances}):
            vouching = [s for s in sources if s["venue"] == venue and s.get("account") in (None, account)]
            stale = [label(s) for s in vouching if failing(s)]
            if not vouching:  # silence is not health: a venue that never reported for the account
                stale.append(f"source:{venue}/never-reported/{account}")
            total, valued, missing = Decimal(0), 0, []
            for b in (b for b in balances if (b["venue"], b["account"]) == (venue, account)):
                if old(b):
                    stale.append(f"balance:{venue}/{account}/{b['asset']}")
                amount = Decimal(b["balance"]) + Decimal(b.get("unrealized_pnl", "0"))
                if amount == 0:
                    valued += 1
                    continue
                value, unit_stale = unit(b["asset"])
                if value is None:
                    missing.append(f"{venue}/{account}/{b['asset']}")
                    continue
                total += amount * value
                valued += 1
                stale += unit_stale
            status = "failed" if not valued else "partial" if missing else "stale" if stale else "ok"
            row = (total, status, missing, stale)
            accounts.setdefault(venue, []).append(row)
            view[f"account:{venue}/{account}"] = (total, status, tuple(sorted(missing)), tuple(sorted(set(stale))))
        everyone = [row for rows in accounts.values() for row in rows]
        for scope, rows in [(f"venue:{v}", r) for v, r in accounts.items()] + [("total", everyone)]:
            view[scope] = (
                sum((r[0] for r in rows), Decimal(0)),
                max((r[1] for r in rows), key=rank.__getitem__),
                tuple(sorted({m for r in rows for m in r[2]})),
                tuple(sorted({s for r in rows for s in r[3]})),
            )
    return view


def project(snapshots: Iterable[Snapshot]) -> View:
    return {
        s.scope_id: (s.nav, s.status, tuple(sorted(s.missing)), tuple(sorted(set(s.stale_sources)))) for s in snapshots
    }


def evaluate_inputs(inputs: Inputs, now: int = NOW) -> View:
    market = Market(CONFIG, inputs.quotes.values(), inputs.sources.values(), now)
    return project(evaluate(CONFIG, inputs.balances, market))


def test_the_recomputation_agrees_with_a_hand_worked_desk() -> None:
    """The reference itself, on a case worked out by hand (so it cannot be vacuously equal)."""

    def f(kind: str, ts: int, **fields: str) -> Fields:
        return {"type": kind, **fields, "ts": str(ts)}

    snaps = [
        f("balance", NOW - 1000, venue="binance", account="main", asset="BTC", balance="2", unrealized_pnl="0.5"),
        f("balance", NOW - 2000, venue="binance", account="main", asset="BTC", balance="9"),  # older: ignored
        f("balance", NOW - 61_000, venue="binance", account="main", asset="USDT", balance="10"),  # stale
        f("balance", NOW, venue="okx", account="main", asset="DOGE", balance="5"),  # never priced
        f("balance", NOW, venue="okx", account="main", asset="ETH", balance="1"),
        f("price", NOW, base="BTC", quote="USDT", source="spot", price="100"),
        f("price", NOW, base="BTC", quote="USDT", source="cg", price="101"),  # same ts: "cg" < "spot"
        f("price", NOW, base="BTC", quote="USD", source="spot", price="5000"),  # BTC has a route: unused
        f("price", NOW - 60_000, base="ETH", quote="USD", source="spot", price="10"),  # exactly max_age: fresh
        f("source_status", NOW - 60_000, venue="okx", source="spot", ok="true"),  # exactly max_age: fresh
        # binance never reported, and the BTC/USDT source chosen ("cg") never did either
    ]
    stale_binance = ("balance:binance/main/USDT", "source:*/cg/never-reported", "source:binance/never-reported/main")
    doge = ("okx/main/DOGE",)
    expected = {
        "account:binance/main": (Decimal("262.5"), "stale", (), stale_binance),
        "account:okx/main": (Decimal(10), "partial", doge, ()),
        "venue:binance": (Decimal("262.5"), "stale", (), stale_binance),
        "venue:okx": (Decimal(10), "partial", doge, ()),
        "total": (Decimal("272.5"), "partial", doge, stale_binance),
    }
    assert recompute(snaps) == expected
    inputs = Inputs()
    for fields in snaps:
        inputs.apply(decode_event(fields), NOW)
    assert evaluate_inputs(inputs) == expected
    # one millisecond later, everything exactly max_age old turns stale
    later = {"account:okx/main": (Decimal(10), "partial", doge, ("price:ETH/USD@spot", "source:okx/spot"))}
    assert {k: v for k, v in recompute(snaps, NOW + 1).items() if k == "account:okx/main"} == later
    assert {k: v for k, v in evaluate_inputs(inputs, NOW + 1).items() if k == "account:okx/main"} == later


# --- a: the plugin's overlay, without Redis -------------------------------------------------


def stored_inputs(store: dict[tuple[str, ...], Event]) -> Inputs:
    """What ``read_inputs`` would read back after the batch writes so far (every input received
    at NOW, the clock of these batches)."""
    inputs = Inputs()
    for e in store.values():
        if isinstance(e, Balance):
            inputs.balances.setdefault((e.venue, e.account), {})[e.asset] = Holding(
                e.balance, e.unrealized_pnl, e.ts, NOW
            )
        elif isinstance(e, Price):
            inputs.quotes[price_id(e.base, e.quote, e.source)] = Quote(e.base, e.quote, e.source, e.price, e.ts, NOW)
        elif isinstance(e, SourceStatus):
            inputs.sources[source_id(e.venue, e.source, e.account)] = SourceState(
                e.venue, e.source, e.account or None, e.ok, e.error or "", e.ts, NOW
            )
    return inputs


def member(e: Event) -> tuple[str, ...]:
    if isinstance(e, Balance):
        return ("balance", e.venue, e.account, e.asset)
    if isinstance(e, Price):
        return ("price", price_id(e.base, e.quote, e.source))
    assert isinstance(e, SourceStatus)
    return ("source", source_id(e.venue, e.source, e.account))


@st.composite
def overlay_cases(draw: Any) -> tuple[list[Fields], list[list[Fields]]]:
    c = DrawChooser(draw)
    snaps = make_snapshots(c)
    feed = make_feed(c, snaps)
    return snaps, chunks(feed, c.sizes(len(feed), 6))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(overlay_cases())
def test_batches_applied_over_stored_state_give_the_nav_of_the_latest_snapshots(
    case: tuple[list[Fields], list[list[Fields]]],
) -> None:
    snaps, batches = case
    store: dict[tuple[str, ...], Event] = {}
    overlay = Inputs()
    for batch in batches:
        events = [decode_event(f) for f in batch]
        overlay = stored_inputs(store)  # read_inputs: the state the earlier batches wrote
        for e in events:
            overlay.apply(e, NOW)
        for e in events:  # the batch write: last-ts-wins per member, an equal ts applies
            held = store.get(member(e))
            if held is None or held.ts <= e.ts:
                store[member(e)] = e
        written = stored_inputs(store)
        # what the plugin valued the batch on is what the next batch finds in Redis
        assert (overlay.balances, overlay.quotes, overlay.sources) == (
            written.balances,
            written.quotes,
            written.sources,
        )
    expected = recompute(snaps)
    assert evaluate_inputs(overlay) == expected
    assert evaluate_inputs(stored_inputs(store)) == expected


# --- b: through the real loop, on fakeredis -------------------------------------------------


def nav_app(backend: Backend, name: str, clock: ManualClock, batch_size: int = 500) -> App:
    """An app with the built-in plugins (nav configured for the desk above)."""
    overrides = {
        "redis": {"prefix": backend.prefix, "group": "g"},
        "consumer": {"name": name, "batch_size": batch_size},
    }
    settings_ = msgspec.structs.replace(load_settings(env={}, overrides=overrides), extra={"nav": NAV})
    return App.create(
        settings_, connect=backend.connect, clock=clock, plugins=build_plugin_manager(load_entrypoints=True, env={})
    )


async def publish(app: App, feed: Sequence[Fields]) -> None:
    pipe = app.redis.pipeline(transaction=False)
    for fields in feed:
        pipe.xadd(app.keys.events, fields)
    await pipe.execute()


async def drain(consumer: Consumer) -> int:
    total = 0
    while n := await consumer.step(block_ms=1):
        total += n
    return total


async def latest_view(app: App) -> View:
    return project((await read_latest(app)).values())


async def nav_after(backend: Backend, feed: Sequence[Fields], batch_size: int, name: str = "c") -> View:
    """Feed a fresh consumer, drain it, tick once; the NAV it leaves in P:state:nav:latest."""
    app = nav_app(backend, name, ManualClock(NOW), batch_size)
    try:
        consumer = Consumer(app)
        await consumer.setup()
        await publish(app, feed)
        assert await drain(consumer) == len(feed)
        await consumer.tick()
        assert (await app.redis.xpending(app.keys.events, app.group))["pending"] == 0
        return await latest_view(app)
    finally:
        await app.aclose()


@st.composite
def loop_cases(draw: Any) -> tuple[list[Fields], list[Fields], int]:
    c = DrawChooser(draw)
    snaps = make_snapshots(c)
    return snaps, make_feed(c, snaps), draw(st.integers(1, 7))


@settings(max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(loop_cases())
def test_the_loop_in_any_order_and_batching_leaves_the_nav_of_the_feed_in_order(
    case: tuple[list[Fields], list[Fields], int],
) -> None:
    snaps, feed, batch_size = case
    in_order = sorted(snaps, key=lambda f: int(f["ts"]))

    async def run() -> tuple[View, View]:
        shuffled = await nav_after(Backend("fake"), feed, batch_size)
        ordered = await nav_after(Backend("fake"), in_order, 500)
        return shuffled, ordered

    shuffled, ordered = asyncio.run(run())
    assert shuffled == ordered
    assert ordered == recompute(snaps)


# --- c: two consumers of one group, racing on a real Redis --------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_two_consumers_racing_converge_on_the_single_consumer_nav(real_backend: Backend, seed: int) -> None:
    chooser = RandomChooser(random.Random(seed))
    snaps = make_snapshots(chooser)
    feed = make_feed(chooser, snaps)
    clock = ManualClock(NOW)
    a_app, b_app = nav_app(real_backend, "a", clock, 3), nav_app(real_backend, "b", clock, 3)
    solo = Backend("real")
    try:
        a, b = Consumer(a_app), Consumer(b_app)
        await a.setup()
        await b.setup()
        await publish(a_app, feed)
        handled = await asyncio.gather(drain(a), drain(b))
        assert sum(handled) == len(feed)
        assert (await a_app.redis.xpending(a_app.keys.events, a_app.group))["pending"] == 0
        await a.tick()
        await b.tick()
        raced = await latest_view(b_app)

        single = await nav_after(solo, feed, 500, name="solo")
        assert raced == single
        assert single == recompute(snaps)
        # one more tick judges the same state at the same time: the same NAV, nothing to publish
        published = await a_app.redis.xlen(a_app.keys.nav)
        await a.tick()
        assert await latest_view(a_app) == single
        assert await a_app.redis.xlen(a_app.keys.nav) == published
    finally:
        await a_app.aclose()
        await b_app.aclose()
        await solo.cleanup()


def nav_hook(app: App, hook: str) -> Any:
    (impl,) = [i for i in hook_impls(app.pm, hook) if i.plugin_name == "nav"]
    return impl


async def handled_alone(app: App, entries: Sequence[Fields]) -> Outputs:
    """The nav plugin's outputs for one batch, not yet written (as the loop holds them)."""
    out = Outputs(app.clock.now_ms())
    events = [decode_event(f) for f in entries]
    await await_me_maybe(call_impl(nav_hook(app, "navstream_events"), {"app": app, "events": events, "out": out}))
    return out


def bal(venue: str, account: str, asset: str, amount: str, ts: int = NOW) -> Fields:
    return {"type": "balance", "venue": venue, "account": account, "asset": asset, "balance": amount, "ts": str(ts)}


async def test_a_consumer_that_raced_another_values_what_both_wrote(backend: Backend) -> None:
    """Two consumers value a batch each from what they hold before either writes; whichever
    writes last must not go on trusting a copy that lacks the other's batch (its stamp is taken
    only if nobody wrote since it read), so its next tick values what both wrote."""
    clock = ManualClock(NOW)
    a_app, b_app = nav_app(backend, "a", clock), nav_app(backend, "b", clock)
    try:
        a, b = Consumer(a_app), Consumer(b_app)
        await a.setup()
        await b.setup()
        base = [bal("binance", "main", "USD", "1", NOW - 3), bal("binance", "main", "USDT", "1", NOW - 3)]
        await publish(a_app, base)
        assert await drain(a) == 2  # a holds a copy, stamped
        await b.tick()  # b reads everything and holds a copy too; a's stamp is gone
        first = bal("binance", "main", "USD", "100", NOW - 2)
        second = bal("binance", "main", "USDT", "10", NOW - 1)
        out_a = await handled_alone(a_app, [first])  # a reads afresh: its stamp is not there
        out_b = await handled_alone(b_app, [second])  # b trusts its copy: its stamp is there
        await Writer(a_app).write(BatchWrite(out_a))
        await Writer(b_app).write(BatchWrite(out_b))  # last, over a state its copy lacks
        expected = recompute([*base, first, second])
        assert expected["account:binance/main"][0] == Decimal(110)

        await b.tick()  # a tick values what Redis holds, whoever wrote it
        assert await latest_view(b_app) == expected
    finally:
        await a_app.aclose()
        await b_app.aclose()

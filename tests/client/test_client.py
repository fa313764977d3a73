"""``navstream.client``: the engine's RiskClient against the real gate, on fakeredis and a real Redis.

The gate is the real consumer loop with the built-in plugins (nav computes the NAV, risk
decides), driven step by step. Its clock is a ManualClock set to the wall time when the test
starts: the client stamps orders with wall time, and the consumer refuses an order stamped too
far ahead of its own clock. The client's deadlines are wall time too, kept to tens of ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import fakeredis
import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from support import ROOT, Backend, run_step

from navstream.app import App, ManualClock
from navstream.client import ClientDecision, RiskClient, SendError, fields_hash, order_fields
from navstream.loop.consumer import Consumer

SECTIONS: dict[str, Any] = {
    "nav": {
        "pegs": {"USDT": "1"},
        "routes": {"BTC": "BTC/USDT"},
        "accounts": [{"venue": "binance", "account": "main", "kind": "futures"}],
    },
}
ORDER: dict[str, Any] = {
    "venue": "binance",
    "account": "main",
    "symbol": "BTCUSDT",
    "side": "buy",
    "qty": Decimal("0.1"),
    "price": "50000",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def funded(ts: int) -> list[dict[str, str]]:
    """binance/main holds 1,000,000 USDT, BTC is 50,000 USDT, the venue's source is healthy."""
    return [
        {
            "type": "balance",
            "venue": "binance",
            "account": "main",
            "asset": "USDT",
            "balance": "1000000",
            "ts": str(ts),
        },
        {"type": "price", "base": "BTC", "quote": "USDT", "price": "50000", "source": "binance-spot", "ts": str(ts)},
        {
            "type": "source_status",
            "venue": "binance",
            "source": "binance-futures",
            "account": "main",
            "ok": "true",
            "ts": str(ts),
        },
        # the price source reports too (a price whose source never reported is stale)
        {"type": "source_status", "venue": "binance", "source": "binance-spot", "ok": "true", "ts": str(ts)},
    ]


Gate = Callable[..., Awaitable[tuple[App, Consumer]]]


@pytest.fixture
async def gate(make_app: Any) -> AsyncIterator[Gate]:
    """``await gate(fund=True)``: the real gate (nav and risk plugins), its clock at wall time,
    funded so its NAV is ok unless told not to be; shut down afterwards (the audit log thread)."""
    consumers: list[Consumer] = []

    async def factory(*, fund: bool = True) -> tuple[App, Consumer]:
        clock = ManualClock(now_ms())
        app = make_app(builtins=True, extra=SECTIONS, clock=clock)
        consumer = Consumer(app)
        consumers.append(consumer)
        await consumer.setup()
        if fund:
            await run_step(app, consumer, *funded(clock.now_ms() - 1_000))
        return app, consumer

    yield factory
    for consumer in consumers:
        await consumer.shutdown()


async def answered(consumer: Consumer, call: Awaitable[ClientDecision], orders: int = 1) -> ClientDecision:
    """Await ``call`` while the gate answers the ``orders`` it sends."""
    task = asyncio.ensure_future(call)
    await serve(consumer, orders)
    return await task


async def serve(consumer: Consumer, orders: int) -> None:
    """Step the gate until it has handled ``orders`` orders (events already handled are not
    counted: the orders stream is the only one with news)."""
    app = consumer.app
    deadline = time.monotonic() + 2
    while await decisions_count(app) < orders:
        assert time.monotonic() < deadline, "the gate did not answer in time"
        if not await consumer.step(block_ms=5):
            await asyncio.sleep(0.001)


async def decisions_count(app: App) -> int:
    return int(await app.redis.xlen(app.keys.stream("decisions")))


@pytest.fixture
async def clients(backend: Backend) -> AsyncIterator[Callable[..., RiskClient]]:
    """``clients()``: a RiskClient on the test's backend and prefix, closed with its connection."""
    made: list[RiskClient] = []

    def factory(decode_responses: bool = True, resp3: bool = False) -> RiskClient:
        redis = backend.connect(decode_responses)
        if resp3:
            redis = (
                fakeredis.FakeAsyncRedis(server=backend._server, decode_responses=decode_responses, protocol=3)
                if backend.kind == "fake"
                else aioredis.Redis.from_url(backend.url, decode_responses=decode_responses, protocol=3)
            )
        client = RiskClient(redis, prefix=backend.prefix)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()
        await client.redis.aclose()


# --- answers from the gate ----------------------------------------------------------------------


@pytest.mark.parametrize(("decode_responses", "resp3"), [(True, False), (False, False), (True, True)])
async def test_an_order_is_approved_end_to_end(gate: Gate, clients: Any, decode_responses: bool, resp3: bool) -> None:
    app, consumer = await gate()
    client = clients(decode_responses, resp3)
    d = await answered(consumer, client.decide(order_id="o-1", **ORDER, deadline_s=2))
    assert d == ClientDecision("o-1", "approve", [], "active", "1000000", "ok", 1_000, app.clock.now_ms())
    assert d.approved and not d.timed_out
    ((_, sent),) = await app.redis.xrange(app.keys.orders)
    assert sent == {
        "type": "order",
        "order_id": "o-1",
        "venue": "binance",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": "0.1",
        "price": "50000",
        "reduce_only": "false",
        "ts": sent["ts"],
    }
    assert abs(int(sent["ts"]) - now_ms()) < 5_000  # epoch ms, wall time


async def test_an_order_without_a_nav_is_vetoed_with_the_gates_reasons(gate: Gate, clients: Any) -> None:
    _, consumer = await gate(fund=False)
    d = await answered(consumer, clients().decide(order_id="o-1", **ORDER, deadline_s=2))
    assert (d.decision, d.nav, d.nav_status, d.nav_age_ms, d.timed_out) == ("veto", "", "missing", 0, False)
    assert d.reasons[0] == "nav_missing" and not d.approved


async def test_amounts_are_sent_as_exact_plain_decimals(gate: Gate, clients: Any) -> None:
    app, consumer = await gate()
    order = {**ORDER, "qty": "1E-8", "price": Decimal("5.00000E+4"), "side": "sell", "reduce_only": True}
    await answered(consumer, clients().decide(order_id="o-1", **order, deadline_s=2))
    ((_, sent),) = await app.redis.xrange(app.keys.orders)
    assert (sent["qty"], sent["price"], sent["side"], sent["reduce_only"]) == ("0.00000001", "50000.0", "sell", "true")


# --- no answer in time ----------------------------------------------------------------------------


async def test_no_gate_means_a_deadline_veto_and_the_order_stays_queued(backend: Backend, clients: Any) -> None:
    client = clients()
    started = time.monotonic()
    d = await client.decide(order_id="o-1", **ORDER, deadline_s=0.05)
    assert 0.05 <= time.monotonic() - started < 0.5
    assert (d.order_id, d.decision, d.reasons, d.timed_out) == ("o-1", "veto", ["deadline"], True)
    assert (d.nav, d.nav_status, d.trading_state, d.nav_age_ms) == ("", "unknown", "unknown", 0)
    assert not d.approved
    ((_, sent),) = await client.redis.xrange(client.keys.orders)
    assert sent["order_id"] == "o-1" and sent["qty"] == "0.1"
    assert client._waiters == {}


async def test_a_late_answer_is_given_again_to_the_same_order_id(gate: Gate, clients: Any) -> None:
    _, consumer = await gate()
    client = clients()
    late = await client.decide(order_id="o-1", **ORDER, deadline_s=0.02)
    assert late.reasons == ["deadline"]
    await serve(consumer, 1)  # the gate comes back and answers, too late for that call
    again = await answered(consumer, client.decide(order_id="o-1", **ORDER, deadline_s=2), orders=2)
    assert again.decision == "approve" and not again.timed_out


# --- an order_id sent again -----------------------------------------------------------------------


async def test_a_resent_order_id_gets_the_stored_decision_even_from_a_new_client(gate: Gate, clients: Any) -> None:
    app, consumer = await gate()
    first = await answered(consumer, clients().decide(order_id="o-1", **ORDER, deadline_s=2))
    assert first.decision == "approve"
    # A client started after the decision, with no gate running: the stored decision answers
    # the same intent sent again...
    later = clients()
    await later.start()
    assert await later.decide(order_id="o-1", **ORDER, deadline_s=0.5) == first
    # ...but never the same id with other content (issue 13): no answer to it is stored, so
    # the deadline vetoes; the gate itself refuses it as a reused id.
    bigger = {**ORDER, "qty": "1000"}
    alone = await later.decide(order_id="o-1", **bigger, deadline_s=0.3)
    assert (alone.decision, alone.reasons, alone.timed_out) == ("veto", ["deadline"], True)
    reused = await answered(consumer, later.decide(order_id="o-1", **bigger, deadline_s=2), orders=4)
    assert (reused.decision, reused.reasons, reused.timed_out) == ("veto", ["order_id_reused"], False)
    # With the gate running, its repeat on the stream says the same as the first answer.
    assert await answered(consumer, later.decide(order_id="o-1", **ORDER, deadline_s=2), orders=5) == first
    assert await app.redis.xlen(app.keys.orders) == 5


async def test_an_answer_written_before_the_readers_first_read_is_not_missed(
    gate: Gate, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, consumer = await gate()
    client = clients()
    xread = client.redis.xread
    gate_answered = asyncio.Event()

    async def slow_first_read(*args: Any, **kwargs: Any) -> Any:
        await gate_answered.wait()  # the reader is scheduled late, after the gate answered
        return await xread(*args, **kwargs)

    async def nothing_stored(*args: Any) -> None:
        return None  # so only the stream can bring the answer

    monkeypatch.setattr(client.redis, "xread", slow_first_read)
    monkeypatch.setattr(client.redis, "hget", nothing_stored)
    task = asyncio.ensure_future(client.decide(order_id="o-1", **ORDER, deadline_s=2))
    await serve(consumer, 1)
    gate_answered.set()
    assert (await task).decision == "approve"


# --- many at once ---------------------------------------------------------------------------------


async def test_fifty_concurrent_calls_share_one_reader_and_each_gets_its_own_answer(gate: Gate, clients: Any) -> None:
    _, consumer = await gate()
    client = clients()
    # odd ids ask for 100 BTC (5,000,000 USD: over the notional and NAV limits), even ones 0.1
    calls = [
        client.decide(order_id=f"o-{i}", **{**ORDER, "qty": "100" if i % 2 else "0.1"}, deadline_s=2) for i in range(50)
    ]
    task = asyncio.gather(*calls)
    await serve(consumer, 50)
    results = await task
    assert [d.order_id for d in results] == [f"o-{i}" for i in range(50)]
    assert [d.decision for d in results] == ["veto" if i % 2 else "approve" for i in range(50)]
    assert all("order_notional" in d.reasons for d in results[1::2])
    assert client._waiters == {}
    readers = [t for t in asyncio.all_tasks() if t.get_name().startswith("navstream-client:")]
    assert len(readers) == 1


# --- refused before sending -----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["qty", "price"])
async def test_a_float_amount_is_refused_and_nothing_is_sent(clients: Any, field: str) -> None:
    client = clients()
    with pytest.raises(TypeError, match=f"`{field}` must be a Decimal or str, not a float"):
        await client.decide(order_id="o-1", **{**ORDER, field: 0.1}, deadline_s=1)
    assert await client.redis.xlen(client.keys.orders) == 0


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"qty": "0"}, "`qty` must be positive"),
        ({"qty": "-1"}, "`qty` must be positive"),
        ({"qty": "NaN"}, "`qty`: 'NaN' is not a decimal number"),
        ({"qty": Decimal("Infinity")}, "`qty`: 'Infinity' is not a finite number"),
        ({"qty": "0.1.2"}, "`qty`: '0.1.2' is not a decimal number"),
        ({"qty": " 1"}, "`qty`: ' 1' is not a decimal number: whitespace"),
        ({"qty": "１２"}, "`qty`: '１２' is not a decimal number: non-ASCII"),
        ({"price": "5e999994"}, "`price`: '5e999994'"),
        ({"price": "0"}, "`price` must be positive"),
        ({"side": "hold"}, "side"),
        ({"venue": ""}, "venue"),
        ({"symbol": ""}, "symbol"),
        ({"order_id": ""}, "order_id"),
        ({"order_id": "x" * 257}, "order_id"),
    ],
)
async def test_an_invalid_order_is_refused_and_nothing_is_sent(
    clients: Any, change: dict[str, Any], error: str
) -> None:
    client = clients()
    with pytest.raises(ValueError, match=error):
        await client.decide(**{"order_id": "o-1", **ORDER, **change}, deadline_s=1)
    assert await client.redis.xlen(client.keys.orders) == 0


@pytest.mark.parametrize("change", [{"qty": 1}, {"order_id": 7}, {"reduce_only": "true"}])
async def test_a_wrong_type_is_refused(clients: Any, change: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        await clients().decide(**{"order_id": "o-1", **ORDER, **change}, deadline_s=1)


@pytest.mark.parametrize("deadline_s", [0, -1, float("nan"), float("inf")])
async def test_a_deadline_must_be_a_positive_number_of_seconds(clients: Any, deadline_s: float) -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        await clients().decide(order_id="o-1", **ORDER, deadline_s=deadline_s)


# --- Redis trouble --------------------------------------------------------------------------------


async def test_the_reader_survives_a_connection_error(
    gate: Gate, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, consumer = await gate()
    client = clients()
    xread = client.redis.xread
    failures: list[int] = []

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise RedisConnectionError("connection reset by peer")
        return await xread(*args, **kwargs)

    monkeypatch.setattr(client.redis, "xread", fails_once)
    monkeypatch.setattr(client.redis, "hget", _none)  # the answer must come through the reader
    d = await answered(consumer, client.decide(order_id="o-1", **ORDER, deadline_s=2))
    assert failures and d.decision == "approve"
    assert not client._failing


async def test_a_reader_that_keeps_failing_vetoes_with_client_error(
    clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = clients()

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(client.redis, "xread", down)
    d = await client.decide(order_id="o-1", **ORDER, deadline_s=0.1)
    assert (d.decision, d.reasons, d.timed_out) == ("veto", ["client_error"], True)


async def test_an_error_while_sending_raises(clients: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = clients()

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(client.redis, "xadd", refused)
    with pytest.raises(SendError, match="'o-1' not confirmed sent"):
        await client.decide(order_id="o-1", **ORDER, deadline_s=1)
    assert client._waiters == {}


async def test_an_unreadable_stored_decision_vetoes(clients: Any) -> None:
    client = clients()
    await client.redis.hset(client.keys.state("risk", "decisions"), "o-1", "not json")
    d = await client.decide(order_id="o-1", **ORDER, deadline_s=1)
    assert (d.decision, d.reasons, d.timed_out) == ("veto", ["client_error"], False)


async def test_a_stored_decision_is_parsed_as_the_gate_stores_it(clients: Any) -> None:
    client = clients()
    fields = [
        "order_id",
        "o-1",
        "decision",
        "veto",
        "reasons",
        "nav_stale,rate_limited",
        "trading_state",
        "reducing",
        "nav",
        "12.50",
        "nav_status",
        "ok",
        "nav_age_ms",
        "61000",
        "ts",
        "1790000000000",
        "order_hash",
        fields_hash(order_fields(order_id="o-1", **ORDER, reduce_only=False, ts=now_ms())),
    ]
    await client.redis.hset(client.keys.state("risk", "decisions"), "o-1", msgspec.json.encode(fields))
    d = await client.decide(order_id="o-1", **ORDER, deadline_s=1)
    assert d == ClientDecision(
        "o-1", "veto", ["nav_stale", "rate_limited"], "reducing", "12.50", "ok", 61_000, 1_790_000_000_000
    )


async def test_a_stored_approval_of_other_content_or_of_no_known_content_is_never_taken(clients: Any) -> None:
    client = clients()
    approval = [
        "order_id",
        "o-1",
        "decision",
        "approve",
        "reasons",
        "",
        "trading_state",
        "active",
        "nav",
        "1",
        "nav_status",
        "ok",
        "nav_age_ms",
        "1",
        "ts",
        "1790000000000",
    ]
    key = client.keys.state("risk", "decisions")
    for stored in (approval, approval + ["order_hash", "0" * 64]):  # no hash (an old gate), another's hash
        await client.redis.hset(key, "o-1", msgspec.json.encode(stored))
        d = await client.decide(order_id="o-1", **ORDER, deadline_s=0.2)
        assert (d.decision, d.reasons, d.approved) == ("veto", ["deadline"], False)


# --- lifecycle ------------------------------------------------------------------------------------


async def test_close_stops_the_reader_and_vetoes_what_still_waits(clients: Any) -> None:
    client = clients()
    task = asyncio.ensure_future(client.decide(order_id="o-1", **ORDER, deadline_s=30))
    while await client.redis.xlen(client.keys.orders) == 0:
        await asyncio.sleep(0.001)
    reader = client._reader
    started = time.monotonic()
    await client.aclose()
    d = await task
    assert time.monotonic() - started < 0.5
    assert (d.decision, d.reasons) == ("veto", ["client_error"])
    assert reader is not None and reader.done()
    with pytest.raises(RuntimeError, match="closed"):
        await client.decide(order_id="o-2", **ORDER, deadline_s=1)
    assert await client.redis.xlen(client.keys.orders) == 1


@pytest.mark.parametrize("yields", [0, 1, 2, 5])
async def test_close_right_after_start_stops_the_reader(clients: Any, yields: int) -> None:
    # Closing while the reader sends its first XREAD: on Python 3.11 a single cancel can be
    # swallowed there (asyncio.wait_for inside redis-py), so aclose() cancels until it is done.
    client = clients()
    await client.start()
    reader = client._reader
    for _ in range(yields):
        await asyncio.sleep(0)
    await asyncio.wait_for(client.aclose(), 1)
    assert reader is not None and reader.done()


@pytest.mark.real_redis
async def test_connect_owns_its_connection(real_backend: Backend) -> None:
    async with RiskClient.connect(real_backend.url, real_backend.prefix) as client:
        d = await client.decide(order_id="o-1", **ORDER, deadline_s=0.02)
        assert d.reasons == ["deadline"]
        assert await client.redis.xlen(client.keys.orders) == 1
    assert client._reader is None
    assert not any(c.is_connected for c in client.redis.connection_pool._available_connections)


async def _none(*args: Any, **kwargs: Any) -> None:
    return None


def test_the_order_hash_is_what_docs_risk_client_md_teaches_other_languages() -> None:
    """The documented example, computed the documented way (netstrings, then SHA-256), is what
    the gate and this client compute, whatever the amounts' spelling."""
    import hashlib

    from navstream.contract.fingerprint import order_hash

    netstrings = b"7:binance,4:main,7:BTCUSDT,3:buy,4:0.01,5:97000,5:false,"
    documented = hashlib.sha256(netstrings).hexdigest()
    assert documented in (ROOT / "docs" / "risk-client.md").read_text()
    for qty, price in (("0.01", "97000"), ("0.010", "97000.00"), ("1E-2", "9.7E+4")):
        assert (
            order_hash(
                venue="binance",
                account="main",
                symbol="BTCUSDT",
                side="buy",
                qty=Decimal(qty),
                price=Decimal(price),
                reduce_only=False,
            )
            == documented
        )
    assert (
        order_hash(
            venue="binance",
            account="main",
            symbol="BTCUSDT",
            side="buy",
            qty=Decimal("0.01"),
            price=None,
            reduce_only=False,
        )
        != documented
    )
    assert (
        order_hash(
            venue="binance",
            account="main",
            symbol="BTCUSDT",
            side="sell",
            qty=Decimal("0.01"),
            price=Decimal("97000"),
            reduce_only=False,
        )
        != documented
    )


def test_the_decision_stores_are_the_contracts_one_definition() -> None:
    """The client reads, and the risk gate writes, the keys the contract names, from the one
    definition in navstream.contract.keys (docs/contract.md, docs/risk-client.md)."""
    from navstream.contract.keys import DECISION_STORE, REUSED_STORE, Keys
    from navstream.plugins.risk import state

    client = RiskClient(aioredis.Redis(), prefix="desk")
    assert client._decisions_key == "desk:state:risk:decisions" == Keys("desk").state(state.DECISIONS)
    assert client._reused_key == "desk:state:risk:reused" == Keys("desk").state(state.REUSED)
    assert (state.DECISIONS, state.REUSED) == (DECISION_STORE, REUSED_STORE)
    clustered = RiskClient(aioredis.Redis(), prefix="desk", cluster=True)
    assert clustered._decisions_key == "{desk}:state:risk:decisions"

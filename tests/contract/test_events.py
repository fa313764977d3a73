"""The decoder: every entry becomes an event or a DecodeError that names the field; never a crash."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import START_MS

from navstream import Event, Outputs, hookimpl
from navstream.contract import numbers
from navstream.contract.events import (
    EVENT_TYPES,
    Balance,
    DecodeError,
    InvalidOrder,
    Order,
    Position,
    Price,
    SourceStatus,
    decode_event,
    decode_order,
    encode_fields,
)
from navstream.loop.consumer import Consumer

TS = "1790000000000"


def balance(**over: str) -> dict[str, str]:
    return {
        "type": "balance",
        "venue": "binance",
        "account": "futures",
        "asset": "USDT",
        "balance": "1234.5",
        "ts": TS,
        **over,
    }


def test_balance_decodes_money_as_exact_decimal() -> None:
    event = decode_event(balance(balance="0.1", unrealized_pnl="-12.000000000000000001"))
    assert isinstance(event, Balance)
    assert event.balance == Decimal("0.1")
    assert event.unrealized_pnl == Decimal("-12.000000000000000001")
    assert event.ts == int(TS)


def test_unrealized_pnl_defaults_to_zero_and_unknown_fields_are_ignored() -> None:
    event = decode_event(balance(producer_version="7", note="x"))
    assert event == Balance(ts=int(TS), venue="binance", account="futures", asset="USDT", balance=Decimal("1234.5"))


def test_bytes_entries_decode_like_strings() -> None:
    fields = {k.encode(): v.encode() for k, v in balance().items()}
    assert decode_event(fields) == decode_event(balance())


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"type": "price", "base": "BTC", "quote": "USDT", "price": "97000", "source": "x", "ts": TS}, Price),
        (
            {
                "type": "position",
                "venue": "b",
                "account": "a",
                "symbol": "BTCUSDT",
                "qty": "-0.5",
                "entry_price": "96000",
                "mark_price": "97000",
                "ts": TS,
            },
            Position,
        ),
        (
            {"type": "source_status", "venue": "b", "source": "spot", "ok": "false", "error": "429", "ts": TS},
            SourceStatus,
        ),
    ],
)
def test_each_event_type(fields: dict[str, str], names: type) -> None:
    event = decode_event(fields)
    assert type(event) is names
    # encode_fields is the inverse, as a producer would write it
    assert decode_event(encode_fields(event)) == event


@pytest.mark.parametrize("text,expected", [("true", True), ("false", False), ("1", True), ("0", False)])
def test_booleans(text: str, expected: bool) -> None:
    event = decode_event({"type": "source_status", "venue": "b", "source": "s", "ok": text, "ts": TS})
    assert event.ok is expected


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"venue": "binance"}, "type", "missing field `type`"),
        (balance(type="trade"), "type", "unknown type 'trade'"),
        ({k: v for k, v in balance().items() if k != "asset"}, "asset", "missing required field `asset`"),
        (balance(balance="12,5"), "balance", "field `balance`"),
        (balance(balance="NaN"), "balance", "finite"),
        (balance(balance="Infinity"), "balance", "finite"),
        (balance(venue=""), "venue", "field `venue`"),
        (balance(ts="1790000000"), "ts", "seconds"),
        (balance(ts="1790000000000.5"), "ts", "field `ts`"),
        (balance(ts="99999999999999"), None, "out of range"),
        ({"type": "price", "base": "BTC", "quote": "USDT", "price": "0", "source": "x", "ts": TS}, None, "positive"),
        ({"type": "source_status", "venue": "b", "source": "s", "ok": "maybe", "ts": TS}, "ok", "field `ok`"),
    ],
)
def test_bad_entries_name_the_field(fields: dict[str, str], field: str | None, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(fields)
    assert fragment in info.value.reason
    if field is not None:
        assert info.value.field == field


def test_invalid_utf8_is_a_decode_error() -> None:
    fields = {b"type": b"balance", b"venue": b"\xff\xfe", b"ts": TS.encode()}
    with pytest.raises(DecodeError, match="UTF-8"):
        decode_event(fields)


def test_order_decodes_and_a_broken_order_with_an_id_is_answerable() -> None:
    good = {
        "type": "order",
        "order_id": "o-1",
        "venue": "binance",
        "account": "f",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": "0.25",
        "reduce_only": "true",
        "ts": TS,
    }
    order = decode_order(good)
    assert isinstance(order, Order) and order.reduce_only and order.price is None
    bad = decode_order({**good, "side": "hold"})
    assert isinstance(bad, InvalidOrder)
    assert bad.order_id == "o-1" and "side" in bad.reason and bad.fields["side"] == "hold"
    assert isinstance(decode_order({**good, "qty": "-1"}), InvalidOrder)


def test_an_order_without_an_id_cannot_be_answered() -> None:
    with pytest.raises(DecodeError, match="order_id"):
        decode_order({"type": "order", "side": "buy", "ts": TS})


def test_an_order_on_the_events_stream_is_an_unknown_type() -> None:
    with pytest.raises(DecodeError, match="unknown type 'order'"):
        decode_event({"type": "order", "order_id": "x", "ts": TS})


text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["balance", "price", "position", "source_status", "order", TS, "1.5", "-0", "NaN", "true", "", "1e400"]
    ),
)
keys = st.one_of(
    st.sampled_from(
        [
            "type",
            "venue",
            "account",
            "asset",
            "balance",
            "unrealized_pnl",
            "ts",
            "base",
            "quote",
            "price",
            "source",
            "symbol",
            "qty",
            "entry_price",
            "ok",
            "error",
            "order_id",
            "side",
        ]
    ),
    st.text(max_size=10),
)
#: Entries of each type as the contract has them, for the fuzz to damage.
VALID = {
    "balance": {
        "type": "balance",
        "venue": "binance",
        "account": "spot",
        "asset": "BTC",
        "balance": "1.25",
        "unrealized_pnl": "-0.5",
        "ts": TS,
    },
    "price": {"type": "price", "base": "BTC", "quote": "USDT", "price": "65000.01", "source": "binance-spot", "ts": TS},
    "position": {
        "type": "position",
        "venue": "binance",
        "account": "futures",
        "symbol": "BTCUSDT",
        "qty": "-0.3",
        "entry_price": "64000",
        "ts": TS,
    },
    "source_status": {"type": "source_status", "venue": "binance", "source": "rest", "ok": "true", "ts": TS},
    "order": {
        "type": "order",
        "order_id": "o-1",
        "venue": "binance",
        "account": "spot",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": "0.1",
        "price": "65000",
        "ts": TS,
    },
}
amounts = st.one_of(
    text,
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(["１２", "5e999994", "0x10", " 1", "1_0"]),
)


@st.composite
def damaged(draw: st.DrawFn) -> dict[str, str]:
    """A valid entry of some type with a few fields replaced by anything, or dropped."""
    fields = dict(VALID[draw(st.sampled_from(sorted(VALID)))])
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        if draw(st.booleans()):
            fields[name] = draw(amounts)
        else:
            del fields[name]
    return fields


entries = st.one_of(
    damaged(),
    st.dictionaries(keys, text, max_size=12),
    st.dictionaries(st.binary(max_size=8), st.binary(max_size=16), max_size=8),
)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _refused_well(exc: DecodeError) -> None:
    """A refusal gives a reason that names the field at fault, when it blames one."""
    assert exc.reason and str(exc) == exc.reason
    if exc.field is not None:
        assert exc.field in exc.reason, (exc.field, exc.reason)


@settings(max_examples=1500, deadline=None)
@given(entries)
def test_fuzz_any_entry_gives_an_exact_event_or_a_reason_naming_its_field(fields: dict) -> None:
    """Whatever a producer writes: an event of the type it names, which survives re-encoding
    unchanged (nothing rounded, nothing invented), or a refusal that names the field at fault.
    An order-shaped entry is answered (an Order, or an InvalidOrder carrying its own id)."""
    try:
        event = decode_event(fields)
    except DecodeError as exc:
        _refused_well(exc)
    else:
        named = {_text(k): _text(v) for k, v in fields.items()}.get("type")
        assert type(event).__name__.lower().replace("sourcestatus", "source_status") == named
        assert decode_event(encode_fields(event)) == event
        _kept_as_given(fields, encode_fields(event))
    try:
        order = decode_order(fields)
    except DecodeError as exc:
        _refused_well(exc)
    else:
        given_id = {_text(k): _text(v) for k, v in fields.items()}.get("order_id")
        assert order.order_id == given_id and order.order_id
        if isinstance(order, InvalidOrder):
            assert order.reason and order.fields.get("order_id") == given_id
        else:
            assert decode_order(encode_fields(order)) == order
            _kept_as_given(fields, encode_fields(order))


def _kept_as_given(fields: dict, encoded: dict[str, str]) -> None:
    """Every field the event carries is the producer's: the same text, or for an amount the
    same number exactly (``1.50`` may come back as ``1.5``, never as ``1.5000001``)."""
    given = {_text(k): _text(v) for k, v in fields.items()}
    for name, value in encoded.items():
        if name not in given or given[name] is None:
            continue  # a default the producer left out
        held = given[name]
        if held == value:
            continue
        if value in ("true", "false"):  # a flag: its accepted spellings come back as one
            assert held.strip().lower() in {"true": ("true", "1"), "false": ("false", "0")}[value], (name, held)
            continue
        assert Decimal(held) == Decimal(value), (name, held, value)


@settings(max_examples=300, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(1_000_000_000_000, 9_999_999_999_999))
def test_fuzz_balances_round_trip_exactly_within_the_bounds(amount: Decimal, ts: int) -> None:
    """``str(Decimal)`` (exponent form and all) decodes to the same Decimal, if it keeps the bounds."""
    fields = balance(balance=str(amount), ts=str(ts))
    if numbers.decimal_refusal(amount):
        with pytest.raises(DecodeError) as info:
            decode_event(fields)
        assert info.value.field == "balance" and "out of bounds" in info.value.reason
        return
    event = decode_event(fields)
    assert event.balance == amount and event.ts == ts
    assert decode_event(encode_fields(event)) == event  # and its plain form too


# --- the number grammar, field by field (navstream.contract.numbers; tests/contract/test_numbers.py has the rest) -----

#: Texts Decimal() reads (or reads as an overflow waiting to happen) that the grammar refuses.
BAD_AMOUNTS = [
    " 1",
    "1 ",
    "1_000",
    "+5",
    "１２",
    "١٢",
    "5e999994",
    "1e-999999",
    "NaN",
    "Infinity",
    "-Infinity",
    "",
    ".5",
    "5.",
    "007",
    "1" * 31,
    "0." + "1" * 31,
    "9" * 20 + "." + "9" * 19,
    "1" * 5000,
]
#: Every amount field of the wire, in an entry that is otherwise valid.
AMOUNT_FIELDS = [
    ("balance", balance()),
    ("unrealized_pnl", balance(unrealized_pnl="1.5")),
    (
        "qty",
        {
            "type": "position",
            "venue": "b",
            "account": "a",
            "symbol": "BTCUSDT",
            "qty": "-0.5",
            "entry_price": "96000",
            "ts": TS,
        },
    ),
    (
        "entry_price",
        {
            "type": "position",
            "venue": "b",
            "account": "a",
            "symbol": "BTCUSDT",
            "qty": "-0.5",
            "entry_price": "96000",
            "ts": TS,
        },
    ),
    (
        "mark_price",
        {
            "type": "position",
            "venue": "b",
            "account": "a",
            "symbol": "BTCUSDT",
            "qty": "-0.5",
            "entry_price": "96000",
            "mark_price": "97000",
            "ts": TS,
        },
    ),
    (
        "unrealized_pnl",
        {
            "type": "position",
            "venue": "b",
            "account": "a",
            "symbol": "BTCUSDT",
            "qty": "-0.5",
            "entry_price": "96000",
            "unrealized_pnl": "12",
            "ts": TS,
        },
    ),
    ("price", {"type": "price", "base": "BTC", "quote": "USDT", "price": "97000", "source": "x", "ts": TS}),
]
ORDER = {
    "type": "order",
    "order_id": "o-1",
    "venue": "binance",
    "account": "f",
    "symbol": "BTCUSDT",
    "side": "buy",
    "qty": "0.25",
    "price": "97000",
    "ts": TS,
}


def test_every_amount_field_is_checked_by_the_grammar() -> None:
    """The decoder finds the amount fields itself: a Decimal field added later is checked too."""
    assert {(e["type"], f) for f, e in AMOUNT_FIELDS} == {
        (kind, name)
        for kind, cls in EVENT_TYPES.items()
        for name, t in cls.__annotations__.items()
        if "Decimal" in str(t)
    }


@pytest.mark.parametrize("bad", BAD_AMOUNTS, ids=[repr(b)[:20] for b in BAD_AMOUNTS])
@pytest.mark.parametrize(("field", "fields"), AMOUNT_FIELDS, ids=[f"{e['type']}.{f}" for f, e in AMOUNT_FIELDS])
def test_a_bad_amount_is_refused_naming_its_field(field: str, fields: dict[str, str], bad: str) -> None:
    assert decode_event(fields)  # the entry is valid as it is
    with pytest.raises(DecodeError) as info:
        decode_event({**fields, field: bad})
    assert info.value.field == field
    assert info.value.reason.startswith(f"field `{field}`: ") and "\n" not in info.value.reason
    assert len(info.value.reason) < 300  # one short line, whatever the length of the value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1E-8", "0.00000001"),
        ("0E-8", "0.00000000"),
        ("-1E-8", "-0.00000001"),
        ("1.5E+3", "1500"),
        ("0.000000000000000001", "0.000000000000000001"),
    ],
)
def test_amounts_in_exponent_form_within_the_bounds_decode(text: str, value: str) -> None:
    event = decode_event(balance(balance=text))
    assert isinstance(event, Balance) and event.balance == Decimal(value)
    assert encode_fields(event)["balance"] == format(Decimal(text), "f")  # written back plain


@pytest.mark.parametrize("bad", BAD_AMOUNTS, ids=[repr(b)[:20] for b in BAD_AMOUNTS])
@pytest.mark.parametrize("field", ["qty", "price"])
def test_an_order_with_a_bad_amount_and_an_id_is_answerable(field: str, bad: str) -> None:
    got = decode_order({**ORDER, field: bad})
    assert isinstance(got, InvalidOrder) and got.order_id == "o-1" and got.fields[field] == bad
    assert got.reason.startswith(f"field `{field}`: ")


def test_an_order_with_a_bad_amount_and_no_id_names_both() -> None:
    with pytest.raises(DecodeError) as info:
        decode_order({**ORDER, "order_id": "", "qty": "１２"})
    assert info.value.field == "qty" and "field `qty`" in info.value.reason and "order_id" in info.value.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("balance", Decimal("5E+999994")), ("unrealized_pnl", Decimal("1E-999999")), ("balance", Decimal("NaN"))],
)
def test_events_built_in_code_cannot_carry_an_amount_that_would_overflow(field: str, value: Decimal) -> None:
    with pytest.raises(ValueError, match=f"field `{field}`"):
        Balance(ts=int(TS), venue="v", account="a", asset="BTC", **{"balance": Decimal(1), field: value})
    with pytest.raises(ValueError, match="field `price`"):
        Price(ts=int(TS), base="BTC", quote="USDT", price=value.copy_abs(), source="s")


# --- end to end: bad amounts go to the dead-letter stream; bad orders get a veto -----------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    @hookimpl
    def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        self.seen.extend(events)


async def drain(consumer: Consumer) -> None:
    while await consumer.step(block_ms=1):
        pass


@pytest.mark.parametrize(("field", "fields"), AMOUNT_FIELDS, ids=[f"{e['type']}.{f}" for f, e in AMOUNT_FIELDS])
async def test_each_bad_amount_is_dead_lettered_with_a_reason_naming_the_field(
    make_app: Any, field: str, fields: dict[str, str]
) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)])
    consumer = Consumer(app)
    await consumer.setup()
    entries = [{**fields, field: bad, "ts": str(START_MS)} for bad in BAD_AMOUNTS]
    good = {**fields, "ts": str(START_MS)}
    ids = [await app.redis.xadd(app.keys.events, e) for e in [*entries, good]]
    await drain(consumer)
    assert len(rec.seen) == 1 and getattr(rec.seen[0], field) == Decimal(good[field])
    dead = [f for _, f in await app.redis.xrange(app.keys.dlq)]
    assert [d["dlq_id"] for d in dead] == ids[:-1], "each bad entry dead-lettered once, none lost"
    for entry, d in zip(entries, dead):
        assert d[field] == entry[field], "the original value kept, byte for byte"
        assert f"field `{field}`: " in d["dlq_error"] and "\n" not in d["dlq_error"]
    assert app.stats.dead_lettered == len(BAD_AMOUNTS)
    assert int((await app.redis.xpending(app.keys.events, app.group))["pending"]) == 0


async def test_an_order_with_a_fullwidth_qty_is_vetoed_as_a_bad_order(make_app: Any, tmp_path: Path) -> None:
    app = make_app(
        builtins=True,
        disabled=["source_monitor"],
        extra={
            "nav": {"max_age_s": 120, "pegs": {"USDT": "1"}, "routes": {"BTC": "BTC/USDT"}},
            "risk": {"max_nav_age_s": 60, "max_order_notional": "50000", "audit_dir": str(tmp_path / "audit")},
        },
    )
    consumer = Consumer(app)
    await consumer.setup()
    for entry in (
        {
            "type": "balance",
            "venue": "binance",
            "account": "main",
            "asset": "USDT",
            "balance": "100000",
            "ts": str(START_MS),
        },
        {
            "type": "price",
            "base": "BTC",
            "quote": "USDT",
            "price": "50000",
            "source": "binance-spot",
            "ts": str(START_MS),
        },
    ):
        await app.redis.xadd(app.keys.events, entry)
    await drain(consumer)
    order = {
        "type": "order",
        "venue": "binance",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "buy",
        "ts": str(START_MS),
    }
    for order_id, qty in (("wide", "１２"), ("huge", "5e999994"), ("spaced", " 0.1"), ("fine", "0.1")):
        await app.redis.xadd(app.keys.orders, {**order, "order_id": order_id, "qty": qty})
    await drain(consumer)
    decisions = {d["order_id"]: d for _, d in await app.redis.xrange(app.keys.stream("decisions"))}
    assert set(decisions) == {"wide", "huge", "spaced", "fine"}
    for order_id in ("wide", "huge", "spaced"):
        assert (decisions[order_id]["decision"], decisions[order_id]["reasons"]) == ("veto", "bad_order")
    assert "bad_order" not in decisions["fine"]["reasons"]  # the same order with an ASCII qty is judged on its merits
    assert not await app.redis.exists(app.keys.dlq), "an order with an id is answered, not dead-lettered"

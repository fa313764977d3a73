"""The decoder: every entry becomes an event or a DecodeError that names the field; never a crash."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navstream.events import (
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

TS = "1790000000000"


def balance(**over: str) -> dict[str, str]:
    return {"type": "balance", "venue": "binance", "account": "futures", "asset": "USDT",
            "balance": "1234.5", "ts": TS, **over}


def test_balance_decodes_money_as_exact_decimal() -> None:
    event = decode_event(balance(balance="0.1", unrealized_pnl="-12.000000000000000001"))
    assert isinstance(event, Balance)
    assert event.balance == Decimal("0.1")
    assert event.unrealized_pnl == Decimal("-12.000000000000000001")
    assert event.ts == int(TS)


def test_unrealized_pnl_defaults_to_zero_and_unknown_fields_are_ignored() -> None:
    event = decode_event(balance(producer_version="7", note="x"))
    assert event == Balance(ts=int(TS), venue="binance", account="futures", asset="USDT",
                            balance=Decimal("1234.5"))


def test_bytes_entries_decode_like_strings() -> None:
    fields = {k.encode(): v.encode() for k, v in balance().items()}
    assert decode_event(fields) == decode_event(balance())


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"type": "price", "base": "BTC", "quote": "USDT", "price": "97000", "source": "x", "ts": TS}, Price),
        ({"type": "position", "venue": "b", "account": "a", "symbol": "BTCUSDT", "qty": "-0.5",
          "entry_price": "96000", "mark_price": "97000", "ts": TS}, Position),
        ({"type": "source_status", "venue": "b", "source": "spot", "ok": "false", "error": "429", "ts": TS},
         SourceStatus),
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
        ({"type": "price", "base": "BTC", "quote": "USDT", "price": "0", "source": "x", "ts": TS}, None,
         "positive"),
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
    good = {"type": "order", "order_id": "o-1", "venue": "binance", "account": "f", "symbol": "BTCUSDT",
            "side": "buy", "qty": "0.25", "reduce_only": "true", "ts": TS}
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


text = st.one_of(st.text(max_size=30), st.sampled_from(
    ["balance", "price", "position", "source_status", "order", TS, "1.5", "-0", "NaN", "true", "", "1e400"]))
keys = st.one_of(st.sampled_from(
    ["type", "venue", "account", "asset", "balance", "unrealized_pnl", "ts", "base", "quote", "price",
     "source", "symbol", "qty", "entry_price", "ok", "error", "order_id", "side"]), st.text(max_size=10))
entries = st.one_of(
    st.dictionaries(keys, text, max_size=12),
    st.dictionaries(st.binary(max_size=8), st.binary(max_size=16), max_size=8),
)


@settings(max_examples=1500, deadline=None)
@given(entries)
def test_fuzz_any_entry_gives_an_event_or_a_reason(fields: dict) -> None:
    for decode in (decode_event, decode_order):
        try:
            result = decode(fields)
        except DecodeError as exc:
            assert exc.reason  # a reason, never an empty message
        else:
            assert result is not None


@settings(max_examples=300, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(1_000_000_000_000, 9_999_999_999_999))
def test_fuzz_valid_balances_round_trip_exactly(amount: Decimal, ts: int) -> None:
    event = decode_event(balance(balance=str(amount), ts=str(ts)))
    assert event.balance == amount and event.ts == ts

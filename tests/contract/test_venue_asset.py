"""``balance.venue_asset``: the venue's own code for an asset a source renamed (Kraken's ``XXBT``
sent as ``BTC``). Optional and additive: it round-trips through the stream, a bad one is refused
naming the field (and dead-lettered like any bad field), and an entry without it is what it was."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from support import START_MS

from navstream import Event, Outputs, hookimpl
from navstream.contract.events import Balance, DecodeError, decode_event, encode_fields
from navstream.loop.consumer import Consumer

TS = str(START_MS)


def balance(**over: str) -> dict[str, str]:
    return {"type": "balance", "venue": "kraken", "account": "main", "asset": "BTC", "balance": "1.5", "ts": TS, **over}


#: Refused, whatever the spelling: empty, longer than a name may be, control or unprintable characters.
BAD = [
    ("", "length >= 1"),
    ("X" * 257, "length <= 256"),
    ("X" * 500, "length <= 256"),
    ("XX\x1b[31mBT", "U+001B"),
    ("XX\nBT", "U+000A"),
    ("XX\x00BT", "U+0000"),
    ("XX\x85BT", "U+0085"),  # C1 control (NEL)
    ("XX\u202eBT", "U+202E"),  # a bidi override: would show another name than it is
    ("XX\u200bBT", "U+200B"),  # zero width space: two codes that look alike
]


def test_a_balance_with_venue_asset_round_trips_through_the_stream() -> None:
    event = decode_event(balance(venue_asset="XXBT"))
    assert isinstance(event, Balance)
    assert (event.asset, event.venue_asset, event.balance) == ("BTC", "XXBT", Decimal("1.5"))
    fields = encode_fields(event)
    assert fields["venue_asset"] == "XXBT"
    assert decode_event(fields) == event


@pytest.mark.parametrize("name", ["XXBT", "X" * 256, "ХBT", "比特币", "USDT.e", "a b"])
def test_any_printable_name_up_to_256_characters_is_kept_as_sent(name: str) -> None:
    event = decode_event(balance(venue_asset=name))
    assert isinstance(event, Balance) and event.venue_asset == name
    assert decode_event(encode_fields(event)) == event


def test_without_venue_asset_everything_is_as_before() -> None:
    event = decode_event(balance())
    assert event == Balance(ts=int(TS), venue="kraken", account="main", asset="BTC", balance=Decimal("1.5"))
    assert isinstance(event, Balance) and event.venue_asset is None
    assert "venue_asset" not in encode_fields(event), "an old reader sees exactly the old fields"
    assert encode_fields(event) == {
        "type": "balance",
        "ts": TS,
        "venue": "kraken",
        "account": "main",
        "asset": "BTC",
        "balance": "1.5",
        "unrealized_pnl": "0",
    }


@pytest.mark.parametrize(("bad", "fragment"), BAD, ids=[repr(b[:12]) for b, _ in BAD])
def test_a_bad_venue_asset_is_refused_naming_the_field(bad: str, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(balance(venue_asset=bad))
    assert info.value.field == "venue_asset"
    assert info.value.reason.startswith("field `venue_asset`: ") and fragment in info.value.reason
    assert "\n" not in info.value.reason and "\x1b" not in info.value.reason, "the reason is one safe line"


@pytest.mark.parametrize(("bad", "fragment"), BAD, ids=[repr(b[:12]) for b, _ in BAD])
def test_a_balance_built_in_code_cannot_carry_a_bad_venue_asset(bad: str, fragment: str) -> None:
    """A source builds events in code, where msgspec's length bounds do not apply: the same
    check holds there, so a source finds out before publishing, not a consumer after."""
    with pytest.raises(ValueError, match="field `venue_asset`"):
        Balance(ts=int(TS), venue="kraken", account="main", asset="BTC", balance=Decimal(1), venue_asset=bad)


# --- end to end: into the plugins, or to the dead-letter stream -----------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    @hookimpl
    def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        self.seen.extend(events)


async def test_a_bad_venue_asset_is_dead_lettered_with_a_reason_naming_the_field(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)])
    consumer = Consumer(app)
    await consumer.setup()
    entries = [balance(venue_asset=bad, asset=f"A{i}") for i, (bad, _) in enumerate(BAD)]
    good = [balance(venue_asset="XXBT"), balance(asset="ETH")]
    ids = [await app.redis.xadd(app.keys.events, e) for e in [*entries, *good]]
    while await consumer.step(block_ms=1):
        pass
    assert [(e.asset, e.venue_asset) for e in rec.seen if isinstance(e, Balance)] == [("BTC", "XXBT"), ("ETH", None)]
    dead = [f for _, f in await app.redis.xrange(app.keys.dlq)]
    assert [d["dlq_id"] for d in dead] == ids[: len(entries)], "each bad entry dead-lettered once, none lost"
    for entry, d in zip(entries, dead):
        assert d["venue_asset"] == entry["venue_asset"], "the original value kept, byte for byte"
        assert d["dlq_error"].startswith("undecodable: field `venue_asset`: ") and "\n" not in d["dlq_error"]
    assert app.stats.dead_lettered == len(BAD)
    assert int((await app.redis.xpending(app.keys.events, app.group))["pending"]) == 0

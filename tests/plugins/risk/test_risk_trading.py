"""Trading state: drawdown moves it only towards caution, an operator moves it back."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest
from support import START_MS

from navstream.plugins.nav.valuation import Snapshot
from navstream.plugins.risk.config import RiskConfig
from navstream.plugins.risk.trading import DRAWDOWN, TradingRecord, drawdown_pct, follow_nav, set_by_ops

CONFIG = msgspec.convert({"reduce_drawdown_pct": 5, "halt_drawdown_pct": 10}, RiskConfig)


def nav(value: str, status: str = "ok") -> Snapshot:
    return Snapshot("total", Decimal(value), "USD", status, START_MS, START_MS)  # type: ignore[arg-type]


def walk(*values: Any, record: TradingRecord | None = None) -> TradingRecord:
    record = record or TradingRecord()
    for n, value in enumerate(values):
        record = follow_nav(record, nav(*value) if isinstance(value, tuple) else nav(value), CONFIG, START_MS + n)
    return record


def test_the_high_water_mark_follows_ok_navs_only() -> None:
    assert walk("100", "120", "110").high_water == "120"
    assert walk("100", ("500", "stale"), ("900", "partial")).high_water == "100"
    assert walk(("100", "failed")).high_water == ""


@pytest.mark.parametrize(
    ("values", "state"),
    [
        (("100", "95"), "active"),  # exactly 5 %: not past the limit
        (("100", "94.99"), "reducing"),  # just past 5 %
        (("100", "90"), "reducing"),  # exactly 10 %
        (("100", "89.99"), "halted"),  # just past 10 %
        (("100", "120", "107.99"), "halted"),  # from the new peak: 10.0083 %
    ],
)
def test_drawdown_past_a_limit_moves_the_state(values: tuple[str, ...], state: str) -> None:
    record = walk(*values)
    assert record.state == state
    if state != "active":
        assert record.by == DRAWDOWN and record.reason.startswith("NAV ")
        assert "below its high-water mark" in record.reason


def test_recovery_does_not_resume_trading() -> None:
    record = walk("100", "89", "150")
    assert record.state == "halted"
    assert walk("100", "94", "100", record=TradingRecord()).state == "reducing"


def test_a_stale_or_partial_nav_judges_no_drawdown() -> None:
    """A wrong figure (unpriced holdings) must not halt trading by itself: the gate vetoes on it."""
    assert walk("100", ("1", "partial"), ("1", "stale")).state == "active"


def test_drawdown_never_lowers_an_operators_stricter_state() -> None:
    halted = set_by_ops(TradingRecord(), "halted", "exchange incident", "alice", START_MS)
    after = walk("100", "94", record=halted)
    assert (after.state, after.by, after.reason) == ("halted", "ops:alice", "exchange incident")


def test_ops_set_any_state_with_a_reason_and_a_name() -> None:
    record = set_by_ops(walk("100", "80"), "active", "  loss booked, limits reviewed ", "bob", START_MS + 9)
    assert record == TradingRecord("active", "loss booked, limits reviewed", "ops:bob", START_MS + 9, "")
    # resuming restarts the mark: the old peak does not halt trading again at once
    assert walk("80", record=record).state == "active"
    with pytest.raises(ValueError, match="reason"):
        set_by_ops(TradingRecord(), "halted", "  ", "bob", START_MS)
    with pytest.raises(ValueError, match="named"):
        set_by_ops(TradingRecord(), "halted", "why", "", START_MS)


def test_drawdown_pct_is_exact() -> None:
    assert drawdown_pct(Decimal("90"), Decimal("100")) == Decimal(10)
    assert drawdown_pct(Decimal("110"), Decimal("100")) == 0
    assert drawdown_pct(Decimal("-5"), Decimal("100")) == Decimal(105)
    assert drawdown_pct(Decimal("5"), Decimal("0")) == 0
    third = drawdown_pct(Decimal("2"), Decimal("3"))  # 33.33...%, to the NAV's 60 digits
    assert str(third).startswith("33.333333333333333333333333333333") and len(third.as_tuple().digits) == 60


def test_a_drawdown_reason_shows_money_in_the_one_format_and_the_high_water_mark_stays_exact() -> None:
    record = walk("868311.144360", "760000.5")
    assert record.state == "halted" and record.high_water == "868311.144360"  # stored, compared: exact
    assert record.reason == "NAV 760,000.50 USD is 12.47% below its high-water mark 868,311.14 USD (limit 10%)"
    tiny = walk("0.0000010", "0.0000005")
    assert tiny.high_water == "0.0000010" and tiny.reason.startswith("NAV 0.00 USD is 50.00% below")

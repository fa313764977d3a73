"""Money shown one way: grouped digits, fixed decimals per quote currency, nothing invented."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from navstream import display, format_money
from navstream.config import ConfigError, load_settings
from navstream.display import DisplaySettings, amount, money


@pytest.mark.parametrize(
    ("value", "currency", "shown"),
    [
        ("18889978.6504", "USD", "18,889,978.65 USD"),
        ("1000000", "USD", "1,000,000.00 USD"),
        ("865020.0", "USD", "865,020.00 USD"),
        ("868311.144360", "USD", "868,311.14 USD"),
        ("2459353.55", "USD", "2,459,353.55 USD"),
        ("-1234.565", "USD", "-1,234.56 USD"),  # half-even
        ("-0.001", "USD", "0.00 USD"),  # never "-0.00"
        ("0.00000001", "BTC", "0.00000001 BTC"),
        ("1.5", "ETH", "1.500000 ETH"),
        ("12", "usdt", "12.00 usdt"),
    ],
)
def test_money_is_grouped_with_fixed_decimals(value: str, currency: str, shown: str) -> None:
    assert money(value, currency, DisplaySettings()) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("NaN", "NaN"),
        ("-Infinity", "-Infinity"),
        ("abc", "abc"),
        ("", ""),
        ("１２", "１２"),
        # too large to round: as given, as the status page's formatAmount shows it (was '5E+999994')
        ("5e999994", "5e999994"),
        ("5e250", "5e250"),
    ],
)
def test_what_is_no_finite_number_is_shown_as_given(value: str, shown: str) -> None:
    assert amount(value, "USD", DisplaySettings()) == shown


@pytest.mark.parametrize("value", ["0e500", "-0E+999", "0e-500"])
def test_zero_with_any_exponent_is_zero(value: str) -> None:
    """A zero's exponent is no size: 0.00, as the page shows it (was '0E+500')."""
    assert amount(value, "USD", DisplaySettings()) == "0.00"


def test_currency_decimals_are_configurable_and_case_blind() -> None:
    settings = DisplaySettings(decimals=3, currency_decimals={"jpy": 0, "BTC": 4})
    assert money("1234.5678", "JPY", settings) == "1,235 JPY"
    assert money("1.23456789", "btc", settings) == "1.2346 btc"
    assert money("1.23456789", "EUR", settings) == "1.235 EUR"
    assert settings.table() == {"BTC": 4, "ETH": 6, "JPY": 0}


def test_use_sets_the_process_wide_format() -> None:
    before = display.active()
    try:
        display.use(DisplaySettings(decimals=0))
        assert format_money(Decimal("1999.5"), "USD") == "2,000 USD"
    finally:
        display.use(before)


def test_display_section_is_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.toml"
    good.write_text("[display]\ndecimals = 4\ncurrency_decimals = { JPY = 0 }\n")
    assert load_settings(good, env={}).display == DisplaySettings(4, {"JPY": 0})
    for body in ("decimals = 19", "decimals = -1", "currency_decimals = { 'U S' = 2 }", "colour = true"):
        bad = tmp_path / "bad.toml"
        bad.write_text(f"[display]\n{body}\n")
        with pytest.raises(ConfigError, match=r"\[display\]|display\."):
            load_settings(bad, env={})


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**15), max_value=10**15, places=6))
def test_grouping_only_rounds(value: Decimal) -> None:
    shown = amount(value, "USD", DisplaySettings())
    back = Decimal(shown.replace(",", ""))
    assert abs(back - value) <= Decimal("0.005")
    assert shown.rpartition(".")[2].isdigit() and len(shown.rpartition(".")[2]) == 2

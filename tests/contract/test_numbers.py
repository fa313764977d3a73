"""The one number grammar (navstream.contract.numbers): what is an amount, what is refused and why.

The tables hold the texts of the issue (a fullwidth "１２" moved a NAV sixfold; "5e999994" made
every later order of its account raise an overflow) and the real crypto amounts that must pass;
the properties tie the grammar, the bounds and the plain form together.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navstream.contract import numbers
from navstream.contract.numbers import (
    MAX_FRACTION_DIGITS,
    MAX_INTEGER_DIGITS,
    MAX_SIGNIFICANT_DIGITS,
    NumberError,
    accepts,
    check,
    from_json,
    parse,
    plain,
)

ACCEPTED = [
    ("0", "0"),
    ("-0", "-0"),  # zero, as venues write it
    ("1", "1"),
    ("-1", "-1"),
    ("12345.67", "12345.67"),
    ("-0.5", "-0.5"),
    ("0.00000000", "0.00000000"),  # Binance's zero keeps its 8 places
    ("0.000000000000000001", "0.000000000000000001"),  # one wei of an 18-decimal token
    ("999999999999999.999999999999999999", "999999999999999.999999999999999999"),  # 10^15 tokens to the wei
    ("0.000000000001234567890123456", "0.000000000001234567890123456"),  # a 10^-12 price, 16 digits
    ("1" * MAX_INTEGER_DIGITS, "1" * MAX_INTEGER_DIGITS),  # the largest magnitude's digit count
    ("0." + "0" * (MAX_FRACTION_DIGITS - 1) + "1", "0." + "0" * (MAX_FRACTION_DIGITS - 1) + "1"),
    ("9" * 19 + "." + "9" * 19, "9" * 19 + "." + "9" * 19),  # 38 significant digits
    # the exponent form (what str(Decimal) writes), bounded like any other spelling
    ("1E-8", "0.00000001"),
    ("1e-8", "0.00000001"),
    ("0E-8", "0.00000000"),
    ("-0E-8", "-0.00000000"),
    ("1.5E+3", "1500"),
    ("1e+5", "100000"),
    ("5.650574644e-05", "0.00005650574644"),
    ("1e29", "1" + "0" * 29),
    ("1e-30", "0." + "0" * 29 + "1"),
    ("0." + "0" * 70 + "1e+70", "0.1"),  # a long spelling of a short value: the value is what is bounded
]

REFUSED = [
    # (text, words the reason must hold)
    (" 1", "whitespace"),
    ("1 ", "whitespace"),
    ("1\n", "whitespace"),
    ("1 000", "whitespace"),
    ("1_000", "'_'"),
    ("+5", "'+'"),
    ("１２", "non-ASCII"),  # fullwidth: Decimal() reads it as 12
    ("١٢", "non-ASCII"),  # Arabic-Indic: Decimal() reads it as 12
    ("۱۲", "non-ASCII"),  # Extended Arabic-Indic
    ("१२", "non-ASCII"),  # Devanagari
    ("½", "non-ASCII"),
    ("NaN", "finite"),
    ("nan", "finite"),
    ("-NaN", "finite"),
    ("sNaN", "finite"),
    ("Infinity", "finite"),
    ("-Infinity", "finite"),
    ("inf", "finite"),
    ("", "empty"),
    ("-", "not a decimal number"),
    (".", "not a decimal number"),
    (".5", "both sides"),
    ("5.", "both sides"),
    ("-.5", "both sides"),
    ("007", "leading zeros"),
    ("-01.5", "leading zeros"),
    ("1,5", "not a decimal number"),
    ("1.2.3", "not a decimal number"),
    ("--1", "not a decimal number"),
    ("0x10", "not a decimal number"),
    ("1e", "not a decimal number"),
    ("e5", "not a decimal number"),
    ("1E5.5", "not a decimal number"),
    ("abc", "not a decimal number"),
    # the bounds
    ("5e999994", "not below 10^30"),
    ("1e-999999", "999999 digits after the point"),
    ("1e30", "not below 10^30"),
    ("-1e30", "not below 10^30"),
    ("0e50", "exponent 50"),
    ("1e9999999999999999999999999999", "out of bounds"),  # beyond what Decimal() reads at all
    ("1" * (MAX_INTEGER_DIGITS + 1), "not below 10^30"),
    ("0." + "0" * MAX_FRACTION_DIGITS + "1", "31 digits after the point"),
    ("1.0e-30", "31 digits after the point"),
    ("1." + "0" * MAX_FRACTION_DIGITS + "0", "31 digits after the point"),  # trailing zeros count
    ("9" * 20 + "." + "9" * 19, "39 significant digits"),
    ("1" * 5000, "5000 characters"),  # a very long digit string: refused before anything parses it
    ("0." + "1" * 5000, "5002 characters"),
    ("1" * 10**6 + "x", "1000001 characters"),
]


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 30 else f"{text[:20]}...({len(text)})"


@pytest.mark.parametrize(("text", "written"), ACCEPTED, ids=[short(t) for t, _ in ACCEPTED])
def test_accepted_texts_parse_exactly_and_are_written_plain(text: str, written: str) -> None:
    assert accepts(text)
    value = parse(text)
    assert value == Decimal(text) and str(value) == str(Decimal(text))  # exact: not even a trailing 0 lost
    assert plain(value) == written and accepts(written)


@pytest.mark.parametrize(("text", "words"), REFUSED, ids=[short(t) for t, _ in REFUSED])
def test_refused_texts_say_why_in_one_short_line(text: str, words: str) -> None:
    assert not accepts(text)
    with pytest.raises(NumberError) as info:
        parse(text)
    message = str(info.value)
    assert words in message, message
    assert "\n" not in message and len(message) < 300, message
    assert message.startswith(info.value.shown) and message == numbers.reason(text)


def test_unicode_digits_that_decimal_reads_are_refused() -> None:
    """Every non-ASCII character ``Decimal()`` takes as a digit (what moved a NAV sixfold)."""
    readable = []
    for char in (chr(code) for code in range(128, 0x110000)):
        if not char.isnumeric():  # Decimal() reads no other character as a digit
            continue
        try:
            Decimal(char)
        except (decimal.InvalidOperation, ValueError):
            continue
        readable.append(char)
    assert len(readable) > 300  # fullwidth, Arabic-Indic, Devanagari, ... (sanity: the scan found them)
    assert not [c for c in readable if accepts(c) or accepts("1" + c) or accepts("0." + c)]


@pytest.mark.parametrize(
    "value",
    [
        Decimal("5E+999994"),
        Decimal("1E-999999"),
        Decimal("NaN"),
        Decimal("-Infinity"),
        Decimal("1E+30"),
        Decimal("1E-31"),
        Decimal("1." + "0" * 38),
    ],
)
def test_check_refuses_decimals_out_of_bounds(value: Decimal) -> None:
    with pytest.raises(NumberError):
        check(value)
    with pytest.raises(NumberError):
        plain(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.00100000"), Decimal("0.00100000")),
        (Decimal("1.2345678901234567E-5"), Decimal("0.000012345678901234567")),  # a JSON number of CoinGecko's
        (25, Decimal(25)),
        ("0.00100000", Decimal("0.00100000")),  # Binance's strings
        ("-0.00000000", Decimal("-0E-8")),
    ],
)
def test_from_json_takes_exact_numbers_and_grammar_strings(value: object, expected: Decimal) -> None:
    got = from_json(value)
    assert got == expected and str(got) == str(expected)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0.1,
        [],
        {},
        "１２",
        " 1",
        "1_000",
        "NaN",
        "",
        10**30,
        -(10**30),
        pytest.param(10**5000, id="10**5000"),
        Decimal("5E+999994"),
        Decimal("NaN"),
    ],
)
def test_from_json_refuses_anything_else(value: object) -> None:
    with pytest.raises(NumberError) as info:
        from_json(value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


# --- properties ---------------------------------------------------------------------------------

ascii_numberish = st.text(alphabet="0123456789-+.eE_ \t", max_size=45)
any_text = st.one_of(
    ascii_numberish,
    st.text(max_size=45),
    st.from_regex(
        r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?"
        r"([eE][-+]?[0-9]{1,3})?",
        fullmatch=True,
    ),
)
LIMIT = Decimal(10) ** MAX_INTEGER_DIGITS
SMALLEST = Decimal(1).scaleb(-MAX_FRACTION_DIGITS)


def within_bounds(value: Decimal) -> bool:
    sign, digits, exponent = value.as_tuple()
    return (
        value.is_finite()
        and value.copy_abs() < LIMIT
        and isinstance(exponent, int)
        and exponent >= -MAX_FRACTION_DIGITS
        and len(digits) <= MAX_SIGNIFICANT_DIGITS
    )


@settings(max_examples=1000, deadline=None)
@given(any_text)
def test_anything_accepted_is_a_finite_decimal_within_the_bounds_and_round_trips(text: str) -> None:
    if not accepts(text):
        with pytest.raises(NumberError) as info:
            parse(text)
        assert "\n" not in str(info.value) and len(str(info.value)) < 300
        return
    value = parse(text)
    assert within_bounds(value), text
    assert value == 0 or SMALLEST <= value.copy_abs()  # copy_abs: abs() rounds to the context's 28 digits
    assert text.isascii() and text.strip() == text and "_" not in text and not text.startswith("+")
    written = format(value, "f")
    assert accepts(written) and parse(written) == value
    if value.as_tuple().exponent <= 0:  # the same Decimal, down to its trailing zeros
        assert str(parse(written)) == str(value)
    # no accepted value can overflow or be rounded away in the products a desk computes
    with decimal.localcontext(
        decimal.Context(
            prec=3 * MAX_SIGNIFICANT_DIGITS,
            traps=[decimal.Overflow, decimal.Underflow, decimal.Inexact, decimal.Clamped, decimal.InvalidOperation],
        )
    ):
        assert value * value * value == value**3


@settings(max_examples=2000, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_decimal_passes_check_exactly_when_its_plain_form_is_accepted(value: Decimal) -> None:
    ok = within_bounds(value) and not (value == 0 and value.adjusted() >= MAX_INTEGER_DIGITS)
    assert (numbers.decimal_refusal(value) == "") is ok
    if ok:
        assert check(value) is value and accepts(plain(value)) and accepts(str(value))
        assert parse(plain(value)) == value
    else:
        with pytest.raises(NumberError):
            check(value)
        if value.is_finite() and abs(value.adjusted()) < 10_000:  # a text we can afford to write out
            assert not accepts(format(value, "f")) or value == 0


@settings(max_examples=500, deadline=None)
@given(st.decimals(min_value=-LIMIT + 1, max_value=LIMIT - 1, places=18))
def test_every_18_decimal_amount_below_the_limit_is_accepted(value: Decimal) -> None:
    text = format(value, "f")
    if len(text.lstrip("-").replace(".", "").lstrip("0")) <= MAX_SIGNIFICANT_DIGITS:
        assert parse(text) == value

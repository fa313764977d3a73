"""The one number grammar of the wire, with bounds (docs/contract.md, Encoding).

``Decimal(text)`` is far too lenient for money: it takes ``" 1"``, ``"1_000"``, ``"+5"``,
fullwidth ``"１２"`` and Arabic-Indic ``"١٢"`` digits, ``"NaN"``, and ``"5e999994"``, a number
that overflows the first product it enters. Every amount that enters navstream (an event or
order field, ``navstream publish``, a venue's answer) is read here instead.

The grammar is exactly JSON's number grammar, as text::

    amount   := "-"? ("0" | [1-9][0-9]*) ("." [0-9]+)? exponent?
    exponent := ("e" | "E") ("+" | "-")? [0-9]+

ASCII only (``[0-9]``, never ``str.isdigit`` or ``\\d``, which take any script's digits), no
spaces, no leading ``+``, no ``_``, no leading zeros, digits on both sides of a point, no
``NaN`` or ``Infinity``. ``"-0"`` is zero, as venues write it. The exponent form is accepted,
bounded like any other: Python's ``str(Decimal)`` writes ``1E-8`` and ``0E-8`` (Binance's
``"0.00000000"`` read and written back), and producers do that, this repository's benchmark
included. navstream's own writers (``encode_fields``, so the sources; the client; a JSON number
given to ``publish``) write the plain form.

Bounds, on the value whatever its spelling (and at most :data:`MAX_LENGTH` characters), chosen
so every real crypto amount fits and nothing can break the arithmetic after it:

- below ``10**30`` in magnitude (:data:`MAX_INTEGER_DIGITS` digits before the point): token
  supplies reach ~10**18 (balances of 10**15 are real), inverse quotes ~10**14;
- nothing below ``10**-30`` (:data:`MAX_FRACTION_DIGITS` digits after the point, trailing zeros
  included, as ``Decimal`` keeps them): 18-decimal tokens need 18, a 10**-12 price quoted to
  17 significant digits needs 28;
- at most :data:`MAX_SIGNIFICANT_DIGITS` significant digits: 10**20 tokens to the wei.

So every accepted amount has an adjusted exponent in [-30, 29]: a product of k of them lies
within 10**(±30k), nowhere near ``Decimal``'s limits (±999,999), so no overflow, underflow or
clamping in any chain a desk computes; and it has at most 38 significant digits, so such a
product is exact in a context of 38k digits.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

#: Digits before the point: every accepted amount is below 10**30 in magnitude.
MAX_INTEGER_DIGITS = 30
#: Digits after the point: no accepted amount has a digit below 10**-30.
MAX_FRACTION_DIGITS = 30
#: Significant digits (leading zeros aside; trailing ones count, as Decimal keeps them).
MAX_SIGNIFICANT_DIGITS = 38
#: Characters: an amount within the bounds needs at most 62 plain, fewer in exponent form, so a
#: longer text is refused before anything parses it (a megabyte of digits would take 0.1 s).
MAX_LENGTH = 100

#: The plain form within the digit bounds (match in full): the hot path's one regex.
PLAIN = re.compile(rf"-?(?:0|[1-9][0-9]{{0,{MAX_INTEGER_DIGITS - 1}}})(?:\.[0-9]{{1,{MAX_FRACTION_DIGITS}}})?")
#: A PLAIN match no longer than this cannot hold more than MAX_SIGNIFICANT_DIGITS digits: only
#: longer ones (and every exponent form) take the slow path.
SHORT = MAX_SIGNIFICANT_DIGITS + 1
#: The whole grammar, unbounded (JSON's number).
GRAMMAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
#: How much of a refused text a reason quotes: enough to recognise it, never a page of digits.
_SHOWN = 40
_INT_LIMIT = 10**MAX_INTEGER_DIGITS
_BOUNDS = (
    f"amounts are below 10^{MAX_INTEGER_DIGITS}, with at most {MAX_FRACTION_DIGITS} digits after the "
    f"point and {MAX_SIGNIFICANT_DIGITS} significant digits"
)


class NumberError(ValueError):
    """A text or value that is not an accepted amount. ``str()`` is one line, without the
    field's name (the caller adds it: ``field `balance`: '1_000' is not a decimal number: ...``)."""

    def __init__(self, shown: str, refusal: str) -> None:
        super().__init__(f"{shown} is {refusal}")
        #: The value as quoted (``repr``, cut short) and why it is refused, to compose other texts.
        self.shown = shown
        self.refusal = refusal


def accepts(text: str) -> bool:
    """True when ``text`` is an accepted amount (a plain one costs one regex match)."""
    if PLAIN.fullmatch(text) is not None and len(text) <= SHORT:
        return True
    if len(text) > MAX_LENGTH or GRAMMAR.fullmatch(text) is None:
        return False
    try:
        return not decimal_refusal(Decimal(text))
    except InvalidOperation:  # an exponent beyond what Decimal reads at all
        return False


def parse(text: str) -> Decimal:
    """The exact ``Decimal`` of ``text``, or :class:`NumberError` saying why it is refused."""
    if not accepts(text):
        raise NumberError(show(text), refusal(text))
    return Decimal(text)


def check(value: Decimal) -> Decimal:
    """``value`` itself if it keeps the bounds (for numbers that are not text: venue JSON
    numbers, values built in code), else :class:`NumberError`."""
    why = decimal_refusal(value)
    if why:
        raise NumberError(show(value), why)
    return value


def plain(value: Decimal) -> str:
    """``value`` as navstream writes it (``Decimal("1E-8")`` -> ``"0.00000001"``), after :func:`check`."""
    return format(check(value), "f")


def from_json(value: Any) -> Decimal:
    """An amount from a venue's JSON: a number (already exact: ``int``, or ``Decimal`` through
    ``float_hook``) within the bounds, or a string in the grammar. Anything else (``None``, a
    bool, a float, a list) is :class:`NumberError`: a value we cannot read exactly is no value."""
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, Decimal):
        return check(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if -_INT_LIMIT < value < _INT_LIMIT:  # before Decimal(): a huge int is slow to convert and show
            return Decimal(value)
        raise NumberError(f"an integer of {value.bit_length()} bits", _out(f"not below 10^{MAX_INTEGER_DIGITS}"))
    if value is None or isinstance(value, bool):
        raise NumberError(repr(value), "not a number")
    raise NumberError(f"a {type(value).__name__}", "not an exact number")


def decimal_refusal(value: Decimal) -> str:
    """Why ``value`` breaks the bounds, or ``""``."""
    if not value.is_finite():
        return "not a finite number"
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent < -MAX_FRACTION_DIGITS:
        return _out(f"{-exponent} digits after the point")
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        return _out(f"exponent {exponent}" if not any(digits) else f"not below 10^{MAX_INTEGER_DIGITS}")
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        return _out(f"{len(digits)} significant digits")
    return ""


def reason(text: str) -> str:
    """Why ``text`` is refused, in one line that quotes it (``'1_000' is not a decimal number: ...``)."""
    return f"{show(text)} is {refusal(text)}"


def refusal(text: str) -> str:
    """Why ``text`` is refused, as the words after "<text> is". The slow path: for texts
    :func:`accepts` refused."""
    if not text:
        return "empty, not a decimal number like 12.5 or -0.001"
    if len(text) > MAX_LENGTH:
        return _out(f"{len(text)} characters, more than any amount needs ({MAX_LENGTH} at most)")
    if not text.isascii():
        return _bad("non-ASCII characters (only the ASCII digits 0-9 are digits here)")
    if any(c.isspace() for c in text):
        return _bad("whitespace in or around it")
    if text.startswith("+"):
        return _bad("a leading '+' (write positive numbers without a sign)")
    if "_" in text:
        return _bad("'_' digit separators")
    if GRAMMAR.fullmatch(text):  # the spelling is right: the value is not
        try:
            return decimal_refusal(Decimal(text)) or "refused"
        except InvalidOperation:
            return _out("an exponent beyond any bound")
    if text.lower().lstrip("-") in ("nan", "snan", "inf", "infinity"):
        return _bad("not a finite number")
    mantissa = re.split("[eE]", text, maxsplit=1)[0]
    whole, point, fraction = mantissa.removeprefix("-").partition(".")
    if (whole + fraction).isdigit():  # ASCII here, so 0-9 only
        if not whole or (point and not fraction):
            return _bad("digits needed on both sides of the '.' (write 0.5, 5 or 5.0)")
        if len(whole) > 1 and whole.startswith("0"):
            return _bad("leading zeros")
    return _bad("expected ASCII digits with an optional leading '-', '.' and exponent, like -1234.5 or 1E-8")


def show(value: object) -> str:
    """``value`` quoted for a message: ``repr`` (so one line), cut short."""
    text = str(value)
    if len(text) <= _SHOWN:
        return repr(text)
    return f"{text[: _SHOWN // 2]!r}... ({len(text)} characters)"


def _bad(why: str) -> str:
    return f"not a decimal number: {why}"


def _out(what: str) -> str:
    return f"out of bounds: {what} ({_BOUNDS})"

"""Exact money arithmetic for the NAV: sums and products that are exact or refused, never rounded.

Its own module because every part of the valuation (a holding's amount, a unit value along a
route, the sums of accounts) and other plugins (through :mod:`navstream.plugins.nav.api`) use it:
a result that would need more than :data:`MAX_DIGITS` significant digits is never rounded, the
holding is listed as missing (``value_inexact``) instead.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from decimal import Decimal

ZERO = Decimal(0)
#: The general-purpose context of earlier releases (kept importable). Money must not go through
#: it: it rounds past 60 digits. Use :func:`exact_mul`, :func:`exact_add` and :func:`exact_sum`.
CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)
#: Most significant digits an exact money result may have. Far beyond any real figure (an
#: 18-decimal amount of 10^30 through a three-hop route needs under 200); past it a value is not
#: rounded but refused (:class:`InexactError`), and the holding is reported missing.
MAX_DIGITS = 400
#: Every signal that would change a result is an error: an exact result or none.
_EXACT = decimal.Context(
    prec=MAX_DIGITS,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.Inexact,
        decimal.Rounded,
        decimal.Clamped,
        decimal.Overflow,
        decimal.Underflow,
        decimal.InvalidOperation,
        decimal.DivisionByZero,
    ],
)


class InexactError(ArithmeticError):
    """A money figure that cannot be computed exactly within :data:`MAX_DIGITS` digits."""


def exact_mul(a: Decimal, b: Decimal) -> Decimal:
    """``a * b``, exactly: never rounded. :class:`InexactError` when the exact product needs
    more than :data:`MAX_DIGITS` significant digits (or is not finite)."""
    try:
        return _EXACT.multiply(a, b)
    except decimal.DecimalException as exc:
        raise InexactError(
            f"{a} x {b} cannot be computed exactly within {MAX_DIGITS} significant digits ({type(exc).__name__})"
        ) from exc


def exact_add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b``, exactly: never rounded. :class:`InexactError` when the exact sum needs more
    than :data:`MAX_DIGITS` significant digits (``1E+300 + 1E-300``), or is not finite."""
    try:
        return _EXACT.add(a, b)
    except decimal.DecimalException as exc:
        raise InexactError(
            f"{a} + {b} cannot be computed exactly within {MAX_DIGITS} significant digits ({type(exc).__name__})"
        ) from exc


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """The exact sum of ``values`` (0 for none); :class:`InexactError` as :func:`exact_add`."""
    total = ZERO
    for value in values:
        total = exact_add(total, value)
    return total


def money(value: Decimal) -> str:
    """An exact decimal string, never in exponent form (``0E-8`` reads as ``0.00000000``)."""
    return format(value, "f")

"""Money as a person reads it: one format for the CLI, the status page, alert texts and the demo.

Grouped digits and a fixed number of decimals per quote currency (``[display]``), so that
``18889978.65 USD`` never reads ``18,889,978.650`` in one place and ``18889978.65`` in another.
Only text for people is formatted: machine-readable fields and ``--json`` keep the exact value.

The active settings are process-wide (:func:`use`), set by whoever loaded the config (the app,
the CLI), because an alert's text is made deep inside a plugin that should not have to carry them.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Annotated

import msgspec

Decimals = Annotated[int, msgspec.Meta(ge=0, le=18)]
Currency = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]

#: Decimals of quote currencies whose unit is worth far more than a cent's worth.
DEFAULT_CURRENCY_DECIMALS: dict[str, int] = {"BTC": 8, "ETH": 6}


class DisplaySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``[display]``: how money is shown to a person."""

    #: Decimals of a currency not listed in ``currency_decimals``.
    decimals: Decimals = 2
    #: Per quote currency (``BTC = 8``); merged over :data:`DEFAULT_CURRENCY_DECIMALS`.
    currency_decimals: dict[Currency, Decimals] = {}

    def decimals_of(self, currency: str) -> int:
        code = currency.upper()
        if code in self.currency_decimals:
            return self.currency_decimals[code]
        for listed, places in self.currency_decimals.items():
            if listed.upper() == code:
                return places
        return DEFAULT_CURRENCY_DECIMALS.get(code, self.decimals)

    def table(self) -> dict[str, int]:
        """Every listed currency's decimals (defaults merged), for a page that formats itself."""
        merged = dict(DEFAULT_CURRENCY_DECIMALS)
        merged.update({code.upper(): places for code, places in self.currency_decimals.items()})
        return merged


_active = DisplaySettings()


def use(settings: DisplaySettings) -> None:
    """Make ``settings`` the process's way of showing money."""
    global _active
    _active = settings


def active() -> DisplaySettings:
    return _active


def amount(value: Decimal | str | int, currency: str = "", settings: DisplaySettings | None = None) -> str:
    """``Decimal("18889978.6504")``, ``"USD"`` -> ``18,889,978.65``: grouped, rounded half-even to
    the currency's decimals. What cannot be read as a finite number (``NaN``, ``abc``, a value
    too large to round) is shown as given, never as a number it is not."""
    places = (settings or _active).decimals_of(currency) if currency else (settings or _active).decimals
    if not isinstance(value, Decimal) and not str(value).isascii():
        return str(value)  # '１２' is no number a person should see as 12
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return str(value)
    if not number.is_finite():
        return str(value)
    with localcontext() as ctx:
        # A zero's exponent is no size (0e500 is 0.00); 5e999994 would need a million digits:
        # shown as given, as the status page's formatAmount does.
        ctx.prec = max(28, number.adjusted() + places + 2) if number else 28
        if ctx.prec > 200:
            return str(value)
        try:
            rounded = number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
        except InvalidOperation:
            return str(value)
    if not rounded:
        rounded = abs(rounded)  # -0.001 rounds to 0.00, not -0.00
    return f"{rounded:,.{places}f}"


def money(value: Decimal | str | int, currency: str, settings: DisplaySettings | None = None) -> str:
    """``18,889,978.65 USD``: :func:`amount` followed by the currency."""
    shown = amount(value, currency, settings)
    return f"{shown} {currency}" if currency else shown

"""Trading state: ``active``, ``reducing`` or ``halted``, per account and for the whole desk.

Ops set it by hand; drawdown from the NAV's high-water mark moves it on its own, but only ever
towards caution: a NAV that recovers does not resume trading, an operator does (``navstream
risk resume``). Every change records who made it, when and why, so ``navstream status`` can say.
Pure functions of the stored record and the NAV: the plugin keeps the records in Redis, where
every consumer sees the same ones.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from navstream import format_money
from navstream.plugins.nav.api import CONTEXT, Snapshot, money

from .config import RiskConfig
from .decide import STATE_RANK, TradingState

#: Who moves the state when it is not an operator.
DRAWDOWN = "drawdown"


class TradingRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """The state of one scope (an account, or the desk) and how it got there."""

    state: TradingState = "active"
    reason: str = ""
    #: ``ops:<name>`` for a hand-set state, ``drawdown`` for one the gate set.
    by: str = ""
    at: int = 0
    #: The highest NAV seen while the NAV was ``ok`` (exact decimal string), for drawdown.
    high_water: str = ""


def set_by_ops(record: TradingRecord, state: TradingState, reason: str, who: str, now_ms: int) -> TradingRecord:
    """An operator's decision: any state, reason mandatory. Resuming also restarts the
    high-water mark from the next NAV, so an old peak cannot halt trading again at once."""
    if not reason.strip():
        raise ValueError("a reason is required to change the trading state")
    if not who.strip():
        raise ValueError("who changes the trading state must be named")
    high_water = "" if state == "active" else record.high_water
    return TradingRecord(state, reason.strip(), f"ops:{who.strip()}", now_ms, high_water)


def drawdown_pct(nav: Decimal, high_water: Decimal) -> Decimal:
    """How far ``nav`` is below ``high_water``, in percent (0 at or above it)."""
    if high_water <= 0 or nav >= high_water:
        return Decimal(0)
    return CONTEXT.divide(CONTEXT.multiply(high_water - nav, Decimal(100)), high_water)


def follow_nav(record: TradingRecord, nav: Snapshot, config: RiskConfig, now_ms: int) -> TradingRecord:
    """The record after seeing ``nav``: the high-water mark rises with an ``ok`` NAV, and a
    drawdown past a limit moves the state to ``reducing`` or ``halted``, never back.

    A NAV that is not ``ok`` neither raises the mark nor judges a drawdown: the gate already
    vetoes on it, and a wrong figure must not halt (or seem to clear) anything.
    """
    if nav.status != "ok":
        return record
    high_water = Decimal(record.high_water) if record.high_water else nav.nav
    if nav.nav > high_water:
        high_water = nav.nav
    drawdown = drawdown_pct(nav.nav, high_water)
    target: TradingState = "active"
    if drawdown > Decimal(str(config.halt_drawdown_pct)):
        target = "halted"
    elif drawdown > Decimal(str(config.reduce_drawdown_pct)):
        target = "reducing"
    if STATE_RANK[target] > STATE_RANK[record.state]:
        limit = config.halt_drawdown_pct if target == "halted" else config.reduce_drawdown_pct
        # For a person (the exact mark is ``high_water``): it is not judged again on replay,
        # where only the state counts (inputs.trading_state).
        reason = (
            f"NAV {format_money(nav.nav, nav.quote)} is {drawdown:.2f}% below its high-water mark "
            f"{format_money(high_water, nav.quote)} (limit {limit:g}%)"
        )
        return TradingRecord(target, reason, DRAWDOWN, now_ms, money(high_water))
    if money(high_water) != record.high_water:
        return msgspec.structs.replace(record, high_water=money(high_water))
    return record

"""What the risk gate reports through navstream's reporting hooks: the trading state per scope
and this consumer's decisions on the status page (and as ``risk`` in ``/api/status``), and the
``navstream_trading_state`` and ``navstream_risk_*`` families on ``/metrics``.

The decision counts are the gate's own (:attr:`Gate.decided`, where it counts decisions and veto
reason codes together); ``navstream_health`` reports only the approve/veto totals, which
``/metrics`` therefore leaves out of ``navstream_plugin_counter_total``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import RedisError

from navstream import (
    AppProtocol,
    Cell,
    Column,
    Metric,
    Panel,
    PluginMetrics,
    Row,
    StatusSection,
    Table,
    Text,
    Tone,
    counter_family,
    gauge_family,
    hookimpl,
    unescape_name,
)

from .state import DESK, TRADING, decode_record

if TYPE_CHECKING:
    from .gate import Gate

TRADING_STATES = ("active", "reducing", "halted")
TONES: dict[str, Tone] = {"active": "ok", "reducing": "warning", "halted": "critical"}
#: Keys of the gate's decision counter that are decisions, not reason codes.
DECISION_KINDS = ("approve", "veto", "repeated")
#: ``navstream_health`` keys: running counts, and the decision totals /metrics has families for.
HEALTH_COUNTERS = frozenset({"audit_written", "audit_missing"})
HEALTH_HIDDEN = frozenset({"approved", "vetoed", "repeated"})
MAX_TEXT = 500


def _clip(text: Any, limit: int = MAX_TEXT) -> str:
    shown = str(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def trading_rows(raw: Mapping[str, str]) -> list[dict[str, Any]]:
    """``[{"scope", "state", "reason", "by", "at"}]`` from ``P:state:risk:trading``, decoded as
    the gate decodes them: an unreadable record is ``halted`` with the reason, as the gate
    takes it, never shown as ``active``."""
    rows = []
    for member, value in sorted(raw.items()):
        record = decode_record(member, value)
        rows.append(
            {
                "scope": "desk" if member == DESK else unescape_name(member),
                "state": record.state,
                "reason": _clip(record.reason),
                "by": _clip(record.by, 100),
                "at": record.at or None,
            }
        )
    return rows


async def read_trading(app: AppProtocol) -> list[dict[str, Any]]:
    return trading_rows(cast("dict[str, str]", await app.redis.hgetall(app.keys.state(TRADING))))


def decisions_of(gate: Gate | None) -> dict[str, dict[str, int]] | None:
    """This process's decisions so far: ``{"decisions": {approve, veto, repeated}, "reasons":
    {code: n}}``, or None while no gate runs here."""
    if gate is None:
        return None
    counts = {str(k): int(v) for k, v in gate.decided.items()}
    return {
        "decisions": {kind: counts.get(kind, 0) for kind in DECISION_KINDS},
        "reasons": {k: v for k, v in sorted(counts.items()) if k not in DECISION_KINDS},
    }


def decisions_text(decisions: Mapping[str, Any] | None) -> str:
    if not decisions:
        return "This consumer has decided no orders yet."
    d = decisions["decisions"]
    reasons = ", ".join(f"{k} {v}" for k, v in decisions["reasons"].items())
    return (
        f"This consumer decided: {d['approve']} approved, {d['veto']} vetoed, {d['repeated']} repeated"
        + (f"; veto reasons: {reasons}" if reasons else "")
        + "."
    )


def panel(trading: list[dict[str, Any]], decisions: Mapping[str, Any] | None) -> Panel:
    rows = (
        trading
        if any(r["scope"] == "desk" for r in trading)
        else [{"scope": "desk", "state": "active", "reason": "", "by": ""}, *trading]
    )  # no record: active
    table = Table(
        id="trading-table",
        columns=[Column("scope"), Column("state"), Column("reason"), Column("by")],
        rows=[
            Row(
                key=r["scope"],
                cells=[
                    Cell(r["scope"]),
                    Cell(r["state"], badge="trading", tone=TONES.get(r["state"], "critical")),
                    Cell(r["reason"], wrap=True),
                    Cell(r["by"]),
                ],
            )
            for r in rows
        ],
    )
    return Panel(
        id="risk-section",
        title="Risk: trading state",
        blocks=[table, Text(decisions_text(decisions), id="decisions", muted=True)],
    )


class RiskReport:
    """The risk gate's reporting hook implementations, mixed into its plugin class (which keeps
    its :class:`Gate` in ``self.gate`` while the consumer runs)."""

    gate: Gate | None = None

    @hookimpl
    async def navstream_status_page(self, app: AppProtocol) -> StatusSection:
        trading = await read_trading(app)
        decisions = decisions_of(self.gate)
        return StatusSection(
            panels=[panel(trading, decisions)],
            fields={"risk": {"loaded": True, "trading": trading, "decisions": decisions}},
        )

    @hookimpl
    async def navstream_metrics(self, app: AppProtocol) -> PluginMetrics:
        state = gauge_family(
            "navstream_trading_state",
            "1 for the trading state of each scope with a trading record (the desk is `desk`; no record means active).",
            ["scope", "state"],
        )
        families: list[Metric] = []
        problems: tuple[str, ...] = ()
        try:  # the trading state is in Redis; the gate's counts and its health keys are not
            trading = await read_trading(app)
        except (RedisError, OSError) as exc:
            problems = (f"the trading records could not be read: {type(exc).__name__}: {exc}",)
        else:
            for row in trading:
                for name in TRADING_STATES:
                    state.add_metric([row["scope"], name], 1 if row["state"] == name else 0)
            families.append(state)
        decided = counter_family(
            "navstream_risk_decisions",
            "Orders this consumer's risk gate decided, by "
            "decision (approve, veto); a stored answer repeated to a re-sent order is not "
            "one (navstream_risk_repeated_answers_total).",
            ["decision"],
        )
        repeated = counter_family(
            "navstream_risk_repeated_answers",
            "Stored decisions this consumer's risk gate gave again to a re-sent order.",
        )
        reasons = counter_family(
            "navstream_risk_decision_reasons",
            "Reason codes of this consumer's vetoes (one veto may carry several).",
            ["reason"],
        )
        decisions = decisions_of(self.gate)
        if decisions is not None:
            for kind, count in decisions["decisions"].items():
                if kind == "repeated":
                    repeated.add_metric([], count)
                else:
                    decided.add_metric([kind], count)
            for code, count in decisions["reasons"].items():
                reasons.add_metric([code], count)
        families += [decided, repeated, reasons]
        return PluginMetrics(
            families=tuple(families),
            health_counters=HEALTH_COUNTERS,
            health_hidden=HEALTH_HIDDEN,
            problems=problems,
        )

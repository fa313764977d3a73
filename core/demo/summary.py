"""The summary after the live table: totals, dead letters, alerts, decisions and the final state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from navstream.app import App
from navstream.demo.replay import Replay, SourceRow, StepRow, plugin_section, read_stream
from navstream.demo.scenario import clock_label
from navstream.ops.admin import dlq_list
from navstream.render import table

#: Alerts listed one by one in the summary (all of them are counted in the table).
ALERTS_LISTED = 30


def _where(alert: Mapping[str, str]) -> str:
    parts = [alert.get("venue"), alert.get("source") or alert.get("account"), alert.get("asset")]
    return "/".join(p for p in parts if p) or "-"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def alerts_table(alerts: Sequence[Mapping[str, str]]) -> str:
    """Alerts grouped by code, first-seen order, with where they came from."""
    groups: dict[str, list[Mapping[str, str]]] = {}
    for alert in alerts:
        groups.setdefault(alert.get("code", "?"), []).append(alert)
    rows = [
        [code, items[0].get("severity"), len(items), ", ".join(dict.fromkeys(_where(a) for a in items))]
        for code, items in groups.items()
    ]
    return table(["code", "severity", "count", "where"], rows)


def alerts_list(alerts: Sequence[Mapping[str, str]], start_ms: int) -> list[str]:
    """Every alert in order, at its simulated time, message in full (ops read the message)."""
    shown = alerts[-ALERTS_LISTED:]
    lines = [f"  ({len(alerts) - len(shown)} earlier alerts not listed)"] if len(shown) < len(alerts) else []
    for alert in shown:
        at = clock_label((int(alert.get("ts", start_ms)) - start_ms) // 1000)
        lines.append(f"  {at}  {alert.get('severity', '?'):<8}  {alert.get('code', '?')}: {alert.get('message', '')}")
    return lines


def dlq_table(rows: Sequence[Mapping[str, Any]]) -> str:
    shown = []
    for row in rows:
        fields = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("id", "ts") and not k.startswith("dlq_"))
        stream = str(row.get("dlq_stream", "")).rpartition(":")[2]
        shown.append([stream, row.get("dlq_deliveries"), fields, row.get("dlq_error")])
    return table(["from", "deliveries", "entry (ts omitted)", "error"], shown)


def nav_table(scopes: list[dict[str, Any]] | None) -> str:
    if scopes is None:
        return "the nav plugin is not loaded: no NAV"
    return table(
        ["scope", "name", "NAV", "status", "oldest input", "missing", "stale"],
        [
            [
                s["scope"],
                s["name"],
                f"{Decimal(s['nav']):,.2f}",
                s["status"],
                "-" if s["as_of_age_s"] is None else f"{s['as_of_age_s']:.0f} s",
                _short(", ".join(s["missing"]), 40) or "-",
                _short(", ".join(s["stale_sources"]), 50) or "-",
            ]
            for s in scopes
        ],
    )


def sources_table(sources: list[SourceRow] | None) -> str:
    if sources is None:
        return "source_monitor is not loaded: no source health"
    return table(
        ["venue", "source", "account", "state", "last report", "error"],
        [
            [s.venue, s.source, s.account or "-", s.state, f"{s.age_s:.0f} s ago", _short(s.error, 60) or "-"]
            for s in sources
        ],
    )


def _label_at(ts: str | None, start_ms: int) -> str:
    try:
        return clock_label(max(0, int(ts or "") - start_ms) // 1000)
    except ValueError:
        return "-"


def decisions_table(decisions: Sequence[Mapping[str, str]], accounts: Mapping[str, str], start_ms: int) -> str:
    """Every ``P:decisions`` entry in order, with the account of its order (a decision names
    none) and the simulated time it was decided (a repeated answer keeps the first one's)."""
    return table(
        ["decided", "order_id", "account", "decision", "trading", "NAV", "reasons"],
        [
            [
                _label_at(d.get("ts"), start_ms),
                d.get("order_id"),
                accounts.get(d.get("order_id", ""), "-"),
                d.get("decision"),
                d.get("trading_state"),
                d.get("nav_status"),
                d.get("reasons", "").replace(",", ", ") or "-",
            ]
            for d in decisions
        ],
    )


def decisions_checks(decisions: Sequence[Mapping[str, str]], sent: Mapping[str, int]) -> list[str]:
    """What the contract promises about the answers, checked on what the gate wrote: every
    order answered, and every answer to one order_id identical."""
    answers: dict[str, list[Mapping[str, str]]] = {}
    for d in decisions:
        answers.setdefault(d.get("order_id", ""), []).append(d)
    lines = []
    for order_id, given in answers.items():
        if len(given) > 1:
            same = all(a == given[0] for a in given)
            lines.append(
                f"  {order_id} sent {sent.get(order_id, 0)} times, answered {len(given)} times: "
                + (
                    "the first decision each time, field for field"
                    if same
                    else "DIFFERENT answers, which the contract forbids"
                )
            )
    unanswered = [order_id for order_id in sent if order_id not in answers]
    if unanswered:
        lines.append(f"  NO ANSWER to {', '.join(unanswered)}")
    return lines


def _since(text: str, start_ms: int) -> str:
    """``2026-11-25 03:07:32Z`` (as ``navstream risk show`` prints it) as a simulated time."""
    try:
        at = datetime.strptime(text, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return text or "-"
    return clock_label(max(0, int(at.timestamp() * 1000) - start_ms) // 1000)


def trading_lines(section: Mapping[str, Any] | None, start_ms: int) -> list[str]:
    """The risk plugin's trading records as ``navstream status`` shows them; each scope that is
    not active with its reason, and what resumes it."""
    if section is None:
        return ["the risk plugin is not loaded: no trading state"]
    if "error" in section:
        return [f"trading state unreadable: {section['error']}"]
    rows = list(section.get("trading", []))
    lines = [
        table(
            ["scope", "state", "since", "by", "high-water mark"],
            [
                [
                    r.get("scope"),
                    r.get("state"),
                    _since(r.get("since", ""), start_ms),
                    r.get("by") or "-",
                    f"{Decimal(r['high_water']):,.2f}" if r.get("high_water") else "-",
                ]
                for r in rows
            ],
        )
    ]
    for r in rows:
        if r.get("state") == "active":
            continue
        scope = str(r.get("scope"))
        account = "" if scope == "desk" else f" --account {scope.partition('/')[2]}"
        lines += [
            f"  {scope} {r.get('state')}: {r.get('reason')}",
            f"  recovery does not resume it, ops do: navstream risk resume{account} --reason TEXT",
        ]
    return lines


async def summary(app: App, replay: Replay, last: StepRow) -> list[str]:
    """Totals by type, dead letters, alerts and decisions as read back from Redis; the final
    trading state, NAV and source health."""
    stats = app.stats
    by_type = sorted(stats.by_type.items(), key=lambda kv: (-kv[1], kv[0]))
    dead = await dlq_list(app, limit=1000)
    alerts = [fields for _, fields in await read_stream(app, app.keys.alerts)]
    decisions = [fields for _, fields in await read_stream(app, app.keys.decisions)]
    accounts: dict[str, str] = {}
    sent: dict[str, int] = {}
    for _, order in await read_stream(app, app.keys.orders):
        order_id = order.get("order_id", "")
        accounts.setdefault(order_id, f"{order.get('venue', '?')}/{order.get('account', '?')}")
        sent[order_id] = sent.get(order_id, 0) + 1
    kinds = ", ".join(f"{kind} {n}" for kind, n in Counter(d.get("decision", "?") for d in decisions).items())
    return [
        f"entries: {replay.entries_in} in, {stats.processed} processed, {stats.dead_lettered} dead-lettered",
        "",
        "processed by type",
        table(["type", "count"], [[t, n] for t, n in by_type]),
        "",
        f"dead letters ({app.keys.dlq}): {len(dead)}",
        *([dlq_table(dead)] if dead else []),
        "",
        f"alerts ({app.keys.alerts}): {len(alerts)}",
        *([alerts_table(alerts), "", *alerts_list(alerts, replay.start_ms)] if alerts else []),
        "",
        f"decisions ({app.keys.decisions}): {len(decisions)} answers to {sum(sent.values())} orders sent"
        + (f" ({kinds})" if decisions else ""),
        *(
            [decisions_table(decisions, accounts, replay.start_ms), *decisions_checks(decisions, sent)]
            if decisions
            else []
        ),
        "",
        f"trading state at {clock_label(last.step.at_s)} (P:state:risk:trading; `navstream risk show`)",
        *trading_lines(await plugin_section(app, "risk"), replay.start_ms),
        "",
        f"NAV at {clock_label(last.step.at_s)} (P:state:nav:latest; `navstream nav` explains each)",
        nav_table(last.nav),
        "",
        f"source health at {clock_label(last.step.at_s)}",
        sources_table(last.sources),
    ]

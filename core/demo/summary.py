"""The summary after the live table: totals, dead letters, alerts, decisions and the final state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from navstream.app import App
from navstream.demo.replay import Replay, SourceRow, StepRow, plugin_section, read_stream
from navstream.demo.scenario import clock_label
from navstream.display import amount
from navstream.ops.admin import dlq_list
from navstream.render import prose, table

#: Alerts listed one by one in the summary (all of them are counted in the table).
ALERTS_LISTED = 30


def _where(alert: Mapping[str, str]) -> str:
    parts = [alert.get("venue"), alert.get("source") or alert.get("account"), alert.get("asset")]
    return "/".join(p for p in parts if p) or "-"


def alerts_table(alerts: Sequence[Mapping[str, str]], width: int | None = None) -> str:
    """Alerts grouped by code, first-seen order, with where they came from."""
    groups: dict[str, list[Mapping[str, str]]] = {}
    for alert in alerts:
        groups.setdefault(alert.get("code", "?"), []).append(alert)
    rows = [
        [code, items[0].get("severity"), len(items), ", ".join(dict.fromkeys(_where(a) for a in items))]
        for code, items in groups.items()
    ]
    return table(["code", "severity", "count", "where"], rows, width, shrink=[3])


def alerts_list(alerts: Sequence[Mapping[str, str]], start_ms: int, width: int | None = None) -> list[str]:
    """Every alert in order, at its simulated time, message in full (ops read the message):
    wrapped under itself to fit ``width``, never cut."""
    shown = alerts[-ALERTS_LISTED:]
    lines = [f"  ({len(alerts) - len(shown)} earlier alerts not listed)"] if len(shown) < len(alerts) else []
    for alert in shown:
        at = _label_at(alert.get("ts", str(start_ms)), start_ms)
        head = f"  {at}  {alert.get('severity', '?'):<8}  "
        lines += prose(f"{alert.get('code', '?')}: {alert.get('message', '')}", width, head, " " * len(head))
    return lines


def dlq_table(rows: Sequence[Mapping[str, Any]], width: int | None = None) -> str:
    shown = []
    for row in rows:
        fields = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("id", "ts") and not k.startswith("dlq_"))
        stream = str(row.get("dlq_stream", "")).rpartition(":")[2]
        shown.append([stream, row.get("dlq_deliveries"), fields, row.get("dlq_error")])
    return table(["from", "deliveries", "entry (ts omitted)", "error"], shown, width, shrink=[2, 3])


def nav_table(scopes: list[dict[str, Any]] | None, quote: str = "", width: int | None = None) -> str:
    """The NAV of every scope, as a person reads money (:func:`navstream.display.amount`), the
    quote currency in the header; "as of": the age of its oldest input."""
    if scopes is None:
        return "the nav plugin is not loaded: no NAV"
    return table(
        ["scope", "name", f"NAV ({quote})" if quote else "NAV", "status", "as of", "missing", "stale"],
        [
            [
                s["scope"],
                s["name"],
                amount(s["nav"], quote),
                s["status"],
                "-" if s["as_of_age_s"] is None else f"{s['as_of_age_s']:.0f} s ago",
                ", ".join(s["missing"]) or "-",
                ", ".join(s["stale_sources"]) or "-",
            ]
            for s in scopes
        ],
        width,
        shrink=[5, 6],
    )


def sources_table(sources: list[SourceRow] | None, width: int | None = None) -> str:
    if sources is None:
        return "source_monitor is not loaded: no source health"
    return table(
        ["venue", "source", "account", "state", "last report", "error"],
        [[s.venue, s.source, s.account or "-", s.state, f"{s.age_s:.0f} s ago", s.error or "-"] for s in sources],
        width,
        shrink=[5],
    )


def _label_at(ts: str | None, start_ms: int) -> str:
    try:
        return clock_label(max(0, int(ts or "") - start_ms) // 1000)
    except ValueError:
        return "-"


def decisions_table(
    decisions: Sequence[Mapping[str, str]], accounts: Mapping[str, str], start_ms: int, width: int | None = None
) -> str:
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
        width,
        shrink=[6],
    )


def decisions_checks(
    decisions: Sequence[Mapping[str, str]], sent: Mapping[str, int], width: int | None = None
) -> list[str]:
    """What the contract promises about the answers, checked on what the gate wrote: every
    order answered, and every answer to one order_id identical."""
    answers: dict[str, list[Mapping[str, str]]] = {}
    for d in decisions:
        answers.setdefault(d.get("order_id", ""), []).append(d)
    lines = []
    for order_id, given in answers.items():
        if len(given) > 1:
            same = all(a == given[0] for a in given)
            lines += prose(
                f"{order_id} sent {sent.get(order_id, 0)} times, answered {len(given)} times: "
                + (
                    "the first decision each time, field for field"
                    if same
                    else "DIFFERENT answers, which the contract forbids"
                ),
                width,
                "  ",
                "    ",
            )
    unanswered = [order_id for order_id in sent if order_id not in answers]
    if unanswered:
        lines += prose(f"NO ANSWER to {', '.join(unanswered)}", width, "  ", "    ")
    return lines


def _since(text: str, start_ms: int) -> str:
    """``2026-11-25 03:07:32Z`` (as ``navstream risk show`` prints it) as a simulated time."""
    try:
        at = datetime.strptime(text, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return text or "-"
    return clock_label(max(0, int(at.timestamp() * 1000) - start_ms) // 1000)


def trading_lines(
    section: Mapping[str, Any] | None, start_ms: int, quote: str = "", width: int | None = None
) -> list[str]:
    """The risk plugin's trading records as ``navstream status`` shows them (the high-water mark
    in the NAV's ``quote``); each scope that is not active with its reason, and what resumes it."""
    if section is None:
        return ["the risk plugin is not loaded: no trading state"]
    if "error" in section:
        return prose(f"trading state unreadable: {section['error']}", width, "", "  ")
    rows = list(section.get("trading", []))
    lines = [
        table(
            ["scope", "state", "since", "by", f"high-water mark ({quote})" if quote else "high-water mark"],
            [
                [
                    r.get("scope"),
                    r.get("state"),
                    _since(r.get("since", ""), start_ms),
                    r.get("by") or "-",
                    amount(r["high_water"], quote) if r.get("high_water") else "-",
                ]
                for r in rows
            ],
            width,
        )
    ]
    for r in rows:
        if r.get("state") == "active":
            continue
        scope = str(r.get("scope"))
        account = "" if scope == "desk" else f" --account {scope.partition('/')[2]}"
        lines += prose(f"{scope} {r.get('state')}: {r.get('reason')}", width, "  ", "    ")
        lines += prose(
            f"recovery does not resume it, ops do: navstream risk resume{account} --reason TEXT", width, "  ", "    "
        )
    return lines


async def summary(app: App, replay: Replay, last: StepRow, width: int | None = None) -> list[str]:
    """Totals by type, dead letters, alerts and decisions as read back from Redis; the final
    trading state, NAV and source health; every line at most ``width`` cells (None: no limit)."""
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
    nav_quote, at = last.quote, clock_label(last.step.at_s)

    def title(text: str) -> list[str]:
        return prose(text, width, "", "  ")

    return [
        *title(f"entries: {replay.entries_in} in, {stats.processed} processed, {stats.dead_lettered} dead-lettered"),
        "",
        "processed by type",
        table(["type", "count"], [[t, n] for t, n in by_type], width),
        "",
        *title(f"dead letters ({app.keys.dlq}): {len(dead)}"),
        *([dlq_table(dead, width)] if dead else []),
        "",
        *title(f"alerts ({app.keys.alerts}): {len(alerts)}"),
        *([alerts_table(alerts, width), "", *alerts_list(alerts, replay.start_ms, width)] if alerts else []),
        "",
        *title(
            f"decisions ({app.keys.decisions}): {len(decisions)} answers to {sum(sent.values())} orders sent"
            + (f" ({kinds})" if decisions else "")
        ),
        *(
            [
                decisions_table(decisions, accounts, replay.start_ms, width),
                *decisions_checks(decisions, sent, width),
            ]
            if decisions
            else []
        ),
        "",
        *title(f"trading state at {at} (P:state:risk:trading; `navstream risk show`)"),
        *trading_lines(await plugin_section(app, "risk"), replay.start_ms, nav_quote, width),
        "",
        *title(f"NAV at {at} (P:state:nav:latest; `navstream nav` explains each)"),
        nav_table(last.nav, nav_quote, width),
        "",
        *title(f"source health at {at}"),
        sources_table(last.sources, width),
    ]

"""Plain-text tables for the terminal (status, dead letters, the demo)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned text table; every cell is ``str()``-ed."""
    cells = [[str(c) for c in headers]] + [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _age(ts_ms: str | int | None, now_ms: int) -> str:
    if not ts_ms:
        return "-"
    return f"{(now_ms - int(ts_ms)) / 1000:.1f}s ago"


def render_status(status: dict[str, Any], now_ms: int | None = None) -> str:
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    out = [f"prefix {status['prefix']}  group {status['group']}", ""]
    rows = []
    for stream, info in status["streams"].items():
        ours = next((g for g in info["groups"] if g["name"] == status["group"]), None)
        rows.append(
            [
                stream,
                info["length"],
                ours["lag"] if ours else "no group",
                ours["pending"] if ours else "-",
                ours["consumers"] if ours else 0,
            ]
        )
    out += [table(["stream", "length", "lag", "pending", "consumers"], rows), ""]
    out.append(
        f"dead letters: {status['dlq']['length']}" + ("  (navstream dlq list)" if status["dlq"]["length"] else "")
    )
    out.append("")
    if status["consumers"]:
        out.append(
            table(
                [
                    *("consumer", "status", "role", "processed", "failed"),
                    *("dead-lettered", "lost", "last batch", "heartbeat"),
                ],
                [
                    [
                        h.get("consumer"),
                        h.get("status"),
                        h.get("role") or "all",  # a heartbeat without one is from before roles: all
                        h.get("processed"),
                        h.get("failed"),
                        h.get("dead_lettered"),
                        h.get("lost"),
                        _age(h.get("last_batch_ms"), now_ms),
                        _age(h.get("ts"), now_ms),
                    ]
                    for h in status["consumers"]
                ],
            )
        )
    else:
        out.append("no live consumer (no heartbeat)")
    if status["alerts"]:
        out += ["", "latest alerts:"]
        out += [
            f"  {a.get('severity', '?'):<8} {a.get('code', '?'):<20} {a.get('message', '')}" for a in status["alerts"]
        ]
    for name, section in status["plugins"].items():
        out += ["", f"[{name}]", render_section(section)]
    return "\n".join(out)


def render_section(section: Any) -> str:
    """A plugin's status section: each list of records (``{"scopes": [{...}, ...]}``) as a
    table, empty lists as "none", anything else as indented JSON."""
    if not isinstance(section, dict):
        return json.dumps(section, indent=2, default=str)
    out = []
    for key, value in section.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            headers = list(dict.fromkeys(k for row in value for k in row))
            out += [f"{key}:", table(headers, [[_cell(row.get(h)) for h in headers] for row in value])]
        elif isinstance(value, list) and not value:
            out.append(f"{key}: none")
        else:
            out.append(f"{key}: {json.dumps(value, default=str)}")
    return "\n".join(out)


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return value


def render_dlq(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no dead letters"
    return table(
        ["id", "from", "deliveries", "error", "fields"],
        [
            [
                r["id"],
                r.get("dlq_stream"),
                r.get("dlq_deliveries"),
                r.get("dlq_error"),
                " ".join(f"{k}={v}" for k, v in r.items() if k != "id" and not k.startswith("dlq_")),
            ]
            for r in rows
        ],
    )

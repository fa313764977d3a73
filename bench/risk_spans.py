"""bench_risk ``--spans``: each order's latency split by what the navstream loop was doing."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

import msgspec
from common import percentile
from risk_load import OrderFlow

PHASES = ("queued", "read", "hooks", "write", "deliver", "total")


def analyse_spans(path: str, flow: OrderFlow, window: tuple[int, int]) -> dict[str, Any]:
    """Split each measured order's latency by what the navstream loop was doing.

    Per order: ``queued`` from its XADD until the loop issued the read that took it (the loop
    was finishing an earlier batch or a tick); ``read`` from then (or from the XADD, if the loop
    was already waiting) until the handling of the batch (or part of it) holding the order
    began; ``hooks`` from there until its plugin hooks are all done (decoding included; an
    events hook in the same part runs at the same time); ``write`` from there until its write
    script answered; ``deliver`` from there to the reader's arrival."""
    import bisect

    with open(path, "rb") as f:
        data = msgspec.json.decode(f.read())
    batches = data["batches"]
    carrier: dict[str, list[Any]] = {}
    for b in batches:
        for order_id in b[7]:
            carrier.setdefault(order_id, b)
    busy = sorted(
        [("batch", b[1], b[4], b[5]) for b in batches] + [(kind, s, e, 0) for kind, s, e in data["other"]],
        key=lambda x: x[1],
    )
    starts = [x[1] for x in busy]

    def hooks_done(b: list[Any]) -> int:
        return max(b[2], b[3]) or b[1]

    parts: dict[str, list[float]] = {k: [] for k in PHASES}
    rows = []
    for order_id in flow.window:
        b = carrier.get(order_id)
        got = flow.arrived.get(order_id)
        if b is None or got is None:
            continue
        sent = flow.sent[order_id]
        done = hooks_done(b)
        row: dict[str, Any] = {
            "queued": max(0, b[0] - sent) / 1e6,
            "read": (b[1] - max(b[0], sent)) / 1e6,
            "hooks": (done - b[1]) / 1e6,
            "write": (b[4] - done) / 1e6,
            "deliver": (got[0] - b[4]) / 1e6,
            "total": (got[0] - sent) / 1e6,
            "events_hook": ((b[2] or b[1]) - b[1]) / 1e6,
            "orders_hook": ((b[3] or b[1]) - b[1]) / 1e6,
            "batch_events": b[5],
            "batch_orders": b[6],
            "behind": "read",
        }
        # What held the loop when the order reached Redis (the span around its send time).
        at = bisect.bisect_right(starts, sent) - 1
        if at >= 0 and busy[at][2] > sent:
            row["behind"] = busy[at][0]
        rows.append(row)
        for k in PHASES:
            parts[k].append(row[k])
    if not rows:
        return {}
    rows.sort(key=lambda r: r["total"])
    slow = rows[max(0, math.ceil(0.99 * len(rows)) - 1) :]  # the orders at and above p99
    summary: dict[str, Any] = {}
    for k, values in parts.items():
        values.sort()
        summary[k] = {"mean": statistics.fmean(values), "p50": percentile(values, 50), "p99": percentile(values, 99)}
    summary["slowest_1pct"] = {
        "n": len(slow),
        "mean": {k: statistics.fmean(r[k] for r in slow) for k in (*PHASES, "events_hook", "orders_hook")},
        "behind": dict(Counter(r["behind"] for r in slow)),
        "batch_events_mean": statistics.fmean(r["batch_events"] for r in slow),
        "batch_orders_mean": statistics.fmean(r["batch_orders"] for r in slow),
    }
    in_window = [b for b in batches if window[0] <= b[1] < window[1]]
    starts_of: dict[int, list[int]] = {}
    for b in in_window:
        if b[0]:
            starts_of.setdefault(b[0], []).append(b[1])
    with_orders = [b for b in in_window if b[6]]
    with_events = [b for b in in_window if b[5]]
    ticks = [(e - s) / 1e6 for kind, s, e in data["other"] if kind == "tick" and window[0] <= s < window[1]]
    handle = sorted((b[4] - b[1]) / 1e6 for b in in_window)
    reads = sorted((e - s) / 1e6 for s, e in data["state_reads"] if window[0] <= s < window[1])

    def mean(values: Any) -> float:
        values = list(values)
        return statistics.fmean(values) if values else 0.0

    summary["loop"] = {
        "batches": len(in_window),
        "events_per_batch": mean(b[5] for b in in_window),
        "orders_per_batch": mean(b[6] for b in in_window),
        "handle_ms_mean": mean(handle),
        "handle_ms_p99": percentile(handle, 99) if handle else 0.0,
        "events_hook_ms_mean": mean((b[2] - b[1]) / 1e6 for b in with_events),
        "orders_hook_ms_mean": mean((b[3] - b[1]) / 1e6 for b in with_orders),
        "state_read_ms_mean": mean(reads),
        "write_ms_mean": mean((b[4] - hooks_done(b)) / 1e6 for b in in_window),
        # One read may be handled in parts: its first part's start closes the read.
        "read_ms_mean": mean((min(starts_of[k]) - k) / 1e6 for k in starts_of),
        "ticks": len(ticks),
        "tick_ms": [round(t, 2) for t in ticks],
        "busy_share": sum(handle) / ((window[1] - window[0]) / 1e6),
    }
    return summary


def print_spans(r: dict[str, Any]) -> None:
    s = r.get("spans")
    if not s:
        return
    loop = s["loop"]
    print(
        f"    spans {r['rate']:,}/s: {loop['batches']} batches handled in the window (where the handler splits a "
        f"read into its orders and its events, each part counts), {loop['events_per_batch']:.0f} events "
        f"+ {loop['orders_per_batch']:.1f} orders each; handle {loop['handle_ms_mean']:.2f} ms mean "
        f"(p99 {loop['handle_ms_p99']:.2f}); a read takes {loop['read_ms_mean']:.2f} (waiting included); "
        f"events hook {loop['events_hook_ms_mean']:.2f}, orders hook "
        f"{loop['orders_hook_ms_mean']:.2f} (its state read {loop['state_read_ms_mean']:.2f}), write "
        f"{loop['write_ms_mean']:.2f} per part; loop busy {loop['busy_share']:.0%} of the window"
    )
    ticks = loop["tick_ms"]
    if ticks:
        print(f"    ticks: {len(ticks)}, {statistics.fmean(ticks):.1f} ms mean, max {max(ticks):.1f} ms")
    print(
        "    per order (ms): queued = XADD until the loop issued the read that took it (busy with an earlier "
        "batch or a tick); read = then until its batch (or part) began to be handled; hooks = decoding and the "
        "hooks (an events hook in the same part runs at once); write = its write script; deliver = from the "
        "loop seeing the script's reply to the reader's arrival (< 0 when the reader saw the entry first)"
    )
    print("                     " + "  ".join(f"{k:>8}" for k in PHASES))
    for stat in ("mean", "p50", "p99"):
        print(f"      {stat:<14} " + "  ".join(f"{s[k][stat]:>8.2f}" for k in PHASES))
    slow = s["slowest_1pct"]
    print(
        "      slowest 1%     "
        + "  ".join(f"{slow['mean'][k]:>8.2f}" for k in PHASES)
        + f"   ({slow['n']} orders; the loop was in a {slow['behind']} when they were sent; their batches: "
        f"{slow['batch_events_mean']:.0f} events + {slow['batch_orders_mean']:.1f} orders, events hook "
        f"{slow['mean']['events_hook']:.2f} ms, orders hook {slow['mean']['orders_hook']:.2f} ms)"
    )

"""bench_risk's report: one line per run, the table, p99 against the baseline and the bar, and
what makes a run invalid (:func:`check_runs`)."""

from __future__ import annotations

import argparse
import math
from typing import Any

PACE_OK = 0.95  # under this share of a target rate, the output says the generator fell behind
LATE_OK_MS = 5.0  # ... or when its orders' p99 lateness against their schedule is over this


def ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "never" if math.isinf(value) else f"{value:.2f}"


def behind_pace(r: dict[str, Any]) -> bool:
    return (
        r["event_rate"] < PACE_OK * r["target_event_rate"]
        or r["order_rate"] < PACE_OK * r["rate"]
        or r["sender_late_p99_ms"] > LATE_OK_MS
    )


def line(r: dict[str, Any]) -> str:
    d = r["decisions"]
    pace = ""
    if r["event_rate"] < PACE_OK * r["target_event_rate"]:
        pace += f"  [events behind pace: {r['event_rate']:,.0f}/s of {r['target_event_rate']:,}]"
    if r["order_rate"] < PACE_OK * r["rate"] or r["sender_late_p99_ms"] > LATE_OK_MS:
        pace += (
            f"  [orders behind pace: {r['order_rate']:,.0f}/s of {r['rate']:,}, p99 "
            f"{r['sender_late_p99_ms']:.1f} ms late]"
        )
    cpu = ", ".join(f"{k} {v:.0%}" for k, v in r["cpu"].items())
    return (
        f"  {r['shape']:<6} {r['rate']:>5,} orders/s {r['side']:<9}  sent {r['orders']:>6,} "
        f"({r['order_rate']:>6,.0f}/s), events {r['event_rate']:>7,.0f}/s  p50 {ms(r['p50_ms'])} "
        f"p90 {ms(r['p90_ms'])} p99 {ms(r['p99_ms'])} max {ms(r['max_ms'])} ms  unanswered {r['unanswered']}  "
        f"approve {d.get('approve', 0)} veto {d.get('veto', 0)}{pace}\n"
        f"                                   CPU in the window (share of one core): {cpu}"
    )


def check_runs(results: list[dict[str, Any]], event_rate: int) -> list[str]:
    """What makes a navstream run invalid, whatever its timings: an entry dead-lettered, a
    plugin failure, a write refused, an order never answered, entries left pending. Marks runs
    whose load generator fell behind (``behind_pace``)."""
    problems = []
    for r in results:
        r["behind_pace"] = behind_pace(r)
        if r["side"] == "baseline":
            continue
        a = r["responder"]
        where = f"{r['side']} at {r['rate']:,}/s ({r['shape']})"
        if a.get("dead_lettered") or a.get("plugin_errors") or r["dlq"] or a.get("failed") or a.get("write_failures"):
            problems.append(
                f"{where}: {a.get('dead_lettered')} dead-lettered, {a.get('plugin_errors')} plugin errors, "
                f"{a.get('failed')} failed, {a.get('write_failures')} write failures (measurement invalid)"
            )
        if r["unanswered"]:
            problems.append(f"{where}: {r['unanswered']} orders never answered")
        if not r["answered"]:
            problems.append(f"{where}: no order was answered")
    return problems


def print_report(
    results: list[dict[str, Any]], args: argparse.Namespace, machine: dict[str, str], bar_ms: float, gated_rate: int
) -> None:
    print()
    print(
        "| shape  | orders/s | side      | achieved orders/s | events/s | p50 ms | p90 ms | p99 ms | max ms "
        "| unanswered | approve / veto |"
    )
    print(
        "|--------|----------|-----------|-------------------|----------|--------|--------|--------|--------"
        "|------------|----------------|"
    )
    for r in results:
        d = r["decisions"]
        print(
            f"| {r['shape']:<6} | {r['rate']:>8,} | {r['side']:<9} | {r['order_rate']:>17,.0f} "
            f"| {r['event_rate']:>8,.0f} | {ms(r['p50_ms']):>6} | {ms(r['p90_ms']):>6} | {ms(r['p99_ms']):>6} "
            f"| {ms(r['max_ms']):>6} | {r['unanswered']:>10} | {d.get('approve', 0):>6} / {d.get('veto', 0):<5} |"
        )
    print()
    by = {(r["shape"], r["rate"], r["side"]): r for r in results}
    for shape in args.shapes:
        for rate in args.rates:
            base = by.get((shape, rate, "baseline"))
            for side in ("navstream", "split"):
                nav = by.get((shape, rate, side))
                if nav is None:
                    continue
                ratio = ""
                if base and base["p99_ms"]:
                    ratio = f", baseline {ms(base['p99_ms'])} ms, ratio {nav['p99_ms'] / base['p99_ms']:.1f}x"
                gate = "gated" if rate == gated_rate and not args.check else "target, not gated"
                met = "met" if nav["p99_ms"] <= bar_ms else "MISSED"
                print(
                    f"p99 {shape} at {rate:,} orders/s: {side} {ms(nav['p99_ms'])} ms{ratio}; "
                    f"{bar_ms:g} ms {met} ({gate})"
                )
    for r in results:
        if r.get("behind_pace"):
            print(
                f"NOTE: {r['shape']} at {r['rate']:,} orders/s ({r['side']}) the load generator did not keep the "
                f"pace: {r['event_rate']:,.0f} events/s of {r['target_event_rate']:,}, {r['order_rate']:,.0f} "
                f"orders/s of {r['rate']:,}, orders left p99 {r['sender_late_p99_ms']:.1f} ms / max "
                f"{r['sender_late_max_ms']:.1f} ms after their due time (latency is timed from the actual XADD, "
                "so this does not hide in the figures: the machine was saturated)"
            )
    for r in results:
        if r["side"] != "baseline":
            a = r["responder"]
            print(
                f"{r['side']} {r['shape']} at {r['rate']:,}/s: plugins {', '.join(a.get('plugins', []))}; "
                f"reasons {r['reasons'] or '{}'}, alerts {r['alerts'] or '{}'}, audit "
                f"{a.get('audit', {}).get('written')} written / {a.get('audit', {}).get('dropped')} dropped, "
                f"events lag at the end of the window {r['events_lag_at_end']}"
            )
    print(
        f"load average before {machine['loadavg_before']}, after {machine['loadavg_after']} "
        "(other processes on these 2 cores change every figure)"
    )

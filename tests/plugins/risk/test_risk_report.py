"""What the risk gate reports: the trading state decoded as the gate decodes it (an unreadable
record is halted, never shown as active), and its decision counts on /metrics even when the
trading records cannot be read for a scrape (the failure counted, the counters kept typed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.serving import FAST, SECTIONS, metrics_of, order, serving, until

import navstream.plugins.risk.report as risk_report
from navstream.plugins.risk.report import trading_rows


def test_an_unreadable_trading_record_is_shown_halted_as_the_gate_takes_it() -> None:
    rows = trading_rows({"binance%3Amain": '{"at": "x"}', "*": '{"state": "reducing", "reason": "dd", "at": 5}'})
    by_scope = {row["scope"]: row for row in rows}
    assert by_scope["desk"]["state"] == "reducing" and by_scope["desk"]["at"] == 5
    unreadable = next(row for scope, row in by_scope.items() if scope != "desk")
    assert unreadable["state"] == "halted" and "unreadable" in unreadable["reason"]


@pytest.mark.usefixtures("no_cache")
async def test_risk_counts_stay_counters_when_the_trading_records_cannot_be_read(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sections = {**SECTIONS, "risk": {**SECTIONS["risk"], "audit_dir": str(tmp_path)}}
    app = make_app(builtins=True, extra=sections, consumer=FAST)
    async with serving(app) as (_, client):
        await app.redis.xadd(app.keys.orders, order("o-1", "0.1"))
        await until(lambda: app.stats.processed >= 1, what="the order")

        async def unreachable(app: Any) -> Any:
            raise ConnectionError("Redis went away mid-scrape")

        monkeypatch.setattr(risk_report, "read_trading", unreachable)
        m = metrics_of((await client.get("/metrics")).text)
    names = {(name, dict(labels).get("plugin"), dict(labels).get("key")) for name, labels in m}
    assert ("navstream_plugin_counter_total", "risk", "audit_written") in names
    assert not any(name == "navstream_plugin_health_value" and plugin == "risk" for name, plugin, _ in names)
    assert any(name == "navstream_risk_decisions_total" for name, _, _ in names)
    assert not any(name == "navstream_trading_state" for name, _, _ in names)
    assert m[("navstream_plugin_report_errors_total", (("plugin", "risk"),))] >= 1

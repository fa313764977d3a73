"""`navstream demo` is the first thing a new user runs: it must work end to end and tell the truth.

Expected figures are derived from the scenario file with the contract's decoder, never hard-coded,
so extending the scenario keeps these tests meaningful. The exception is the risk gate's answer to
each order (:data:`DECISIONS`): that is the story the scenario tells, written down once here.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import fakeredis
import pytest
import redis.asyncio as aioredis

from navstream.admin import AdminError
from navstream.app import App
from navstream.config import load_settings
from navstream.demo import (
    MAX_PAUSE_S,
    TERMINAL_WIDTH,
    ScenarioError,
    demo_settings,
    load_scenario,
    make_backend,
    pause_s,
    run_demo,
)
from navstream.events import DecodeError, decode_event, decode_order

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "core" / "demo_scenario.jsonl"
DEMO_TOML = ROOT / "config" / "demo.toml"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
START_MS = 1_790_000_000_000
TOTALS = re.compile(r"^entries: (\d+) in, (\d+) processed, (\d+) dead-lettered$", re.M)


@dataclass
class Expected:
    total: int
    valid: int
    #: (bad value of the named field, field name) of every entry the contract rejects.
    rejected: list[tuple[str, str]]


def expected_from_file() -> Expected:
    """Decode every scenario entry as the loop will, straight from the JSON lines."""
    total, valid, rejected = 0, 0, []
    for line in SCENARIO.read_text("utf-8").splitlines():
        if not line.strip():
            continue
        for entry in json.loads(line)["entries"]:
            total += 1
            fields = {k: v for k, v in entry.items() if k != "ts_offset_s"}
            fields["ts"] = str(START_MS + int(Decimal(entry["ts_offset_s"]) * 1000))
            try:
                # As the loop reads them: orders from P:orders (one that names its order_id is
                # answered even when broken), everything else from P:events.
                decode_order(fields) if fields.get("type") == "order" else decode_event(fields)
                valid += 1
            except DecodeError as exc:
                assert exc.field, f"the scenario's bad entry should break one named field: {exc}"
                rejected.append((fields.get(exc.field, ""), exc.field))
    return Expected(total, valid, rejected)


def section(text: str, title: str) -> str:
    """The summary block that starts with ``title`` and ends at the next blank line pair."""
    start = text.index(title)
    end = text.find("\n\n", text.find("\n", start) + 1)
    return text[start: end if end != -1 else None]


async def test_demo_replays_scenario_through_the_loop() -> None:
    out = io.StringIO()
    assert await run_demo(None, None, 1.0, True, out=out) == 0
    text = out.getvalue()
    expected = expected_from_file()

    totals = TOTALS.search(text)
    assert totals, text
    assert [int(g) for g in totals.groups()] == [expected.total, expected.valid, len(expected.rejected)]
    assert expected.rejected, "the scenario must contain a malformed entry"

    dead = section(text, "dead letters (")
    for value, field_name in expected.rejected:
        line = next((ln for ln in dead.splitlines() if f"{field_name}={value}" in ln), None)
        assert line is not None, dead
        assert f"field `{field_name}`" in line, line

    alerts = section(text, "alerts (")
    codes = {ln.split()[0] for ln in alerts.splitlines()[2:] if ln.strip()}
    assert {"source_failed", "source_recovered", "source_silent", "trading_halted"} <= codes, alerts

    by_type = dict(ln.split() for ln in section(text, "processed by type").splitlines()[3:])
    assert int(by_type["order"]) == len(scenario_orders())

    rows = [ln for ln in live_table(text) if re.match(r"T\+\d\d:\d\d  ", ln)]  # not the decisions' times
    assert len(rows) == len(load_scenario())
    assert "\x1b[" not in text  # a StringIO is not a terminal: no colour codes


# --- the risk gate -----------------------------------------------------------------------------

#: The gate's answer to each order of the scenario: (decision, trading state, NAV status, reasons).
DECISIONS = {
    "eng-000123": ("approve", "active", "ok", ""),  # healthy desk, small bid
    "eng-000124": ("approve", "active", "ok", ""),  # the OKX bid that fills during the outage
    "eng-000125": ("veto", "active", "ok", "order_pct_nav"),  # 8 BTC: over 25 % of the account's NAV
    "eng-000126": ("veto", "active", "stale", "nav_stale, source_unhealthy"),  # OKX's API failing
    "eng-000127": ("approve", "active", "ok", ""),  # Binance is not the account affected
    "eng-000128": ("veto", "halted", "ok", "trading_halted"),  # the wallet reads 0: drawdown halts
    "eng-000129": ("veto", "halted", "ok", "trading_halted"),  # wallet back: still halted
}


@dataclass
class SentOrder:
    at_s: int
    order_id: str
    account: str


def scenario_orders() -> list[SentOrder]:
    return [SentOrder(step.at_s, e["order_id"], f"{e['venue']}/{e['account']}")
            for step in load_scenario(SCENARIO.read_text("utf-8")) for e in step.entries if e["type"] == "order"]


def zero_wallet_at_s() -> int:
    """When the scenario's futures wallet reads 0 (found in the file, not assumed)."""
    return next(step.at_s for step in load_scenario(SCENARIO.read_text("utf-8")) for e in step.entries
                if e["type"] == "balance" and e["venue"] == "binance" and Decimal(e["balance"]) == 0)


def label(seconds: int) -> str:
    return f"T+{seconds // 60:02d}:{seconds % 60:02d}"


def table_rows(block: str) -> list[list[str]]:
    """The rows of a render.table block (after its title, header and rule), cells split on the
    two spaces between columns; lines indented under the table are not rows."""
    lines = block.splitlines()[3:]
    return [re.split(r"\s{2,}", ln.strip()) for ln in lines if ln.strip() and not ln.startswith("  ")]


def live_table(text: str) -> list[str]:
    start = text.index("time     what happens")
    return text[start: text.index("\n\n", start)].splitlines()


def step_lines(text: str, at_s: int) -> list[str]:
    """A step's row in the live table and the lines under it (alerts, decisions)."""
    lines = live_table(text)
    first = next(i for i, ln in enumerate(lines) if ln.startswith(label(at_s) + "  "))
    rest = lines[first + 1:]
    end = next((i for i, ln in enumerate(rest) if not ln.startswith(" ")), len(rest))
    return [lines[first], *rest[:end]]


def test_decisions_expected_for_every_order_of_the_scenario() -> None:
    assert {o.order_id for o in scenario_orders()} == set(DECISIONS)


@pytest.mark.parametrize("redis_url", [None, pytest.param(REDIS_URL, marks=pytest.mark.real_redis)])
async def test_demo_shows_the_risk_gate(redis_url: str | None) -> None:
    out = io.StringIO()
    prefix = None if redis_url is None else f"nstest-demo-{uuid.uuid4().hex[:10]}"
    assert await run_demo(redis_url, prefix, 1.0, True, out=out) == 0
    text = out.getvalue()
    orders = scenario_orders()

    # Every order sent is answered, in order, with the decision of the story; a re-sent
    # order_id gets its first answer again, field for field (its decision time included).
    block = section(text, "decisions (")
    assert f"{len(orders)} answers to {len(orders)} orders sent" in block.splitlines()[0], block
    rows = table_rows(block)
    first_sent: dict[str, int] = {}
    for order in orders:
        first_sent.setdefault(order.order_id, order.at_s)
    assert [r[1] for r in rows] == [o.order_id for o in orders], block
    for row, order in zip(rows, orders):
        decided, order_id, account, decision, trading, nav_status, reasons = row
        expected = DECISIONS[order_id]
        assert (decision, trading, nav_status, "" if reasons == "-" else reasons) == expected, row
        assert account == order.account and decided == label(first_sent[order_id]), row
    resent = [o.order_id for o in orders if first_sent[o.order_id] != o.at_s]
    assert resent, "the scenario must re-send an order_id"
    for order_id in resent:
        same = [r for r in rows if r[1] == order_id]
        assert len(same) > 1 and all(r == same[0] for r in same), block
        assert f"{order_id} sent {len(same)} times, answered {len(same)} times: the first decision each " \
               "time, field for field" in block

    # The zero wallet halts its account by drawdown; the wallet comes back, the account does not.
    zero = zero_wallet_at_s()
    after = [o for o in orders if o.at_s > zero and o.account == "binance/usdm-main"]
    assert after, "the scenario must send an order after the wallet is back"
    for order in after:
        assert DECISIONS[order.order_id][:3] == ("veto", "halted", "ok")  # NAV recovered, still halted
    trading = {r[0]: r for r in table_rows(section(text, "trading state at"))}
    assert trading["binance/usdm-main"][1:4] == ["halted", label(zero), "drawdown"], trading
    assert all(r[1] == "active" for scope, r in trading.items() if scope != "binance/usdm-main"), trading
    assert "recovery does not resume it, ops do: navstream risk resume --account usdm-main" in text

    # The live table shows each step's decisions under its row.
    for at_s in sorted({o.at_s for o in orders}):
        detail = [ln for ln in step_lines(text, at_s) if ln.lstrip().startswith("decisions  ")]
        assert len(detail) == 1, step_lines(text, at_s)
    zero_step = "\n".join(step_lines(text, zero))
    assert "decisions  veto 1 (trading_halted)" in zero_step and "trading_halted" in zero_step.split("alerts")[1]
    for order_id in resent:
        assert f"{order_id} re-sent: veto (nav_stale, source_unhealthy), as given at " \
               f"{label(first_sent[order_id])}" in text


async def test_demo_reads_on_a_100_column_terminal() -> None:
    out = io.StringIO()
    assert await run_demo(None, None, 1.0, True, out=out) == 0
    text = out.getvalue()
    header = text[: text.index("\n\n")].splitlines()
    shown = [*header, *live_table(text), *section(text, "decisions (").splitlines(),
             *section(text, "trading state at").splitlines()]
    too_wide = [ln for ln in shown if len(ln) > TERMINAL_WIDTH]
    assert TERMINAL_WIDTH == 100 and not too_wide, "\n".join(too_wide)


def test_cli_demo_fast_in_a_subprocess() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    proc = subprocess.run([sys.executable, "-m", "navstream.cli", "demo", "--fast"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "\nsummary\n" in proc.stdout
    totals = TOTALS.search(proc.stdout)
    assert totals and int(totals.group(2)) == expected_from_file().valid
    assert '"level": "warning"' not in proc.stderr  # the table shows alerts; logs stay quiet


@pytest.mark.real_redis
async def test_demo_on_real_redis_leaves_no_key() -> None:
    prefix = f"nstest-demo-{uuid.uuid4().hex[:10]}"
    out = io.StringIO()
    assert await run_demo(REDIS_URL, prefix, 1.0, True, out=out) == 0
    assert f"prefix {prefix}" in out.getvalue()
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert [k async for k in client.scan_iter(match=f"{prefix}:*")] == []
    finally:
        await client.aclose()


@pytest.mark.real_redis
async def test_demo_refuses_a_prefix_in_use() -> None:
    """It deletes every key under its prefix at the end, so it must not start on someone's."""
    prefix = f"nstest-demo-{uuid.uuid4().hex[:10]}"
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.set(f"{prefix}:someone-else", "keep me")
        with pytest.raises(AdminError, match="already has 1 key"):
            await run_demo(REDIS_URL, prefix, 1.0, True, out=io.StringIO())
        assert await client.get(f"{prefix}:someone-else") == "keep me"
        assert [k async for k in client.scan_iter(match=f"{prefix}:*")] == [f"{prefix}:someone-else"]
    finally:
        await client.delete(f"{prefix}:someone-else")
        await client.aclose()


async def test_config_file_matches_embedded_demo_config() -> None:
    from_file = load_settings(DEMO_TOML, env={})
    embedded = demo_settings()
    assert from_file.redis == embedded.redis
    assert from_file.consumer == embedded.consumer
    assert from_file.plugins == embedded.plugins
    assert from_file.extra == embedded.extra

    server = fakeredis.FakeServer()
    apps = [App.create(s, connect=lambda d: fakeredis.FakeAsyncRedis(server=server, decode_responses=d))
            for s in (from_file, embedded)]
    try:
        silence = [a.plugin_config("source_monitor").max_silence_s for a in apps]
        assert silence[0] == silence[1] == 60
    finally:
        for app in apps:
            await app.aclose()


def test_cli_flags_override_the_embedded_config() -> None:
    settings = demo_settings("redis://10.0.0.5:6380/2", "my-demo")
    assert (settings.redis.url, settings.redis.prefix) == ("redis://10.0.0.5:6380/2", "my-demo")
    assert demo_settings().redis.prefix == "navstream-demo"


def test_header_never_shows_a_password() -> None:
    url = "redis://ops:s3cret@redis.internal:6379/0"
    label = make_backend(demo_settings(url), url).label
    assert "s3cret" not in label and "redis.internal" in label


def test_default_pace_is_10_to_20_seconds() -> None:
    steps = load_scenario()
    paced = sum(pause_s(a, b, 1.0, False) for a, b in zip([None, *steps], steps))
    assert 10 <= paced <= 20
    assert all(pause_s(a, b, 1.0, False) <= MAX_PAUSE_S for a, b in zip(steps, steps[1:]))
    assert sum(pause_s(a, b, 1.0, True) for a, b in zip([None, *steps], steps)) == 0


def test_scenario_without_ts_offset_is_refused() -> None:
    line = json.dumps({"at_s": 0, "note": "x", "entries": [{"type": "price", "ts": "1790000000000"}]})
    with pytest.raises(ScenarioError, match="ts_offset_s"):
        load_scenario(line)

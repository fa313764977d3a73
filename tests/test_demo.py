"""`navstream demo` is the first thing a new user runs: it must work end to end and tell the truth.

Expected figures are derived from the scenario file with the contract's decoder, never hard-coded,
so extending the scenario (NAV and risk plugins will) keeps these tests meaningful.
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
    ScenarioError,
    demo_settings,
    load_scenario,
    make_backend,
    pause_s,
    run_demo,
)
from navstream.events import DecodeError, decode_event

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
                decode_event(fields)
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
    assert {"source_failed", "source_recovered", "source_silent"} <= codes, alerts

    rows = [ln for ln in text.splitlines() if re.match(r"T\+\d\d:\d\d  ", ln)]
    assert len(rows) == len(load_scenario())
    assert "\x1b[" not in text  # a StringIO is not a terminal: no colour codes


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

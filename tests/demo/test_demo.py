"""`navstream demo` is the first thing a new user runs: it must work end to end and tell the truth.

Expected figures are derived from the scenario file with the contract's decoder, never hard-coded,
so extending the scenario keeps these tests meaningful. The exception is the risk gate's answer to
each order (:data:`DECISIONS`): that is the story the scenario tells, written down once here.

The CoinGecko prices are not scripted: the real `coingecko` source fetches them from the demo's
stub venue at the steps that run it, and publishes them and its `source_status` itself. The tests
below prove it from what lands in `P:events`, step by step.
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
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from support import ROOT

from navstream.app import App, ManualClock
from navstream.config import load_settings
from navstream.contract.events import DecodeError, decode_event, decode_order
from navstream.demo import (
    COINGECKO_429_BODY,
    MAX_PAUSE_S,
    Replay,
    ScenarioError,
    SourceAttempt,
    Step,
    StepRow,
    StubVenue,
    VenueAnswer,
    delete_prefix,
    demo_settings,
    load_scenario,
    make_backend,
    pause_s,
    run_demo,
    with_audit_dir,
)
from navstream.ops.admin import AdminError

SCENARIO = ROOT / "core" / "demo" / "demo_scenario.jsonl"
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


def coingecko_ids() -> dict[str, list[str]]:
    """CoinGecko id -> the assets it prices, from config/demo.toml's [sources.coingecko.ids]."""
    ids: dict[str, list[str]] = {}
    for asset, cg_id in msgspec.toml.decode(DEMO_TOML.read_bytes())["sources"]["coingecko"]["ids"].items():
        ids.setdefault(cg_id, []).append(asset)
    return ids


def expected_from_file() -> Expected:
    """Decode every scenario entry as the loop will, straight from the JSON lines; a source
    attempt counts what the source publishes: a price per asset of each id answered, and its
    source_status (alone when the attempt fails)."""
    total, valid, rejected = 0, 0, []
    assets = coingecko_ids()
    for line in SCENARIO.read_text("utf-8").splitlines():
        if not line.strip():
            continue
        for entry in json.loads(line)["entries"]:
            if "type" not in entry:
                answer = entry.get("answer") or {}
                prices = answer.get("prices", {}) if answer.get("status") == 200 else {}
                published = sum(len(assets[cg_id]) for cg_id in prices) + 1
                total, valid = total + published, valid + published
                continue
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
    return text[start : end if end != -1 else None]


async def test_demo_replays_scenario_through_the_loop() -> None:
    out = io.StringIO()
    assert await run_demo(None, None, 1.0, True, out=out, width=None) == 0
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
    assert {"source_failed", "source_recovered", "nav_stale", "nav_recovered", "trading_halted"} <= codes, alerts

    by_type = dict(ln.split() for ln in section(text, "processed by type").splitlines()[3:])
    assert int(by_type["order"]) == len(scenario_orders())

    rows = [ln for ln in live_table(text) if re.match(r"T\+\d\d:\d\d  ", ln)]  # not the decisions' times
    assert len(rows) == len(load_scenario())
    assert "\x1b[" not in text  # a StringIO is not a terminal: no colour codes


# --- the risk gate -----------------------------------------------------------------------------

#: The gate's answer to each order of the scenario: (decision, trading state, NAV status, reasons).
DECISIONS = {
    "eng-000123": ("approve", "active", "ok", ""),  # healthy desk, small bid
    # a fat finger: 5 BTC limited at 0.01, sized at the market and refused for its price
    "eng-000123f": ("veto", "active", "ok", "price_off_market"),
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
    return [
        SentOrder(step.at_s, e["order_id"], f"{e['venue']}/{e['account']}")
        for step in load_scenario(SCENARIO.read_text("utf-8"))
        for e in step.scripted
        if e["type"] == "order"
    ]


def zero_wallet_at_s() -> int:
    """When the scenario's futures wallet reads 0 (found in the file, not assumed)."""
    return next(
        step.at_s
        for step in load_scenario(SCENARIO.read_text("utf-8"))
        for e in step.scripted
        if e["type"] == "balance" and e["venue"] == "binance" and Decimal(e["balance"]) == 0
    )


def label(seconds: int) -> str:
    return f"T+{seconds // 60:02d}:{seconds % 60:02d}"


def table_rows(block: str) -> list[list[str]]:
    """The rows of a render.table block (after its title, header and rule), cells split on the
    two spaces between columns; lines indented under the table are not rows."""
    lines = block.splitlines()[3:]
    return [re.split(r"\s{2,}", ln.strip()) for ln in lines if ln.strip() and not ln.startswith("  ")]


def live_table(text: str) -> list[str]:
    start = text.index("time     what happens")
    return text[start : text.index("\n\n", start)].splitlines()


def step_lines(text: str, at_s: int) -> list[str]:
    """A step's row in the live table and the lines under it (alerts, decisions)."""
    lines = live_table(text)
    first = next(i for i, ln in enumerate(lines) if ln.startswith(label(at_s) + "  "))
    rest = lines[first + 1 :]
    end = next((i for i, ln in enumerate(rest) if not ln.startswith(" ")), len(rest))
    return [lines[first], *rest[:end]]


def test_decisions_expected_for_every_order_of_the_scenario() -> None:
    assert {o.order_id for o in scenario_orders()} == set(DECISIONS)


@pytest.mark.parametrize("redis_url", [None, pytest.param(REDIS_URL, marks=pytest.mark.real_redis)])
async def test_demo_shows_the_risk_gate(redis_url: str | None) -> None:
    out = io.StringIO()
    prefix = None if redis_url is None else f"nstest-demo-{uuid.uuid4().hex[:10]}"
    assert await run_demo(redis_url, prefix, 1.0, True, out=out, width=None) == 0
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
        assert (
            f"{order_id} sent {len(same)} times, answered {len(same)} times: the first decision each "
            "time, field for field" in block
        )

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
        assert (
            f"{order_id} re-sent: veto (nav_stale, source_unhealthy), as given at {label(first_sent[order_id])}" in text
        )


def test_cli_demo_fast_in_a_subprocess() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    proc = subprocess.run(
        [sys.executable, "-m", "navstream.cli", "demo", "--fast"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
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
    apps = [
        App.create(s, connect=lambda d: fakeredis.FakeAsyncRedis(server=server, decode_responses=d))
        for s in (from_file, embedded)
    ]
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


# --- the CoinGecko prices come from the real source ----------------------------------------------


def is_coingecko(fields: dict[str, str]) -> bool:
    return fields.get("source") == "coingecko" or fields.get("venue") == "coingecko"


@dataclass
class Played:
    step: Step
    row: StepRow
    #: What reached P:events during the step, in stream order, as stored.
    events: list[dict[str, str]]


async def play_scenario(redis_url: str | None, audit_dir: Path) -> tuple[list[Played], dict[str, int]]:
    """The bundled scenario through :class:`Replay` as ``run_demo`` plays it, one step at a time;
    returns each step and the ingest's attempt and failure counts of ``coingecko``."""
    prefix = None if redis_url is None else f"nstest-demo-{uuid.uuid4().hex[:10]}"
    settings = with_audit_dir(demo_settings(redis_url, prefix), str(audit_dir))
    backend = make_backend(settings, redis_url)
    clock = ManualClock(START_MS)
    app = App.create(settings, connect=backend.connect, clock=clock)
    producer = backend.connect(True)
    replay = Replay(app, clock, producer, START_MS)
    played, last = [], "0-0"
    try:
        await replay.start()
        for step in load_scenario():
            row = await replay.play(step)
            rows = await app.redis.xrange(app.keys.events, min=f"({last}", max="+")
            last = rows[-1][0] if rows else last
            played.append(Played(step, row, [fields for _, fields in rows]))
        await replay.stop()
        assert replay.sources is not None
        run = replay.sources.ingest.runs["coingecko"]
        counts = {"attempts": run.attempts, "failures": run.failures}
    finally:
        await replay.aclose()
        if backend.real:
            await delete_prefix(producer, app.keys.prefix)
        await producer.aclose()
        await app.aclose()
    return played, counts


def bank_nav(row: StepRow) -> dict[str, object]:
    assert row.nav is not None
    return next(s for s in row.nav if s["scope"] == "account" and s["name"] == "bank/treasury")


def test_scenario_scripts_no_coingecko_event() -> None:
    """Every CoinGecko price and status is the source's: the file scripts none of them."""
    steps = load_scenario(SCENARIO.read_text("utf-8"))
    assert not [e for step in steps for e in step.scripted if is_coingecko(e)]
    answers = [a.answer for step in steps for a in step.attempts]
    assert answers and all(a is None or a.status is not None or a.timeout for a in answers)
    # The outage: a 429 with Retry-After, steps it blocks, a timeout, then a good answer again.
    kinds = [
        "429" if a and a.status == 429 else "blocked" if a is None else "timeout" if a.timeout else str(a.status)
        for a in answers
    ]
    assert "429" in kinds and "blocked" in kinds and "timeout" in kinds
    assert kinds[-1] == "200" and kinds.index("429") < kinds.index("blocked") < kinds.index("timeout")


@pytest.mark.parametrize("redis_url", [None, pytest.param(REDIS_URL, marks=pytest.mark.real_redis)])
async def test_coingecko_prices_and_status_are_published_by_the_source(redis_url: str | None, tmp_path: Path) -> None:
    played, counts = await play_scenario(redis_url, tmp_path)
    assets = coingecko_ids()
    asset_count = sum(len(a) for a in assets.values())
    attempts = failures = 0
    before_outage = outage = recovered = False
    for p in played:
        at, step_ms = label(p.step.at_s), START_MS + p.step.at_ms
        mine = [e for e in p.events if is_coingecko(e)]
        if not p.step.attempts:
            assert mine == [] and p.row.attempts == [], at
            continue
        (attempt,), (report,) = p.step.attempts, p.row.attempts
        attempts += 1
        # Written by the attempt, at its place among the step's entries, its status last (one
        # MULTI of the ingest code), stamped by the source on the simulated clock.
        before = sum(
            1 for e in p.step.entries[: p.step.entries.index(attempt)] if isinstance(e, dict) and e["type"] != "order"
        )
        assert p.events[before : before + len(mine)] == mine == report.written, at
        status = mine[-1]
        assert (status["type"], status["venue"], status["source"], status["ts"]) == (
            "source_status",
            "coingecko",
            "coingecko",
            str(step_ms),
        ), at
        answer = attempt.answer
        if answer is not None and answer.status == 200:
            assert report.requests == 1 and report.ids == len(assets), at  # one batched request
            got = {(e["base"], e["quote"]): (Decimal(e["price"]), int(e["ts"])) for e in mine[:-1]}
            assert all(e["type"] == "price" for e in mine[:-1]), at
            assert got == {
                (asset, "USD"): (Decimal(price), step_ms - answer.age_s * 1000)
                for cg_id, price in answer.prices.items()
                for asset in assets[cg_id]
            }, at
            assert len(got) == asset_count and status["ok"] == "true" and "error" not in status, at
            if outage:
                recovered = True
                assert bank_nav(p.row)["status"] == "ok", at
            elif bank_nav(p.row)["status"] == "ok":
                before_outage = True
            continue
        # The outage: only the failed status, in the source's own words; no price at all.
        failures += 1
        outage = True
        assert mine == [status] and status["ok"] == "false", at
        error = status["error"]
        if answer is None:  # the 429's Retry-After still holds: nothing is sent
            assert report.requests == 0, at
            assert error.startswith("api.coingecko.com: HTTP 429 (rate limited), retry after "), error
            assert "free in" in error, error
        elif answer.timeout:
            assert report.requests == 1 and error.endswith("on api.coingecko.com: timed out (ReadTimeout)"), error
        else:
            assert answer.status == 429 and report.requests == 1, at
            assert error.startswith(
                "HTTP 429 on coingecko /simple/price (4 ids) (api.coingecko.com); every "
                f"request to it waits {answer.retry_after_s}s: "
            ), error
            assert "You've exceeded the Rate Limit" in error, error  # CoinGecko's body, quoted
        # The bank's EUR is priced by CoinGecko: its NAV turns stale on its own.
        bank = bank_nav(p.row)
        assert bank["status"] == "stale", (at, bank)
        assert any("coingecko" in str(s) for s in cast_list(bank["stale_sources"])), (at, bank)
    assert before_outage and outage and recovered
    assert counts == {"attempts": attempts, "failures": failures}


def cast_list(value: object) -> list[object]:
    assert isinstance(value, list)
    return value


async def test_live_table_shows_the_source_failing_and_recovering() -> None:
    out = io.StringIO()
    assert await run_demo(None, None, 1.0, True, out=out, width=None) == 0
    text = out.getvalue()
    assert "source coingecko runs for real" in text
    steps = load_scenario()
    answered = [(s.at_s, s.attempts[0].answer) for s in steps if s.attempts]
    first_429 = next(at for at, a in answered if a is not None and a.status == 429)
    lines = "\n".join(step_lines(text, first_429))
    assert "CoinGecko answers 429 (rate limited)" in lines and "coingecko FAIL" in lines
    assert "coingecko  asked 4 ids, HTTP 429, Retry-After 120 s -> no price, source_status ok=false" in lines
    assert '"HTTP 429 on coingecko /simple/price' in lines and "source_failed" in lines
    for at, answer in answered:
        lines = "\n".join(step_lines(text, at))
        if answer is None:
            assert "coingecko  not asked (host blocked by the 429) -> no price, source_status ok=false" in lines
            assert '"api.coingecko.com: HTTP 429 (rate limited)' in lines and "coingecko FAIL" in lines
        elif answer.timeout:
            assert "no answer (timed out)" in lines and "timed out (ReadTimeout)" in lines
    recovery = next(at for at, a in answered if at > first_429 and a is not None and a.status == 200)
    lines = "\n".join(step_lines(text, recovery))
    assert "coingecko  asked 4 ids, HTTP 200 -> 4 prices, source_status ok" in lines
    assert "source_recovered" in lines and "nav_recovered" in lines and "all 6 ok" in lines


async def test_demo_output_is_the_same_every_run() -> None:
    """Deterministic but for the wall clock: the start line and stream ids (XADD's time)."""
    texts = []
    for _ in range(2):
        out = io.StringIO()
        assert await run_demo(None, None, 1.0, True, out=out, width=None) == 0
        texts.append(re.sub(r"simulated clock starts [^;]*;|\b\d{13}-\d+\b", "<time>", out.getvalue()))
    assert texts[0] == texts[1]


# --- the stub venue and the scenario's source attempts -----------------------------------------

PRICE_URL = (
    "https://api.coingecko.com/api/v3/simple/price?ids=bitcoin,tether,ghost&vs_currencies=usd"
    "&include_last_updated_at=true&precision=full"
)


def test_stub_venue_answers_like_coingecko() -> None:
    clock = ManualClock(START_MS)
    venue = StubVenue(clock)
    observed = START_MS // 1000 - 5
    venue.expect(VenueAnswer(status=200, prices={"bitcoin": "96871.15", "tether": "1.0003"}, age_s=5))
    answer = venue.handle(httpx.Request("GET", PRICE_URL))
    # Exact JSON numbers, last_updated_at in seconds, an unknown id left out, as CoinGecko does.
    assert answer.status_code == 200 and answer.content == (
        b'{"bitcoin":{"usd":96871.15,"last_updated_at":%d},"tether":{"usd":1.0003,"last_updated_at":%d}}'
        % (observed, observed)
    )
    assert venue.asked == [("/api/v3/simple/price", ["bitcoin", "tether", "ghost"])]

    venue.expect(VenueAnswer(status=429, retry_after_s=120))
    answer = venue.handle(httpx.Request("GET", PRICE_URL))
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "120")
    assert answer.json()["status"]["error_code"] == 429 and answer.text == COINGECKO_429_BODY
    assert "exceeded the Rate Limit" in answer.json()["status"]["error_message"]

    venue.expect(VenueAnswer(status=503))
    assert venue.handle(httpx.Request("GET", PRICE_URL)).text == "Service Unavailable"
    venue.expect(VenueAnswer(timeout=True))
    with pytest.raises(httpx.ReadTimeout):
        venue.handle(httpx.Request("GET", PRICE_URL))

    venue.expect(None)  # the scenario says the source does not ask here
    assert venue.handle(httpx.Request("GET", PRICE_URL)).status_code == 500 and venue.unexpected


def steps_text(*steps: tuple[int, list[dict[str, object]]]) -> str:
    return "\n".join(json.dumps({"at_s": at, "note": "x", "entries": entries}) for at, entries in steps)


OK_ANSWER = {"status": 200, "prices": {"bitcoin": "96871.15"}, "age_s": 5}


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"source": "kraken", "answer": OK_ANSWER}, "'kraken' is not a source the stub venue answers for"),
        ({"source": "coingecko", "answer": {"status": 200}}, "status 200 needs `prices`"),
        (
            {"source": "coingecko", "answer": {"status": 200, "prices": {"dogecoin": "0.4"}}},
            "'dogecoin' is not one of the ids [sources.coingecko.ids] asks",
        ),
        ({"source": "coingecko", "answer": {"status": 200, "prices": {"bitcoin": "lots"}}}, "not a decimal number"),
        (
            {"source": "coingecko", "answer": {"status": 200, "prices": {"bitcoin": "1"}, "retry_after_s": 5}},
            "no `retry_after_s`",
        ),
        ({"source": "coingecko", "answer": {"status": 429, "timeout": True}}, "either `status` or `timeout: true`"),
        ({"source": "coingecko", "answer": {}}, "either `status` or `timeout: true`"),
        ({"source": "coingecko", "answer": {"timeout": True, "age_s": 5}}, "a timeout has no"),
        ({"source": "coingecko", "answer": {"status": 404, "retry_after_s": 60}}, "goes with 429 or 503"),
        ({"source": "coingecko", "answer": {"status": 418}}, "418 is Binance's"),
        ({"source": "coingecko", "answer": {"status": 302}}, "200 or an error status"),
        ({"source": "coingecko", "answer": {"status": 500, "prices": {"bitcoin": "1"}}}, "carries no `prices`"),
        (
            {"source": "coingecko", "answer": {"status": 200, "price": {}}},
            "source attempt: Object contains unknown field",
        ),
        ({"source": "coingecko", "answer": OK_ANSWER, "ts_offset_s": "0"}, "unknown field"),
        ({"venue": "okx"}, "neither a scripted event (with `type`) nor a source attempt"),
        ({"type": "price", "price": 1.5, "ts_offset_s": "0"}, "fields are strings; not price"),
        ({"source": "coingecko"}, "coingecko asks at this step (no 429 blocks it): script its `answer`"),
    ],
)
def test_scenario_source_attempt_is_checked(entry: dict[str, object], error: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(error)) as caught:
        load_scenario(steps_text((0, [entry])))
    assert str(caught.value).startswith("demo_scenario.jsonl:1: ")


def test_scenario_replays_the_retry_after_blocks() -> None:
    limited = {"source": "coingecko", "answer": {"status": 429, "retry_after_s": 120}}
    blocked = {"source": "coingecko"}
    fine = load_scenario(
        steps_text(
            (0, [limited]), (45, [blocked]), (90, [blocked]), (120, [{"source": "coingecko", "answer": OK_ANSWER}])
        )
    )
    assert [s.attempts[0].answer is None for s in fine] == [False, True, True, False]
    assert isinstance(fine[0].entries[0], SourceAttempt)

    with pytest.raises(
        ScenarioError,
        match=re.escape(
            "demo_scenario.jsonl:2: coingecko asks nothing here: the 429 at T+00:00 blocks its host until T+02:00"
        ),
    ):
        load_scenario(steps_text((0, [limited]), (45, [{"source": "coingecko", "answer": OK_ANSWER}])))
    # 10 s left of the block, less than the source's timeout_s (20 s): it would wait, in real time.
    with pytest.raises(
        ScenarioError,
        match=re.escape(
            "demo_scenario.jsonl:2: the 429 at T+00:00 blocks coingecko until T+02:00, 10s after this step: "
            "within its timeout_s (20s)"
        ),
    ) as caught:
        load_scenario(steps_text((0, [limited]), (110, [blocked])))
    assert "Move the step before T+01:40, or to T+02:00 or later" in str(caught.value)
    # Without Retry-After, CoinGecko's 429 blocks for a minute.
    with pytest.raises(ScenarioError, match=re.escape("blocks its host until T+01:00")):
        load_scenario(
            steps_text(
                (0, [{"source": "coingecko", "answer": {"status": 429}}]),
                (30, [{"source": "coingecko", "answer": OK_ANSWER}]),
            )
        )
    with pytest.raises(ScenarioError, match="runs twice in one step"):
        load_scenario(steps_text((0, [{"source": "coingecko", "answer": OK_ANSWER}] * 2)))


async def test_replay_refuses_what_the_source_would_not_do(tmp_path: Path) -> None:
    """Past load_scenario's checks, the replay itself refuses an answer nobody asked for, and
    a block the source would wait out in real time while the simulated clock stands still."""
    limited = SourceAttempt("coingecko", VenueAnswer(status=429, retry_after_s=120))
    settings = with_audit_dir(demo_settings(), str(tmp_path))
    backend = make_backend(settings, None)
    clock = ManualClock(START_MS)
    app = App.create(settings, connect=backend.connect, clock=clock)
    producer = backend.connect(True)
    replay = Replay(app, clock, producer, START_MS)
    try:
        await replay.start()
        row = await replay.play(Step(0, "429", [limited]))
        assert not row.attempts[0].ok and row.attempts[0].requests == 1
        with pytest.raises(ScenarioError, match="an answer is scripted for coingecko, which asked nothing"):
            await replay.play(
                Step(45, "asks?", [SourceAttempt("coingecko", VenueAnswer(status=200, prices={"bitcoin": "1"}))])
            )
        with pytest.raises(ScenarioError, match=r"T\+01:50: coingecko would wait 10s for api.coingecko.com"):
            await replay.play(Step(110, "waits", [SourceAttempt("coingecko")]))
    finally:
        await replay.aclose()
        await producer.aclose()
        await app.aclose()

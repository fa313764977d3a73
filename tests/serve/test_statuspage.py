"""The live status page (``/`` of a consumer's HTTP endpoint) in headless Chromium.

A real ``navstream run`` with data in a real Redis serves the page; Debian's ``chromium`` loads it
through ``chromedriver``, spoken to over the W3C WebDriver protocol with httpx (no client
library: Selenium's dependencies clash with this suite's warnings-as-errors). The test waits
for the page's first poll to render and checks what a person would look at: the NAV rows and
their status colours (CSS class and the colour actually painted, which also proves the
Content-Security-Policy lets the page's own style and script run), the history chart's SVG
path, the trading state, an alert, a click that switches the chart, and a later change arriving
by polling.

Needs ``apt-get install -y chromium chromium-driver``. Without them the test is skipped here,
and fails in CI (``CI=true``), where they must be installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from support.browser import PAGE_WIDTHS, Browser, artifacts_dir, wait_for
from support.serving import free_port

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
OK_GREEN, FAILED_RED = "rgb(26, 127, 55)", "rgb(198, 40, 40)"

pytestmark = [pytest.mark.real_redis, pytest.mark.slow, pytest.mark.timeout(180)]


# Everything the assertions look at, read from the page in one go.
PAGE_STATE = """
if (document.body.dataset.loaded !== "true" || !document.getElementById("chart-line")) return {loaded: false};
const cells = tr => [...tr.cells].map(td => td.textContent);
const badge = el => el ? {cls: el.className, text: el.textContent, bg: getComputedStyle(el).backgroundColor} : null;
const line = document.getElementById("chart-line");
return {
  loaded: document.body.dataset.loaded === "true",
  ready: document.getElementById("ready").textContent,
  nav: [...document.querySelectorAll("#nav-table tbody tr")].map(tr => ({
    scope: tr.dataset.key, selected: tr.classList.contains("selected"), cells: cells(tr),
    status: badge(tr.querySelector(".status"))})),
  chart: {scope: document.getElementById("chart-scope").textContent, d: line.getAttribute("d"),
          points: line.dataset.points, valid: Number(line.dataset.valid),
          circles: document.querySelectorAll("#chart-points circle").length,
          strokeWidth: getComputedStyle(line).strokeWidth,
          empty: [...document.querySelectorAll("#chart text.empty")].map(t => t.textContent),
          y: [...document.querySelectorAll("#chart-y text")].map(t => t.textContent),
          x: [...document.querySelectorAll("#chart-x text")].map(t => t.textContent)},
  trading: [...document.querySelectorAll("#trading-table tbody tr")].map(tr => ({
    scope: tr.dataset.key, cells: cells(tr), state: badge(tr.querySelector(".trading"))})),
  decisions: document.getElementById("decisions").textContent,
  alerts: [...document.querySelectorAll("#alerts-table tbody tr")].map(tr => cells(tr).join(" | ")),
  consumers: [...document.querySelectorAll("#consumers-table tbody tr")].map(cells),
  banner: document.getElementById("banner").textContent,
};
"""

CONFIG = """
[nav]
max_age_s = 600.0
pegs = { USDT = "1" }
routes = { BTC = "BTC/USDT" }
[[nav.accounts]]
venue = "binance"
account = "main"
kind = "futures"
[[nav.accounts]]
venue = "bank"
account = "reserve"
kind = "bank"
[risk]
audit_dir = "{audit}"
"""


@pytest.fixture
def consumer(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real ``navstream run`` serving HTTP, with a desk's data in a real Redis."""
    with serving_consumer(tmp_path, CONFIG) as started:
        yield started


@contextlib.contextmanager
def serving_consumer(tmp_path: Path, config_text: str) -> Iterator[dict[str, Any]]:
    prefix = f"nstest-page-{uuid.uuid4().hex[:10]}"
    port = free_port()
    config = tmp_path / "navstream.toml"
    config.write_text(config_text.replace("{audit}", str(tmp_path / "audit")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    env.update(NAVSTREAM_REDIS_URL=REDIS_URL, NAVSTREAM_PREFIX=prefix, NAVSTREAM_LOG_STREAM="stderr")
    navstream = Path(sys.executable).parent / "navstream"
    log = (tmp_path / "consumer.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(navstream), "run", "--config", str(config), "--http-port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield {
            "prefix": prefix,
            "url": f"http://127.0.0.1:{port}/",
            "redis": client,
            "env": env,
            "config": config,
            "log": tmp_path / "consumer.log",
            "proc": proc,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def desk(prefix: str, client: redis.Redis, btc: str, ts: int) -> None:
    for fields in (
        {"type": "balance", "venue": "binance", "account": "main", "asset": "USDT", "balance": "100000"},
        {"type": "balance", "venue": "binance", "account": "main", "asset": "BTC", "balance": "2"},
        {"type": "price", "base": "BTC", "quote": "USDT", "price": btc, "source": "binance-spot"},
        {"type": "source_status", "venue": "binance", "source": "binance-futures", "account": "main", "ok": "true"},
        {"type": "source_status", "venue": "binance", "source": "binance-spot", "ok": "true"},  # the price source
    ):
        client.xadd(f"{prefix}:events", {**fields, "ts": str(ts)})


def test_status_page_in_headless_chromium(
    browser_paths: tuple[str, str], consumer: dict[str, Any], tmp_path: Path
) -> None:
    chromium, chromedriver = browser_paths
    started = time.monotonic()
    prefix, client, url = consumer["prefix"], consumer["redis"], consumer["url"]
    api = httpx.Client(base_url=url, trust_env=False, timeout=10)

    def status() -> dict[str, Any]:
        return api.get("api/status").json()  # type: ignore[no-any-return]

    wait_for(
        lambda: status()["consumer"]["phase"] == "running",
        30,
        f"the consumer to run; log: {consumer['log'].read_text()[-2000:]}",
    )
    now = int(time.time() * 1000)
    desk(prefix, client, "50000", now - 2000)
    wait_for(
        lambda: {r["id"]: r["nav"] for r in status()["nav"]}.get("account:binance/main") == "200000",
        20,
        "the first NAV",
    )
    desk(prefix, client, "51000", now - 1000)  # a second point in every scope's history
    wait_for(
        lambda: {r["id"]: r["nav"] for r in status()["nav"]}.get("account:binance/main") == "202000",
        20,
        "the second NAV",
    )
    client.xadd(
        f"{prefix}:orders",
        {
            "type": "order",
            "order_id": "o-1",
            "venue": "binance",
            "account": "main",
            "symbol": "BTCUSDT",
            "side": "buy",
            "qty": "100",
            "ts": str(now),
        },
    )
    halted = subprocess.run(
        [
            sys.executable,
            str(Path(sys.executable).parent / "navstream"),
            "risk",
            "halt",
            "--config",
            str(consumer["config"]),
            "--account",
            "main",
            "--reason",
            "drawdown drill",
            "--by",
            "tester",
        ],
        env=consumer["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert halted.returncode == 0, halted.stderr
    # The plugins' sections and navstream's own reads are each a read of their own (a second
    # apart at most): wait until the answer shows the halt in both.
    doc = wait_for(
        lambda: (
            lambda d: (
                d
                if d["risk"]["decisions"]
                and any(a["code"] == "trading_state_set" for a in d["alerts"])
                and any(t["state"] == "halted" for t in d["risk"]["trading"])
                else None
            )
        )(status()),
        20,
        "the decision and alert",
    )
    expected_points = len(doc["history"]["total"])
    assert expected_points >= 2
    data_ready = time.monotonic()

    browser = Browser(chromium, chromedriver, tmp_path)
    try:
        browser.open(url)
        page = wait_for(
            lambda: (lambda s: s if s["loaded"] and len(s["nav"]) == 6 else None)(browser.js(PAGE_STATE)),
            20,
            "the page's first render",
        )
        rendered = time.monotonic()
        browser.screenshot(tmp_path / "statuspage.png")

        rows = {row["scope"]: row for row in page["nav"]}
        assert list(rows) == [
            "total",
            "exchange",
            "venue:bank",
            "venue:binance",
            "account:bank/reserve",
            "account:binance/main",
        ]
        assert rows["account:binance/main"]["cells"][:2] == ["binance/main", "202,000.00 USD"]
        assert rows["account:binance/main"]["status"] == {"cls": "badge status status-ok", "text": "ok", "bg": OK_GREEN}
        assert rows["exchange"]["status"]["cls"] == "badge status status-ok"
        # The bank account is configured but has no data: failed, and so is the total (worst wins).
        for scope in ("account:bank/reserve", "venue:bank", "total"):
            assert rows[scope]["status"] == {"cls": "badge status status-failed", "text": "failed", "bg": FAILED_RED}
        assert rows["total"]["selected"] is True

        # The total failed at every point (the bank has no data): no line, no axis of zeros.
        chart = page["chart"]
        assert chart["scope"].startswith("total (")
        assert chart["d"] == "" and chart["y"] == [] and chart["circles"] == 0
        assert chart["empty"] == ["No value to draw: every point here failed or has none."]
        assert int(chart["points"]) >= expected_points

        trading = {row["scope"]: row for row in page["trading"]}
        assert trading["binance/main"]["state"]["cls"] == "badge trading trading-halted"
        assert trading["binance/main"]["cells"][1:] == ["halted", "drawdown drill", "ops:tester"]
        assert trading["desk"]["state"]["text"] == "active"
        assert "1 vetoed" in page["decisions"]
        assert any(
            "trading of account binance/main set to halted by ops:tester: drawdown drill" in row
            for row in page["alerts"]
        )
        assert any(row[0].endswith("(this one)") and row[1] == "running" for row in page["consumers"])
        assert page["banner"] == ""

        # A click charts another scope.
        browser.js("document.querySelector('tr[data-key=\"account:binance/main\"]').click()")
        clicked = browser.js(PAGE_STATE)
        assert clicked["chart"]["scope"].startswith("binance/main (")
        # Its first evaluation may have come before the price (failed: not drawn), then values.
        d, valid = clicked["chart"]["d"], clicked["chart"]["valid"]
        assert d.startswith("M") and d.count("M") == 1 and d.count("L") == valid - 1 >= 1, d
        assert 1 <= clicked["chart"]["circles"] <= valid  # the newest, and any value not ok
        assert clicked["chart"]["y"] and all("," in t and t[-3] == "." for t in clicked["chart"]["y"])
        assert clicked["chart"]["strokeWidth"] == "2px"  # the page's own stylesheet applies (CSP allows it)
        assert next(r for r in clicked["nav"] if r["scope"] == "account:binance/main")["selected"] is True

        # New data arrives by polling, without a reload.
        desk(prefix, client, "52000", int(time.time() * 1000))
        later = wait_for(
            lambda: (
                lambda s: (
                    s
                    if next(r for r in s["nav"] if r["scope"] == "account:binance/main")["cells"][1] == "204,000.00 USD"
                    else None
                )
            )(browser.js(PAGE_STATE)),
            15,
            "the poll",
        )
        assert int(later["chart"]["points"]) > int(clicked["chart"]["points"])
        browser.screenshot(tmp_path / "statuspage-later.png")

        # The consumer goes away: the page keeps its last answer, but judges it again itself. Once
        # the NAV's fresh_until has passed (simulated: the answer made 700 s older than it is, past
        # max_age_s = 600), an "ok" it shows turns "stale".
        consumer["proc"].terminate()
        consumer["proc"].wait(timeout=30)
        wait_for(lambda: "Status unavailable" in browser.js(PAGE_STATE)["banner"], 15, "the poll to fail")
        held = next(r for r in browser.js(PAGE_STATE)["nav"] if r["scope"] == "account:binance/main")
        assert held["status"]["text"] == "ok"  # within its fresh_until: shown as it was
        browser.js("receivedAt -= 700000;")
        judged = wait_for(
            lambda: (
                lambda s: (
                    s
                    if next(r for r in s["nav"] if r["scope"] == "account:binance/main")["status"]["text"] == "stale"
                    else None
                )
            )(browser.js(PAGE_STATE)),
            15,
            "the page to re-judge its last answer",
        )
        rows = {row["scope"]: row for row in judged["nav"]}
        assert rows["account:binance/main"]["status"]["cls"] == "badge status status-stale"
        assert rows["exchange"]["status"]["text"] == "stale"
        assert rows["total"]["status"]["text"] == "failed"  # worse than stale stays as it was
        title = browser.js("return document.querySelector('tr[data-key=\"account:binance/main\"] .status').title")
        assert title.startswith("an input passed its age limit, and no newer answer has arrived")

        problems = [
            entry
            for entry in browser.console()
            if entry.get("level") == "SEVERE"
            and "favicon" not in entry.get("message", "")
            and "api/status" not in entry.get("message", "")
        ]  # the polls after the stop
        assert not problems, json.dumps(problems, indent=1)
    finally:
        browser.quit()
        api.close()
    print(
        f"\nstatus page: data ready in {data_ready - started:.1f}s, first render {rendered - data_ready:.1f}s "
        f"after, test total {time.monotonic() - started:.1f}s"
    )


INCIDENT_CONFIG = """
[nav]
max_age_s = 600.0
pegs = { USDT = "1" }
routes = { BTC = "BTC/USDT" }
[[nav.accounts]]
venue = "binance"
account = "main"
kind = "futures"
[[nav.accounts]]
venue = "okx"
account = "hedge-subaccount-7"
kind = "futures"
label = "Desk hedging sub-account at OKX, run by the Singapore team for the basis book"
[[nav.accounts]]
venue = "bank"
account = "reserve"
kind = "bank"
[risk]
audit_dir = "{audit}"
"""

#: The total's history over the last half hour, as an incident leaves it (written to P:nav as the
#: nav plugin writes it: a failed NAV carries a placeholder "0").
INCIDENT = [
    *[(30 - m, f"{18_889_978 + m * 431}.65", "ok") for m in range(10)],
    (19, "18894420.10", "stale"),
    (18, "18894102.50", "stale"),
    (17, "18893110.25", "partial"),
    (16, "0", "failed"),
    (15, "0", "failed"),
    *[(14 - m, f"{18_893_500 + m * 250}.00", "ok") for m in range(10)],
]


@pytest.fixture
def incident(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with serving_consumer(tmp_path, INCIDENT_CONFIG) as started:
        yield started


def test_status_page_in_an_incident_at_desktop_and_phone_width(
    browser_paths: tuple[str, str], incident: dict[str, Any], tmp_path: Path
) -> None:
    """A desk in an incident, as a person sees it at 1280 and at 390 pixels: binance ok, the okx
    sub-account (a long label) partial, the bank failed, the total's history with a gap where it
    failed. Nothing wider than the screen, the chart's axes labelled, the gap drawn as a break,
    no script error; the screenshots are kept (``artifacts_dir``) for a person to review."""
    chromium, chromedriver = browser_paths
    prefix, client, url = incident["prefix"], incident["redis"], incident["url"]
    api = httpx.Client(base_url=url, trust_env=False, timeout=10)
    wait_for(lambda: api.get("api/status").json()["consumer"]["phase"] == "running", 30, "the consumer to run")
    now = int(time.time() * 1000)
    for minutes_ago, nav, status in INCIDENT:
        client.xadd(
            f"{prefix}:nav",
            {
                "scope": "total",
                "nav": nav,
                "quote": "USD",
                "status": status,
                "computed_at": str(now - minutes_ago * 60_000),
            },
        )
    desk(prefix, client, "50000", now - 2000)
    for fields in (
        {"type": "balance", "venue": "okx", "account": "hedge-subaccount-7", "asset": "USDT", "balance": "1250000"},
        {"type": "balance", "venue": "okx", "account": "hedge-subaccount-7", "asset": "PEPE", "balance": "9000000"},
        {
            "type": "source_status",
            "venue": "okx",
            "source": "okx-futures",
            "account": "hedge-subaccount-7",
            "ok": "true",
        },
    ):
        client.xadd(f"{prefix}:events", {**fields, "ts": str(now - 1000)})
    statuses = {
        "account:binance/main": "ok",
        "account:okx/hedge-subaccount-7": "partial",
        "account:bank/reserve": "failed",
    }
    wait_for(
        lambda: {r["id"]: r["status"] for r in api.get("api/status").json()["nav"] if r["id"] in statuses} == statuses,
        20,
        "ok, partial and failed accounts",
    )
    client.xadd(
        f"{prefix}:alerts",
        {
            "code": "nav_failed",
            "severity": "critical",
            "message": "NAV of bank/reserve failed: no balance data for this account",
            "ts": str(now),
        },
    )

    # How the page formats money: the [display] table, the CLI's (decimals per quote currency).
    assert api.get("api/status").json()["display"] == {"decimals": 2, "currency_decimals": {"BTC": 8, "ETH": 6}}
    shots = artifacts_dir()
    browser = Browser(chromium, chromedriver, tmp_path)
    try:
        browser.open(url)
        wait_for(lambda: browser.js(PAGE_STATE)["loaded"], 20, "the page's first render")
        for width in PAGE_WIDTHS:
            browser.viewport(width)
            seen = wait_for(
                lambda w=width: (
                    lambda s: s if s["innerWidth"] == w and s["svg"] and abs(s["svg"] - s["box"]) <= 1 else None
                )(browser.js(LAYOUT)),
                10,
                f"the page redrawn {width} wide",
            )
            browser.page_screenshot(shots / f"statuspage-{width}.png", width)  # kept when a check fails too
            browser.viewport(width)
            assert seen["overflow"] <= 0, (width, seen)  # no page wider than the screen
            assert seen["wide"] == [], (width, seen)  # nothing but a table's own box scrolls
            chart = browser.js(PAGE_STATE)["chart"]
            assert chart["scope"].startswith("total ("), chart
            d = chart["d"]
            assert d.count("M") == 2 and d.count("L") >= 15, d  # the failed minutes: a break, not a drop to 0
            assert len(chart["y"]) >= 2 and all(t.startswith("18,89") and t[-3] == "." for t in chart["y"]), chart["y"]
            assert len(chart["x"]) >= 2, chart["x"]
            assert seen["label"]["title"].endswith(
                "(Desk hedging sub-account at OKX, run by the Singapore team for the basis book)"
            )
            assert seen["label"]["lines"] == 1, seen["label"]
        problems = [
            e for e in browser.console() if e.get("level") == "SEVERE" and "favicon" not in e.get("message", "")
        ]
        assert not problems, json.dumps(problems, indent=1)
    finally:
        browser.quit()
        api.close()
    for width in PAGE_WIDTHS:
        assert (shots / f"statuspage-{width}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The page's layout at the current width: overflow of the document, boxes wider than the screen
# that are not a scrolling table's own box, the long label's cell.
LAYOUT = """
const doc = document.documentElement;
const chart = document.getElementById("chart");
const cell = document.querySelector('#nav-table tr[data-key="account:okx/hedge-subaccount-7"] td');
// the lines a cell's text takes (not the row's height: another cell may wrap)
const lines = node => {
  const range = document.createRange();
  range.selectNodeContents(node);
  return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
};
return {
  innerWidth: window.innerWidth,
  overflow: doc.scrollWidth - doc.clientWidth,
  wide: [...document.querySelectorAll("body *")].filter(n => {
    const r = n.getBoundingClientRect();
    return r.width && r.right > window.innerWidth + 0.5 && !n.closest("table");
  }).map(n => n.tagName + "#" + n.id + "." + n.className),
  svg: chart && Math.round(chart.getBoundingClientRect().width),
  box: chart && Number((chart.getAttribute("viewBox") || "0 0 0").split(" ")[2]),
  label: cell && {title: cell.title, lines: lines(cell)},
};
"""

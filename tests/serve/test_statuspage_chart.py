"""The status page's NAV chart, money format and layout in headless Chromium, fed canned
``/api/status`` documents by a stub server (no Redis, no consumer: each case is drawn at once
with the page's own ``render``).

What a person must see: a failed or missing NAV as a gap in the line (never a drop to 0), a
value axis fitted to the values there are, labelled in the one money format, a few times, the
status along the line, and at 1280 and 390 pixels wide no page wider than the screen.
tests/serve/test_statuspage.py checks the page fed by a real consumer and keeps its screenshots.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest
from support.browser import PAGE_WIDTHS, Browser, find_browser, wait_for

from navstream import Cell, Chart, Column, Panel, Row, Table
from navstream.display import DisplaySettings, amount
from navstream.serve.routes import _page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

T0 = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC
LONG = "okx/hedge-subaccount-7 (Desk hedging sub-account at OKX, run by the Singapore team for the basis book)"

# What the assertions read of the chart, in one go.
CHART_STATE = """
const q = s => [...document.querySelectorAll(s)];
const line = document.getElementById("chart-line");
const doc = document.documentElement;
return {
  d: line ? line.getAttribute("d") : null,
  points: line ? Number(line.dataset.points) : null,
  valid: line ? Number(line.dataset.valid) : null,
  y: q("#chart-y text").map(t => ({text: t.textContent, y: Number(t.getAttribute("y"))})),
  x: q("#chart-x text").map(t => t.textContent),
  unit: (document.getElementById("chart-unit") || {}).textContent,
  dots: q("#chart-points circle").map(c => ({cls: c.getAttribute("class"), cy: Number(c.getAttribute("cy")),
                                              title: c.textContent})),
  band: q("#chart-status rect").map(r => r.getAttribute("class")),
  segments: q("#chart path.seg").map(p => p.getAttribute("class")),
  legend: q("#chart-legend li").map(li => li.textContent),
  heading: document.getElementById("chart-scope").textContent,
  empty: q("#chart text.empty").map(t => t.textContent),
  attrs: q("#chart *").flatMap(n => [...n.attributes].map(a => a.value)),
  overflow: doc.scrollWidth - doc.clientWidth,
  innerWidth: window.innerWidth,
  svgWidth: document.getElementById("chart").getBoundingClientRect().width,
  viewBox: document.getElementById("chart").getAttribute("viewBox"),
};
"""


def point(minute: int, nav: str | None, tone: str) -> tuple[int, str | None, str]:
    return (T0 + minute * 60_000, nav, tone)


#: A scope's history as an incident leaves it: ok, stale, partial, failed (a placeholder "0" with
#: the critical tone, as the nav plugin sends it today, and a point without a value), ok again.
SERIES = [
    point(0, "18889978.6504", "ok"),
    point(1, "18890410.10", "ok"),
    point(2, "18891002.5", "warning"),
    point(3, "18890120.25", "degraded"),
    point(4, "0", "critical"),
    point(5, None, "critical"),
    point(6, "18892555.75", "ok"),
    point(7, "18893000", "ok"),
]


def document(series: dict[str, list[Any]], *, unit: str = "USD", label: str = "total", **chart: Any) -> dict[str, Any]:
    rows = [
        Row(key=k, label=label if k == "total" else k, cells=[Cell(label if k == "total" else k), Cell("1", num=True)])
        for k in series
    ]
    table = Table(id="nav-table", columns=[Column("scope"), Column("NAV", num=True)], rows=rows, select=True)
    panels = [
        Panel(id="nav-section", title="NAV per scope", blocks=[table]),
        Panel(
            id="chart-section",
            title="",
            blocks=[
                Chart(
                    id="chart",
                    table="nav-table",
                    title="NAV history",
                    series=series,
                    unit=unit,
                    tone_labels={"warning": "stale", "degraded": "partial", "critical": "failed"},
                    **chart,
                )
            ],
        ),
    ]
    return {
        "generated_ms": T0 + 480_000,
        "consumer": {"name": "c1", "group": "g", "phase": "running", "role": "all"},
        "ready": True,
        "reasons": [],
        "redis_error": "",
        "streams": {},
        "dlq_length": 0,
        "consumers": [],
        "alerts": [],
        "plugins": {},
        "display": {"decimals": 2, "currency_decimals": {"BTC": 8, "ETH": 6}},
        "sections": {"nav": {"panels": [msgspec.to_builtins(p) for p in panels]}},
        "report_errors": [],
    }


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium on the status page, served as the consumer serves it (its CSP too) by a stub
    whose ``api/status`` answers the first case; each test draws its own with ``render``."""
    chromium, chromedriver = find_browser()
    html, csp = _page()
    answer = json.dumps(document({"total": SERIES})).encode()

    class Stub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = (answer, "application/json") if self.path.startswith("/api/status") else (html, "text/html")
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Security-Policy", csp)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    browser = Browser(chromium, chromedriver, tmp_path_factory.mktemp("chart-browser"))
    try:
        browser.open(f"http://127.0.0.1:{server.server_address[1]}/")
        wait_for(lambda: browser.js("return document.body.dataset.loaded === 'true'"), 20, "the first render")
        yield browser
        problems = [e for e in browser.console() if e.get("level") == "SEVERE"]
        assert not problems, json.dumps(problems, indent=1)  # no script error in any case
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()


def draw(browser: Browser, doc: dict[str, Any], width: int = 1280) -> dict[str, Any]:
    browser.viewport(width)
    wait_for(lambda: browser.js("return window.innerWidth") == width, 10, f"a viewport {width} wide")
    browser.js("selected['nav-table'] = 'total'; receivedAt = performance.now(); render(arguments[0]);", doc)
    state: dict[str, Any] = browser.js(CHART_STATE)
    return state


def label_value(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


@pytest.mark.parametrize("width", PAGE_WIDTHS)
def test_a_failed_nav_is_a_gap_and_the_axis_fits_the_values(page: Browser, width: int) -> None:
    s = draw(page, document({"total": SERIES}), width)
    assert s["innerWidth"] == width and s["overflow"] <= 0, s  # no page wider than the screen
    # The SVG is drawn at its own width (no stretched text): viewBox width = its pixel width.
    assert abs(float(s["viewBox"].split()[2]) - s["svgWidth"]) <= 1
    # Two runs of values, the failed and the missing point between them a break (a second M).
    assert s["d"].count("M") == 2 and s["d"].count("L") == 6 - 2, s["d"]
    assert (s["points"], s["valid"]) == (8, 6)
    # The axis fits the values (18.889M..18.893M), not 0..NAV: every label is near them.
    values = [label_value(t["text"]) for t in s["y"]]
    assert len(values) >= 2
    assert all(Decimal("18888000") < v < Decimal("18895000") for v in values), values
    # Labels in the one money format: grouped, the quote currency's 2 decimals.
    assert all(t["text"] == amount(label_value(t["text"]), "USD") for t in s["y"]), s["y"]
    assert s["unit"] == "USD"
    # Higher values higher up: labels in value order from the bottom.
    assert [t["y"] for t in s["y"]] == sorted((t["y"] for t in s["y"]), reverse=True)
    # A few times, as UTC clock times.
    assert len(s["x"]) >= 2 and all(len(t) in (5, 8) and t[2] == ":" for t in s["x"]), s["x"]
    assert s["x"][0] >= "00:00"
    # The status along the line: a strip cell per point, segments and markers in colour.
    assert s["band"] == ["band-" + p[2] for p in SERIES]
    assert sorted(s["segments"]) == ["seg seg-degraded", "seg seg-warning"]
    dots = {d["cls"] for d in s["dots"]}
    assert {"pt-warning", "pt-degraded"} <= dots and "pt-critical" not in dots
    assert any(d["title"] == "2026-01-01 00:02:00 UTC: 18,891,002.50 USD (stale)" for d in s["dots"]), s["dots"]
    assert s["legend"] == ["ok", "stale", "partial", "failed (no value: a gap)"]
    assert s["heading"] == "total (8 points, 2 without a value)"
    assert not any("NaN" in a or "Infinity" in a for a in s["attrs"])


def test_a_null_value_alone_is_a_gap_too(page: Browser) -> None:
    """The nav plugin may send a failed NAV as null (tone ok or any other): still a gap."""
    series = [point(0, "100", "ok"), point(1, None, "ok"), point(2, "", "ok"), point(3, "101", "ok")]
    s = draw(page, document({"total": series}))
    assert s["d"].count("M") == 2 and "L" not in s["d"], s["d"]  # two lone points, two markers
    assert len(s["dots"]) == 2


def test_a_time_without_points_is_a_gap_when_the_chart_says_how_long_is_too_long(page: Browser) -> None:
    series = [point(0, "100", "ok"), point(1, "101", "ok"), point(30, "102", "ok"), point(31, "103", "ok")]
    joined = draw(page, document({"total": series}))
    assert joined["d"].count("M") == 1
    broken = draw(page, document({"total": series}, max_gap_ms=5 * 60_000))
    assert broken["d"].count("M") == 2 and broken["d"].count("L") == 2, broken["d"]


@pytest.mark.parametrize(
    ("series", "unit", "near"),
    [
        ([point(0, "202000", "ok")], "USD", Decimal("202000")),  # one point
        ([point(m, "202000", "ok") for m in range(5)], "USD", Decimal("202000")),  # all equal
        ([point(m, "0", "ok") for m in range(3)], "USD", Decimal(0)),  # all equal to 0: a real 0
        ([point(0, "1.5", "ok"), point(1, "1.50000002", "ok")], "BTC", Decimal("1.5")),  # 8 decimals
        ([point(0, "99999999999999999.99", "ok"), point(1, "100000000000000000", "ok")], "USD", Decimal("1e17")),
    ],
)
def test_one_value_or_equal_values_get_a_sensible_axis(
    page: Browser, series: list[Any], unit: str, near: Decimal
) -> None:
    s = draw(page, document({"total": series}, unit=unit))
    texts = [t["text"] for t in s["y"]]
    assert len(texts) >= 2 and len(set(texts)) == len(texts), texts  # distinct labels
    places = 8 if unit == "BTC" else 2
    assert all(len(t.rpartition(".")[2]) == places for t in texts), texts
    values = [label_value(t) for t in texts]
    spread = max(abs(near) * Decimal("0.01"), Decimal(1))
    assert all(abs(v - near) <= spread for v in values), values
    assert s["d"].startswith("M") and len(s["x"]) >= 1
    assert not any("NaN" in a or "Infinity" in a for a in s["attrs"])
    ys = [d["cy"] for d in s["dots"]]
    assert ys and all(20 <= y <= 185 for y in ys), ys  # drawn inside the plot


def test_every_point_failed_says_so_instead_of_an_axis(page: Browser) -> None:
    s = draw(page, document({"total": [point(m, "0", "critical") for m in range(4)]}))
    assert s["d"] == "" and s["y"] == [] and s["dots"] == []
    assert s["empty"] == ["No value to draw: every point here failed or has none."]
    assert s["band"] == ["band-critical"] * 4 and len(s["x"]) >= 2


def test_no_points_yet(page: Browser) -> None:
    s = draw(page, document({"total": []}))
    assert s["empty"] == ["No points yet."] and s["heading"] == "total (0 points)"


@pytest.mark.parametrize("width", PAGE_WIDTHS)
def test_a_long_label_is_cut_with_its_whole_text_on_hover(page: Browser, width: int) -> None:
    s = draw(page, document({"total": SERIES}, label=LONG), width)
    cell = page.js(
        "const td = document.querySelector('#nav-table tbody td');"
        "return {title: td.title, cut: td.scrollWidth > td.clientWidth, height: td.getBoundingClientRect().height,"
        " heading: document.querySelector('#chart-scope .clip').title,"
        " headingHeight: document.querySelector('#chart-scope').getBoundingClientRect().height};"
    )
    assert cell["title"] == LONG and cell["cut"] is True
    assert cell["height"] < 40 and cell["headingHeight"] < 30  # one line, not a column of words
    assert cell["heading"] == LONG
    assert s["heading"].endswith("(8 points, 2 without a value)")
    assert s["overflow"] <= 0, s


def test_money_on_the_page_is_the_cli_s_money(page: Browser) -> None:
    """The page's formatAmount against navstream.display.amount: the same text for the same
    exact value and decimals, odd input included."""
    rng = random.Random(17)
    values = [
        "18889978.6504",
        "0.005",
        "0.015",
        "0.025",
        "2.675",
        "999.995",
        "-0.001",
        "-0",
        "-1234567.125",
        "1e21",
        "1E-7",
        "12e3",
        " 12 ",
        "1_000.5",
        ".5",
        "5.",
        "+7.125",
        "abc",
        "NaN",
        "-Infinity",
        "１２",
        "",
        "1.2.3",
        "99999999999999999999999999999999.995",
        "5e250",
        "-5E+999994",
        "0e500",
        "-0E+999",
    ]
    values += [str(Decimal(rng.randrange(-(10**12), 10**12)).scaleb(-rng.randrange(0, 10))) for _ in range(300)]
    cases = [(v, places) for v in values for places in (0, 2, 8)]
    shown = page.js("return arguments[0].map(([v, p]) => formatAmount(v, p));", cases)
    expected = [amount(v, settings=DisplaySettings(decimals=places)) for v, places in cases]
    wrong = [(c, s, e) for c, s, e in zip(cases, shown, expected, strict=True) if s != e]
    assert not wrong, wrong[:10]
    # And numbers (the axis' tick values) as their shortest text.
    assert page.js("return [formatAmount(0.1 + 0.2, 2), formatAmount(1e21, 0), formatAmount(-1e-9, 2)]") == [
        "0.30",
        "1,000,000,000,000,000,000,000",
        "0.00",
    ]

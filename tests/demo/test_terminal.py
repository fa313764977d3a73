"""What a person sees in a terminal: the demo's live table and summary, `navstream status` and
`navstream dlq list` fit its width, colour is given to whole words and only to a terminal, the
sources are counted as the closing table lists them, ages never count from 1970, and money reads
one way (navstream.display)."""

from __future__ import annotations

import io
import re
from decimal import Decimal
from typing import Any

import pytest

from navstream.demo import run_demo
from navstream.demo.replay import Answer, SourceRow, StepRow
from navstream.demo.scenario import Step
from navstream.demo.show import LiveTable, Painter, Styled, colour_allowed, source_health, total_nav
from navstream.demo.summary import nav_table, trading_lines
from navstream.display import money
from navstream.render import (
    MIN_WIDTH,
    age,
    cells,
    clean,
    render_dlq,
    render_section,
    render_status,
    table,
    terminal_width,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
WIDTHS = [40, 80, 120, 200]
NOW = 1_800_000_000_000


def too_wide(text: str, width: int) -> list[str]:
    return [line for line in ANSI.sub("", text).splitlines() if cells(line) > width]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- fitting the width ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_at() -> dict[int | None, str]:
    """The demo's whole output at each width (and with no limit), played once per width."""
    import asyncio

    shown: dict[int | None, str] = {}
    for width in [*WIDTHS, None]:
        out = io.StringIO()
        assert asyncio.run(run_demo(None, None, 1.0, True, out=out, width=width)) == 0
        shown[width] = out.getvalue()
    return shown


@pytest.mark.parametrize("width", WIDTHS)
def test_every_line_of_the_demo_fits_the_terminal(demo_at: dict[int | None, str], width: int) -> None:
    text = demo_at[width]
    assert not too_wide(text, width), "\n".join(too_wide(text, width))
    # nothing is lost that a person needs: every step, every order id, every NAV of the closing table
    for label in re.findall(r"^T\+\d\d:\d\d", demo_at[None], re.M):
        assert re.search(rf"^{re.escape(label)}\b", text, re.M), label
    for order_id in set(re.findall(r"\beng-\d+f?\b", demo_at[None])):
        assert order_id in text, order_id
    for nav in set(re.findall(r"\b\d{1,3}(?:,\d{3})+\.\d\d\b", demo_at[None])):
        assert nav in text, nav


def test_the_demo_without_a_limit_is_not_cut(demo_at: dict[int | None, str]) -> None:
    text = demo_at[None]
    assert "…" not in text.split("\nsummary\n")[0].replace('"…', "")  # no cell of the live table elided
    assert max(cells(line) for line in text.splitlines()) > 120  # a pipe keeps whole lines


def test_the_live_table_keeps_the_note_in_its_row_when_it_fits(demo_at: dict[int | None, str]) -> None:
    header = [ln for ln in demo_at[120].splitlines() if ln.startswith("time ")]
    assert len(header) == 1 and "what happens" in header[0]
    assert all("what happens" not in ln for ln in demo_at[80].splitlines() if ln.startswith("time "))
    row = next(ln for ln in demo_at[120].splitlines() if ln.startswith("T+02:30"))
    assert "OKX balance API answers HTTP 429" in row and "spot-account FAIL · 5 ok" in row
    # at 80 the note goes under the row, whole; at 40 the sources too
    lines80 = demo_at[80].splitlines()
    at = next(i for i, ln in enumerate(lines80) if ln.startswith("T+02:30"))
    assert "spot-account FAIL · 5 ok" in lines80[at] and lines80[at + 1].strip() == "OKX balance API answers HTTP 429"
    lines40 = demo_at[40].splitlines()
    at = next(i for i, ln in enumerate(lines40) if ln.startswith("T+02:30"))
    assert "20,237,364" in lines40[at] and any(ln.strip().startswith("sources") for ln in lines40[at : at + 5])


def test_columns_is_honoured_and_a_pipe_is_not_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "93")
    assert terminal_width(io.StringIO()) == 93
    monkeypatch.setenv("COLUMNS", "5")
    assert terminal_width(io.StringIO()) == MIN_WIDTH
    for junk in ("", "0", "-3", "abc", "８０"):
        monkeypatch.setenv("COLUMNS", junk)
        assert terminal_width(io.StringIO()) is None, junk  # a StringIO is a pipe: no limit


def hostile_status() -> dict[str, Any]:
    long_error = "HTTP 429 Too Many Requests on GET /api/v5/account/balance: " + "x" * 300
    return {
        "prefix": "navstream-prod-eu-west-1",
        "group": "navstream",
        "streams": {
            "navstream-prod-eu-west-1:events": {
                "length": 123456789,
                "groups": [{"name": "navstream", "lag": 12, "pending": 3, "consumers": 2}],
            },
            "navstream-prod-eu-west-1:orders": {"length": 0, "groups": []},
        },
        "dlq": {"length": 2},
        "consumers": [
            {
                "consumer": "ip-10-0-1-23.eu-west-1.compute.internal-12345",
                "status": "running",
                "role": "events",
                "processed": 98765432,
                "failed": 0,
                "dead_lettered": 2,
                "lost": 0,
                "last_batch_ms": "0",
                "ts": str(NOW - 1500),
            }
        ],
        "alerts": [
            {"severity": "critical", "code": "trading_halted", "message": long_error},
            {"severity": "warning", "code": "price_missing", "message": "ARB in 日本語の口座 is not in the NAV\x1b[2J"},
        ],
        "plugins": {
            "nav": {
                "quote": "USD",
                "scopes": [
                    {"scope": "account", "name": "okx/spot-main", "nav": "18889978.6504", "status": "ok",
                     "missing": ["okx/spot-main/" + "A" * 80]},
                ],
            },
            "risk": {
                "trading": [{"scope": "desk", "state": "halted", "reason": long_error, "by": "ops",
                             "since": "2026-11-25 03:07:32Z", "high_water": "2459353.55"}],
                "decisions_stored": 9,
            },
        },
    }  # fmt: skip


@pytest.mark.parametrize("width", [*WIDTHS, 1000])
def test_status_fits_the_terminal(width: int) -> None:
    text = render_status(hostile_status(), NOW, width=width)
    assert not too_wide(text, width), "\n".join(too_wide(text, width))
    assert "\x1b" not in text  # an escape sequence in a message is shown, never sent
    joined = re.sub(r"\n +", "", text)  # a record's value too long for its line goes on under itself
    for whole in ("ip-10-0-1-23.eu-west-1.compute.internal-12345", "123456789", "98765432", "18,889,978.65"):
        assert whole in joined, whole  # ids and numbers are never cut
    assert "2,459,353.55" in text


def test_status_elides_the_message_not_the_code() -> None:
    lines = render_status(hostile_status(), NOW, width=80).splitlines()
    halted = next(ln for ln in lines if "trading_halted" in ln)
    assert halted.startswith("  critical") and halted.endswith("…") and cells(halted) <= 80


def test_status_says_no_batch_yet_for_a_consumer_that_handled_nothing() -> None:
    text = render_status(hostile_status(), NOW, width=None)
    row = next(ln for ln in text.splitlines() if ln.startswith("ip-10-0-1-23"))
    assert "no batch yet" in row and "1.5s ago" in row and "ago" not in row.split("no batch yet")[0]
    for never in (None, "", "0", 0, "-5", "nan", "inf", "abc", "１２"):
        assert age(never, NOW, "no batch yet") == "no batch yet", never
    assert age(NOW - 3_200, NOW) == "3.2s ago"
    assert age(NOW - 307_000, NOW) == "5m 07s ago"
    assert age(NOW - 3 * 86_400_000 - 4 * 3_600_000, NOW) == "3d 04h ago"
    assert age(NOW + 2_000, NOW) == "2.0s ahead (clock skew)"


@pytest.mark.parametrize("width", WIDTHS)
def test_dlq_list_fits_the_terminal(width: int) -> None:
    rows = [
        {
            "id": f"1796578427968-{n}",
            "dlq_stream": "navstream-demo:events",
            "dlq_deliveries": "1",
            "dlq_error": "undecodable: field `balance`: '1250000,00' is not a decimal number: " + "y" * 200,
            "type": "balance",
            "venue": "bank",
            "balance": "1250000,00",
        }
        for n in range(3)
    ]
    text = render_dlq(rows, width=width)
    assert not too_wide(text, width), "\n".join(too_wide(text, width))
    for n in range(3):
        assert f"1796578427968-{n}" in text  # the id a person replays by
    if width >= 80:
        lines = text.splitlines()  # still a table, the error and the fields elided
        assert len(lines) == 5 and all("undecodable:" in ln and "…" in ln for ln in lines[2:])


def test_table_shrinks_the_widest_free_text_column_first() -> None:
    text = table(["id", "a", "b"], [["id-1", "x" * 30, "y" * 100]], width=70, shrink=[1, 2])
    row = text.splitlines()[2]
    assert cells(row) == 70 and "x" * 30 + "  " + "y" * 31 + "…" in row
    text = table(["id", "a", "b"], [["id-1", "x" * 30, "y" * 100]], width=50, shrink=[1, 2])
    assert text.splitlines()[2] == "id-1  " + "x" * 20 + "…  " + "y" * 20 + "…"  # then both alike
    # a table whose ids alone are too wide shows records, never a cut id
    wide_id = "z" * 70
    text = table(["id", "note"], [[wide_id, "hello"]], width=40, shrink=[1])
    assert "".join(ln.split()[-1] for ln in text.splitlines() if "z" in ln) == wide_id
    assert not too_wide(text, 40)


def test_cells_counts_wide_characters() -> None:
    assert cells("日本") == 4 and cells("e\u0301") == 1
    text = table(["name", "note"], [["日本語の口座", "x" * 100]], width=40, shrink=[1])
    assert not too_wide(text, 40) and "日本語の口座" in text
    assert clean("a\x1b[31mb\nc\u202e") == "a\\x1b[31mb c\\u202e"


# --- colour ---------------------------------------------------------------------------------------


def row_with(sources: list[SourceRow], alerts: list[tuple[str, str]]) -> StepRow:
    step = Step(0, "source_status ok for okx", [])
    nav = [{"scope": "total", "name": "total", "nav": "18889978.6504", "status": "stale"}]
    decisions = [Answer({"order_id": "o-1", "decision": "veto", "reasons": "nav_stale"})]
    return StepRow(step, 3, alerts, sources, nav, decisions, quote="USD")


def test_colour_goes_to_whole_words_chosen_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    painter = Painter(Tty())
    assert painter.enabled
    sources = [SourceRow("okx", "FAILover-feed", "", "FAIL", 1.0, "boom"), SourceRow("bank", "api", "", "ok", 1.0, "")]
    # an alert code inside another (nav_stale in nav_stale_long) is not coloured inside it
    row = LiveTable([row_with([], []).step], painter, 200, "USD").row(
        row_with(sources, [("nav_stale_long", "info"), ("nav_stale", "critical")])
    )
    assert "source_status ok for okx" in row  # the note, a word "ok" in it, is not painted
    assert "\x1b[31mFAIL\x1b[0m" in row and "FAILover-feed \x1b[31mFAIL" in row  # the state, not the name
    assert "\x1b[32mnav_stale_long\x1b[0m, \x1b[31mnav_stale\x1b[0m" in row
    assert "\x1b[33mstale\x1b[0m" in row and "18,889,978.65 \x1b[33mstale" in row
    assert "\x1b[31mveto\x1b[0m 1 (nav_stale)" in row
    assert not too_wide(row, 200)


@pytest.mark.parametrize(
    ("env", "tty", "colour"),
    [
        ({}, True, True),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": "0"}, True, False),  # any non-empty value
        ({"NO_COLOR": ""}, True, True),  # no-color.org: an empty value does not count
        ({"TERM": "dumb"}, True, False),
        ({}, False, False),  # a pipe or a file
    ],
)
def test_no_color_and_pipes_stay_plain(env: dict[str, str], tty: bool, colour: bool) -> None:
    out = Tty() if tty else io.StringIO()
    assert colour_allowed(out, env) is colour


async def test_the_demo_in_colour_and_under_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Tty()
    assert await run_demo(None, None, 1.0, True, out=out, width=100) == 0
    coloured = out.getvalue()
    assert "\x1b[" in coloured and not too_wide(coloured, 100)
    assert "source_status \x1b[32mok\x1b[0m" in coloured and "source_status \x1b[31mok=false\x1b[0m" in coloured
    monkeypatch.setenv("NO_COLOR", "yes")
    out = Tty()
    assert await run_demo(None, None, 1.0, True, out=out, width=100) == 0
    assert "\x1b" not in out.getvalue()


# --- sources counted, money one way ---------------------------------------------------------------


def test_sources_are_counted_as_the_closing_table_lists_them(demo_at: dict[int | None, str]) -> None:
    text = demo_at[None]
    closing = text[text.index("source health at") :].split("\n\n")[0].splitlines()[3:]
    total = len(closing)
    assert total == 6
    assert f"all {total} ok" in text and "spot-account FAIL · 5 ok" in text and "coingecko FAIL · 5 ok" in text
    for line in text.split("\nsummary\n")[0].splitlines():
        counted = re.search(r"(?:all (\d+) ok|· (\d+) ok)$", line)
        if counted:
            fine = int(counted.group(1) or counted.group(2))
            failing = line.count(" FAIL") + line.count(" silent")
            assert fine + failing == total, line


def test_source_health_counts_sources_not_venues() -> None:
    rows = [
        SourceRow("okx", "spot-account", "a", "FAIL", 1.0, ""),
        SourceRow("okx", "spot-account", "b", "FAIL", 1.0, ""),
        SourceRow("okx", "balances", "", "ok", 1.0, ""),
        SourceRow("kraken", "balances", "", "silent", 1.0, ""),
    ]
    assert source_health(rows).text == "spot-account FAIL ×2 · kraken/balances silent · 1 ok"
    assert source_health(rows[2:3]).text == "all 1 ok"


def test_money_reads_one_way_in_the_demo(demo_at: dict[int | None, str]) -> None:
    text = demo_at[None]
    before_alerts = text.split("  T+00:00  ")[0]  # the live table and the tables, not alert texts
    assert not re.search(r"\d,\d{3}\.\d{3}\b|\d{7,}\.\d", before_alerts)  # no 18,889,978.650, no 2459353.55
    nav = text[text.index("NAV at") :].split("\n\n")[0]
    assert "NAV (USD)" in nav and re.search(r"\b20,304,087\.12\b", nav)
    assert re.search(r"^T\+10:00 .* 20,304,087\.12 ok ", text, re.M)
    trading = text[text.index("trading state at") :].split("\n\n")[0]
    assert "high-water mark (USD)" in trading and "2,460,143.55" in trading


def test_money_helpers_use_the_display_format() -> None:
    nav = [{"scope": "total", "name": "total", "nav": "865020.0", "status": "ok"}]
    assert total_nav(nav, "USD").text == "865,020.00 ok"
    assert total_nav(nav, "BTC").text == "865,020.00000000 ok"
    assert total_nav([{**nav[0], "nav": "NaN"}], "USD").text == "NaN ok"  # shown as given
    scopes = [{**nav[0], "nav": "18889978.6504", "as_of_age_s": 1.0, "missing": [], "stale_sources": []}]
    assert "18,889,978.65" in nav_table(scopes, "USD")
    section = {"trading": [{"scope": "desk", "state": "active", "since": "", "by": "", "high_water": "2459353.55"}]}
    assert "2,459,353.55" in "\n".join(trading_lines(section, 0, "USD"))
    shown = render_section({"quote": "USD", "scopes": [{"scope": "total", "nav": "1000000"}]})
    assert "nav (USD)" in shown and "1,000,000.00" in shown and money(Decimal("1000000"), "USD") == "1,000,000.00 USD"


def test_styled_text_is_cut_and_wrapped_with_its_colours() -> None:
    text = Styled("abc ") + Styled("FAIL", "31") + " tail"
    assert text.clip(6).text == "abc F…" and text.clip(6).codes[4] == "31"
    lines = text.wrap(8)
    assert [ln.text for ln in lines] == ["abc FAIL", "tail"] and lines[0].codes[4:] == ["31"] * 4

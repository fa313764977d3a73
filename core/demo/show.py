"""What the terminal shows while the scenario plays: the live table, one row a step."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO

from navstream.demo.replay import Answer, SourceRow, StepRow
from navstream.demo.scenario import Step, clock_label
from navstream.demo.stubs import SourceReport
from navstream.render import table

#: The live table, the decisions and the trading state fit a terminal this wide (scenario
#: notes are kept short enough; tests/demo/test_demo.py checks it). Alert messages are printed whole.
TERMINAL_WIDTH = 100
#: Width of the "total NAV" cell (``10,245,332 partial``).
NAV_WIDTH = 18
#: Lines of a source's own error text under its row in the live table (cut beyond).
SOURCE_ERROR_LINES = 2


STATE_RANK = {"ok": 0, "FAIL": 1, "silent": 2}
SEVERITY_COLOUR = {"info": "32", "warning": "33", "critical": "31"}


def total_nav(scopes: list[dict[str, Any]] | None) -> str:
    """``9,815,020 USD ok``: the total NAV and its status, as the nav plugin stored them."""
    if scopes is None:
        return "n/a (nav not loaded)"
    total = next((s for s in scopes if s["scope"] == "total"), None)
    if total is None:
        return "none yet"
    return f"{Decimal(total['nav']):,.0f} {total['status']}"


def venue_health(sources: list[SourceRow] | None) -> str:
    """``okx FAIL · coingecko silent · 3 ok``: the venues in trouble, then how many are fine.

    A venue is as bad as its worst source: one failing API of an exchange is the exchange failing.
    """
    if sources is None:
        return "n/a (source_monitor not loaded)"
    if not sources:
        return "no reports yet"
    worst: dict[str, str] = {}
    for row in sources:
        if STATE_RANK[row.state] >= STATE_RANK.get(worst.get(row.venue, "ok"), 0):
            worst[row.venue] = row.state
    bad = [f"{venue} {state}" for venue, state in worst.items() if state != "ok"]
    fine = sum(1 for state in worst.values() if state == "ok")
    if not bad:
        return f"all {fine} ok"
    return " · ".join(bad + ([f"{fine} ok"] if fine else []))


def decisions_cell(answers: Sequence[Answer]) -> str:
    """``approve 1, veto 2 (nav_stale, source_unhealthy)``: the step's new decisions by kind
    with every veto reason once, then each repeated answer with the time it was first given."""
    parts = []
    for kind in ("approve", "veto"):
        group = [a for a in answers if a.first_at_s is None and a.fields.get("decision") == kind]
        if group:
            reasons = ", ".join(dict.fromkeys(r for a in group for r in a.reasons))
            parts.append(f"{kind} {len(group)}" + (f" ({reasons})" if reasons else ""))
    for a in answers:
        if a.first_at_s is not None:
            reasons = f" ({', '.join(a.reasons)})" if a.reasons else ""
            parts.append(
                f"{a.fields.get('order_id')} re-sent: {a.fields.get('decision')}{reasons}, "
                f"as given at {clock_label(a.first_at_s)}"
            )
    return ", ".join(parts)


def counted(codes: Sequence[str]) -> str:
    """``["a", "b", "a"]`` -> ``a ×2, b``, first-seen order."""
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return ", ".join(code if n == 1 else f"{code} ×{n}" for code, n in counts.items())


class Painter:
    """ANSI colour for a terminal, nothing for a pipe, a file or ``NO_COLOR``."""

    def __init__(self, out: TextIO) -> None:
        isatty = getattr(out, "isatty", None)
        self.enabled = bool(isatty and isatty()) and "NO_COLOR" not in os.environ

    def paint(self, text: str, *words: tuple[str, str]) -> str:
        if not self.enabled:
            return text
        for word, code in words:
            text = text.replace(word, f"\x1b[{code}m{word}\x1b[0m")
        return text

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.enabled else text


class LiveTable:
    """A :func:`render.table` printed row by row: cells are padded to widths fixed up front.

    Each step is one row; what its sources asked and published (:attr:`StepRow.shown`), the
    alerts it raised and the risk gate's decisions follow on lines of their own under "what
    happens", so a row fits :data:`TERMINAL_WIDTH` however many there are.
    """

    HEADERS = ("time", "what happens", "in", "total NAV", "sources")

    def __init__(self, steps: Sequence[Step], painter: Painter) -> None:
        self.painter = painter
        #: Labels of the lines under a row (``alerts``, ``decisions``, a source's name), padded.
        self.label_width = max([len("decisions"), *(len(a.source) for s in steps for a in s.attempts)])
        self.widths = [len("T+00:00"), max(len(s.note) for s in steps), 3, NAV_WIDTH]
        self.note_at = self.widths[0] + 2  # where the "what happens" cell starts
        self.nav_at = sum(self.widths[:3]) + 2 * 3  # where the NAV cell starts
        # The last column is not padded; its rule reaches the right edge of the terminal.
        self.widths.append(max(len("sources"), TERMINAL_WIDTH - self.nav_at - NAV_WIDTH - 2))

    def _line(self, cells: Sequence[str], index: int) -> str:
        padded = [str(c).ljust(w) for c, w in zip(cells, self.widths, strict=False)]
        headers = [h.ljust(w) for h, w in zip(self.HEADERS, self.widths, strict=False)]
        return table(headers, [padded] if index == 2 else []).splitlines()[index]

    def header(self) -> str:
        return "\n".join((self.painter.bold(self._line(self.HEADERS, 0)), self._line(self.HEADERS, 1)))

    def _detail(self, label: str, text: str, *words: tuple[str, str]) -> str:
        return f"{' ' * self.note_at}{label:<{self.label_width}}  {self.painter.paint(text, *words)}"

    def _source_lines(self, report: SourceReport) -> list[str]:
        """What the source asked and was answered, what it published and, when it failed or
        left values out, its own words (its ``source_status`` error, cut to the terminal)."""
        words = (("ok=false", "31"), ("status ok", "32"))
        lines = [self._detail(report.source, report.summary(), *words)]
        error = report.status.get("error", "")
        if error:
            room = TERMINAL_WIDTH - self.note_at - self.label_width - 2
            quoted = textwrap.wrap(f'"{error}"', room, max_lines=SOURCE_ERROR_LINES, placeholder="...")
            lines += [self._detail("", part) for part in quoted]
        return lines

    def row(self, r: StepRow) -> str:
        health = venue_health(r.sources)
        nav = total_nav(r.nav)
        line = self._line([clock_label(r.step.at_s), r.step.note, str(r.entries_in), nav, health], 2)
        health_at = self.nav_at + max(NAV_WIDTH, len(nav)) + 2
        paint = self.painter.paint
        lines = [
            line[: self.nav_at]
            + paint(line[self.nav_at : health_at], ("stale", "33"), ("partial", "33"), ("failed", "31"))
            + paint(line[health_at:], ("FAIL", "31"), ("silent", "33"))
        ]
        for report in r.shown:
            lines += self._source_lines(report)
        if r.alerts:
            lines.append(
                self._detail(
                    "alerts",
                    counted([c for c, _ in r.alerts]),
                    *((code, SEVERITY_COLOUR.get(severity, "33")) for code, severity in dict.fromkeys(r.alerts)),
                )
            )
        if r.decisions:
            lines.append(self._detail("decisions", decisions_cell(r.decisions), ("approve", "32"), ("veto", "31")))
        return "\n".join(lines)

"""What the terminal shows while the scenario plays: the live table, one row a step.

The table fits the terminal (``width``; None: no limit): a step's "what happens" note shares its
row while the row fits, and goes on the line under it when the terminal is narrower; so do the
sources and, at the narrowest, the NAV. Lines under a row wrap under their label. Colour is given
to whole cells and words chosen here (:class:`Styled`), never found by searching the text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from navstream.demo.replay import Answer, SourceRow, StepRow
from navstream.demo.scenario import Step, clock_label
from navstream.demo.stubs import SourceReport
from navstream.display import amount
from navstream.render import cells, clean, cut_at, wrap_spans

#: Cells kept for the "total NAV" cell (``20,146,463.00 partial``); a larger NAV takes more.
NAV_WIDTH = 21
#: The "what happens" note shares the row only with at least this many cells; else it goes under.
NOTE_MIN = 24
#: Cells kept for the sources cell (``spot-account FAIL · 5 ok``) when the note shares the row.
SOURCES_WIDTH = 24
#: Lines under a row narrower than this put their label on a line of its own.
DETAIL_MIN = 16
#: Lines of a source's own error text under its row in the live table (cut beyond).
SOURCE_ERROR_LINES = 2

STATE_RANK = {"ok": 0, "FAIL": 1, "silent": 2}
STATE_COLOUR = {"FAIL": "31", "silent": "33"}
NAV_COLOUR = {"stale": "33", "partial": "33", "failed": "31"}
SEVERITY_COLOUR = {"info": "32", "warning": "33", "critical": "31"}
DECISION_COLOUR = {"approve": "32", "veto": "31"}
RED, GREEN = "31", "32"


class Styled:
    """Text with a colour (an SGR code, or None) per character, so it can be cut, wrapped and
    padded as plain text and painted after: a colour belongs to the words it was given to."""

    def __init__(self, text: str = "", code: str | None = None) -> None:
        self.text = clean(text)
        self.codes: list[str | None] = [code] * len(self.text)

    @classmethod
    def join(cls, parts: Iterable[Styled | str]) -> Styled:
        out = cls()
        for part in parts:
            out = out + part
        return out

    def __add__(self, other: Styled | str) -> Styled:
        other = other if isinstance(other, Styled) else Styled(other)
        out = Styled()
        out.text, out.codes = self.text + other.text, self.codes + other.codes
        return out

    def __radd__(self, other: str) -> Styled:
        return Styled(other) + self

    def _slice(self, start: int, end: int) -> Styled:
        out = Styled()
        out.text, out.codes = self.text[start:end], self.codes[start:end]
        return out

    def cells(self) -> int:
        return cells(self.text)

    def clip(self, width: int) -> Styled:
        if self.cells() <= width:
            return self
        return self._slice(0, cut_at(self.text, width - 1)) + "…" if width > 0 else Styled()

    def wrap(self, width: int) -> list[Styled]:
        return [self._slice(a, b) for a, b in wrap_spans(self.text, width)]

    def pad(self, width: int) -> Styled:
        return self + " " * max(0, width - self.cells())


def total_nav(scopes: list[dict[str, Any]] | None, quote: str = "") -> Styled:
    """``20,146,463.00 ok``: the total NAV (:func:`navstream.display.amount` in ``quote``) and its
    status as the nav plugin stored them, the status coloured when it is not ok."""
    if scopes is None:
        return Styled("n/a (nav not loaded)")
    total = next((s for s in scopes if s["scope"] == "total"), None)
    if total is None:
        return Styled("none yet")
    status = str(total["status"])
    return Styled(f"{amount(total['nav'], quote)} ") + Styled(status, NAV_COLOUR.get(status))


def source_health(sources: list[SourceRow] | None) -> Styled:
    """``spot-account FAIL · coingecko silent · 4 ok``: the sources in trouble, then how many
    are fine, counted as the closing table lists them (one per venue, source and account; a
    name with several accounts in trouble says how many: ``balances FAIL ×2``).

    A source is named as in the closing table's "source" column, with its venue
    (``okx/spot-account``) when another venue has a source of that name.
    """
    if sources is None:
        return Styled("n/a (source_monitor not loaded)")
    if not sources:
        return Styled("no reports yet")
    venues: dict[str, set[str]] = {}
    for row in sources:
        venues.setdefault(row.source, set()).add(row.venue)
    worst: dict[str, str] = {}
    failing: dict[str, int] = {}
    for row in sources:
        name = row.source if len(venues[row.source]) == 1 else f"{row.venue}/{row.source}"
        if STATE_RANK[row.state] >= STATE_RANK.get(worst.get(name, "ok"), 0):
            worst[name] = row.state
        failing[name] = failing.get(name, 0) + (row.state != "ok")
    bad = [
        Styled(f"{name} ")
        + Styled(state, STATE_COLOUR.get(state))
        + (f" ×{failing[name]}" if failing[name] > 1 else "")
        for name, state in worst.items()
        if state != "ok"
    ]
    fine = sum(1 for row in sources if row.state == "ok")
    if not bad:
        return Styled(f"all {fine} ok")
    parts = bad + ([Styled(f"{fine} ok")] if fine else [])
    return Styled.join(part if i == 0 else " · " + part for i, part in enumerate(parts))


def decisions_cell(answers: Sequence[Answer]) -> Styled:
    """``approve 1, veto 2 (nav_stale, source_unhealthy)``: the step's new decisions by kind
    with every veto reason once, then each repeated answer with the time it was first given."""
    parts: list[Styled] = []
    for kind in ("approve", "veto"):
        group = [a for a in answers if a.first_at_s is None and a.fields.get("decision") == kind]
        if group:
            reasons = ", ".join(dict.fromkeys(r for a in group for r in a.reasons))
            parts.append(Styled(kind, DECISION_COLOUR[kind]) + f" {len(group)}" + (f" ({reasons})" if reasons else ""))
    for a in answers:
        if a.first_at_s is not None:
            decision = a.fields.get("decision", "")
            reasons = f" ({', '.join(a.reasons)})" if a.reasons else ""
            parts.append(
                Styled(f"{a.fields.get('order_id')} re-sent: ")
                + Styled(decision, DECISION_COLOUR.get(decision))
                + f"{reasons}, as given at {clock_label(a.first_at_s)}"
            )
    return Styled.join(part if i == 0 else ", " + part for i, part in enumerate(parts))


def counted(codes: Sequence[str], colours: dict[str, str] | None = None) -> Styled:
    """``["a", "b", "a"]`` -> ``a ×2, b``, first-seen order, each code in its colour."""
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    parts = [Styled(code, (colours or {}).get(code)) + ("" if n == 1 else f" ×{n}") for code, n in counts.items()]
    return Styled.join(part if i == 0 else ", " + part for i, part in enumerate(parts))


def colour_allowed(out: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Colour only for a terminal, and never when ``NO_COLOR`` is set to a non-empty value
    (no-color.org; an empty one does not count) or ``TERM`` is ``dumb``."""
    env = os.environ if environ is None else environ
    isatty = getattr(out, "isatty", None)
    try:
        tty = bool(isatty and isatty())
    except ValueError:  # a closed stream
        tty = False
    return tty and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


class Painter:
    """ANSI colour for a terminal, nothing for a pipe, a file or ``NO_COLOR``."""

    def __init__(self, out: TextIO) -> None:
        self.enabled = colour_allowed(out)

    def paint(self, text: str, code: str | None) -> str:
        """``text``, all of it, in colour ``code``."""
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and code and text else text

    def styled(self, text: Styled) -> str:
        """Each run of characters given one colour, painted in it."""
        if not self.enabled:
            return text.text
        out, start = [], 0
        for i in range(1, len(text.text) + 1):
            if i == len(text.text) or text.codes[i] != text.codes[start]:
                out.append(self.paint(text.text[start:i], text.codes[start]))
                start = i
        return "".join(out)

    def bold(self, text: str) -> str:
        return self.paint(text, "1")


class LiveTable:
    """The live table, printed row by row with column widths fixed up front for ``width``.

    Each step is one row; what its sources asked and published (:attr:`StepRow.shown`), the
    alerts it raised and the risk gate's decisions follow on lines of their own, so a row fits
    however many there are.
    """

    def __init__(self, steps: Sequence[Step], painter: Painter, width: int | None = None, quote: str = "") -> None:
        self.painter = painter
        self.width = width
        self.quote = quote
        #: Labels of the lines under a row (``alerts``, ``decisions``, a source's name), padded.
        labels = ["decisions", "total NAV", "sources", *(a.source for s in steps for a in s.attempts)]
        self.label_width = max(cells(clean(label)) for label in labels)
        self.time_width = max(cells(clock_label(s.at_s)) for s in steps)
        self.note_at = self.time_width + 2  # where the "what happens" cell and the lines under start
        self.in_width = 3
        nav_header = f"total NAV ({quote})" if quote else "total NAV"
        self.nav_width = max(NAV_WIDTH, len(nav_header))
        notes = max(cells(clean(s.note)) for s in steps)
        fixed = self.note_at + self.in_width + 2 + self.nav_width + 2
        if width is None:
            self.note_width: int | None = notes
        else:
            room = width - fixed - 2 - SOURCES_WIDTH
            self.note_width = min(notes, room) if room >= min(notes, NOTE_MIN) else None
        #: Whether the NAV and the sources have room in the row (else they go under it).
        self.nav_in_row = width is None or fixed <= width
        self.sources_in_row = width is None or fixed + 2 + DETAIL_MIN <= width
        headers = ["time".ljust(self.time_width)]
        if self.note_width is not None:
            headers.append("what happens".ljust(self.note_width))
        headers.append("in".ljust(self.in_width))
        if self.nav_in_row:
            headers.append(nav_header.ljust(self.nav_width))
        if self.sources_in_row:
            headers.append("sources")
        self.headers = headers

    def header(self) -> str:
        line = "  ".join(self.headers)
        rule = "  ".join("-" * len(h) for h in self.headers)
        if self.width is not None:  # the last column's rule reaches the right edge
            rule += "-" * max(0, self.width - len(rule))
            line, rule = line[: self.width], rule[: self.width]
        return "\n".join((self.painter.bold(line.rstrip()), rule))

    def _detail(self, label: str | None, text: Styled, max_lines: int = 0) -> list[str]:
        """``text`` under the row after ``label``, wrapped under itself (or, when the terminal is
        too narrow for that, the label on a line of its own and the text under it); at most
        ``max_lines`` lines of text (0: all), the last one ending in an ellipsis when cut. No
        ``label`` (None): the text starts where the note column does."""
        indent = " " * self.note_at
        lead = "" if label is None else f"{label:<{self.label_width}}  "
        if self.width is None:
            return [indent + lead + self.painter.styled(text)]
        room = self.width - self.note_at - len(lead)
        narrow = room < DETAIL_MIN
        if narrow:
            indent, lead, room = "  ", "" if label is None else "  ", self.width - (2 if label is None else 4)
        lines = text.wrap(room)
        if max_lines and len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] = lines[-1] + "…" if lines[-1].cells() < room else lines[-1].clip(room - 1) + "…"
        shown = [self.painter.styled(line) for line in lines]
        if narrow:  # too narrow for a label beside the text: it goes on a line of its own
            return ([f"  {label[: self.width - 2]}"] if label else []) + [indent + lead + line for line in shown]
        return [indent + (lead if i == 0 else " " * len(lead)) + line for i, line in enumerate(shown)]

    def _source_lines(self, report: SourceReport) -> list[str]:
        """What the source asked and was answered, what it published and, when it failed or
        left values out, its own words (its ``source_status`` error, cut to the terminal)."""
        verdict = Styled("ok", GREEN) if report.ok else Styled("ok=false", RED)
        lines = self._detail(report.source, Styled(f"{report.action()}, source_status ") + verdict)
        error = report.status.get("error", "")
        if error:
            lines += self._detail("", Styled(f'"{error}"'), SOURCE_ERROR_LINES)
        return lines

    def row(self, r: StepRow) -> str:
        """The step's row, then the lines under it: the note and cells that have no room in
        the row, what its sources did, its alerts and its decisions."""
        health = source_health(r.sources)
        nav = total_nav(r.nav, self.quote)
        styled = self.painter.styled
        first = clock_label(r.step.at_s).ljust(self.time_width)
        under: list[str] = []
        note = Styled(r.step.note)
        if self.note_width is not None:
            wrapped = note.wrap(self.note_width) if self.width is not None else [note]
            first += "  " + wrapped[0].pad(self.note_width).text
            under += [" " * self.note_at + line.text for line in wrapped[1:]]
        else:
            under += self._detail(None, note)
        first += "  " + str(r.entries_in).ljust(self.in_width)
        used = cells(first)  # what the row takes on screen (colour codes take nothing)
        limit = self.width if self.width is not None else sys.maxsize
        if self.nav_in_row and used + 2 + nav.cells() <= limit:
            cell = nav.pad(self.nav_width)
            first += "  " + styled(cell)
            used += 2 + cell.cells()
            if self.sources_in_row and used + 2 + health.cells() <= limit:
                first += "  " + styled(health)
            else:
                under += self._detail("sources", health)
        else:
            under += self._detail("total NAV", nav) + self._detail("sources", health)
        lines = [first.rstrip(), *under]
        for report in r.shown:
            lines += self._source_lines(report)
        if r.alerts:
            colours = {code: SEVERITY_COLOUR.get(severity, "33") for code, severity in dict.fromkeys(r.alerts)}
            lines += self._detail("alerts", counted([c for c, _ in r.alerts], colours))
        if r.decisions:
            lines += self._detail("decisions", decisions_cell(r.decisions))
        return "\n".join(lines)

"""Plain-text tables for the terminal (status, dead letters, the demo), fitted to its width.

A table wider than the terminal would wrap and break every column, so :func:`table` given a
``width`` first elides its free-text columns (``shrink``: an error, a message) with an ellipsis,
widest first, and never touches the others (numbers, ids). When even that cannot fit, each row is
shown as a record, one ``header  value`` line per column. The width is :func:`terminal_width`:
``COLUMNS`` when set, else the terminal's own; a pipe or a file gets no limit (``grep`` and a
saved report keep every character). Nothing here writes colour: plain text only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TextIO

from navstream.display import amount

ELLIPSIS = "…"
#: The narrowest width laid out: a smaller ``COLUMNS`` (or ``width``) is taken as this.
MIN_WIDTH = 20
#: A free-text column is never elided below this many cells (nor below its header).
MIN_SHRUNK = 8
#: Keys whose values are money in the NAV's quote currency (``navstream status`` sections).
MONEY_KEYS = frozenset({"nav", "high_water"})
#: Keys whose values are prose: elided first when a plugin's table is too wide.
FREE_TEXT_KEYS = frozenset({"error", "message", "reason", "reasons", "missing", "stale_sources", "label", "note"})

#: ``"terminal"``: measure stdout (:func:`terminal_width`); ``None``: no limit; an int: that many cells.
Width = int | None | Literal["terminal"]


# --- measuring and cutting text ------------------------------------------------------------------


def terminal_width(out: TextIO | None = None) -> int | None:
    """Cells a line may take on ``out`` (default stdout): ``COLUMNS`` if it is a positive integer
    (honoured for a pipe too, as ``shutil.get_terminal_size`` does), else the terminal's width
    when ``out`` is one, else None: a pipe or a file is not cut. At least :data:`MIN_WIDTH`."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isascii() and columns.isdigit() and int(columns) > 0:
        return max(MIN_WIDTH, int(columns))
    stream = out if out is not None else sys.stdout
    try:
        if stream.isatty():
            return max(MIN_WIDTH, os.get_terminal_size(stream.fileno()).columns)
    except (AttributeError, OSError, ValueError):
        pass  # a StringIO, a closed or detached stream
    return None


def resolve(width: Width, out: TextIO | None = None) -> int | None:
    if width == "terminal":
        return terminal_width(out)
    return None if width is None else max(MIN_WIDTH, width)


def clean(value: Any) -> str:
    """``str(value)`` safe for one line of a terminal: whitespace controls become spaces, other
    control characters (an escape sequence in an error text) are shown escaped, never sent."""
    text = "-" if value is None else str(value)
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char in "\t\n\r\v\f":
            out.append(" ")
        elif not char.isprintable() and char != " ":  # controls, bidi overrides, odd separators
            out.append(repr(char)[1:-1])
        else:
            out.append(char)
    return "".join(out)


def char_cells(char: str) -> int:
    """Cells ``char`` takes: 2 for wide (CJK, fullwidth), 0 for a combining mark, else 1."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cells(text: str) -> int:
    """Cells ``text`` takes in a terminal (not ``len``: ``日本`` takes 4)."""
    return len(text) if text.isascii() else sum(char_cells(c) for c in text)


def cut_at(text: str, width: int) -> int:
    """How many characters of ``text`` fit in ``width`` cells."""
    used = 0
    for index, char in enumerate(text):
        used += char_cells(char)
        if used > width:
            return index
    return len(text)


def clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells: whole if it fits, else cut with an ellipsis."""
    if cells(text) <= width:
        return text
    return text[: cut_at(text, width - 1)] + ELLIPSIS if width > 0 else ""


def wrap_spans(text: str, width: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each line of ``text`` wrapped at spaces into ``width`` cells; a word
    longer than a line is split, never cut (every character is on some line)."""
    width = max(1, width)
    spans: list[tuple[int, int]] = []
    start, end = 0, len(text)
    while start < end:
        while start < end and text[start] == " ":
            start += 1
        if start >= end:
            break
        fits = start + cut_at(text[start:], width)
        if fits >= end:
            spans.append((start, end))
            break
        space = text.rfind(" ", start, fits + 1)
        stop = space if space > start else max(fits, start + 1)
        line_end = stop
        while line_end > start and text[line_end - 1] == " ":
            line_end -= 1
        spans.append((start, line_end))
        start = stop
    return spans or [(0, 0)]


def wrap(text: str, width: int) -> list[str]:
    return [text[a:b] for a, b in wrap_spans(text, width)]


def prose(text: str, width: int | None, indent: str = "", hang: str | None = None) -> list[str]:
    """``text`` as lines of at most ``width`` cells, each starting with ``indent`` (later ones
    with ``hang``, default ``indent``); one line when there is no limit."""
    first = indent + clean(text)
    if width is None or cells(first) <= width:
        return [first]
    hang = indent if hang is None else hang
    if width - cells(hang) < MIN_SHRUNK * 2:
        hang = indent if width - cells(indent) >= MIN_SHRUNK * 2 else ""
    text = clean(text)
    start, end = wrap_spans(text, width - cells(indent))[0]
    return [indent + text[start:end]] + [hang + line for line in wrap(text[end:], width - cells(hang)) if line]


# --- tables ------------------------------------------------------------------------------------


def _pad(text: str, width: int) -> str:
    return text + " " * (width - cells(text))


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None, shrink: Sequence[int] = ()
) -> str:
    """A left-aligned text table; every cell is ``str()``-ed (None as ``-``).

    :param width: the most cells a line may take (None: no limit).
    :param shrink: indices of the free-text columns that may be elided to fit ``width``, the
        widest first; the other columns are never cut. When they cannot fit, each row is shown as
        a record (:func:`records`) instead.
    """
    texts = [[clean(c) for c in headers]] + [[clean(c) for c in row] for row in rows]
    widths = [max(cells(row[i]) for row in texts) for i in range(len(headers))]
    if width is not None:
        width = max(MIN_WIDTH, width)
        floors = [max(MIN_SHRUNK, cells(texts[0][i])) if i in shrink else widths[i] for i in range(len(widths))]
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        while excess > 0:  # the widest column that may shrink loses a cell, until they fit
            room = [(widths[i], -i) for i in range(len(widths)) if widths[i] > floors[i]]
            if not room:
                return records(headers, rows, width, shrink)
            widths[-max(room)[1]] -= 1
            excess -= 1
        texts = [[clip(c, w) for c, w in zip(row, widths, strict=True)] for row in texts]
    lines = ["  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in texts]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def records(headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int, shrink: Sequence[int] = ()) -> str:
    """Each row as ``header  value`` lines, a blank line between rows: a table too wide for
    ``width``. Free-text values (``shrink``) are elided to one line; the others wrap, never cut."""
    names = [clean(h) for h in headers]
    label = max(cells(n) for n in names)
    inline = width - label - 2 >= MIN_SHRUNK * 2
    out: list[str] = []
    for row in rows:
        if out:
            out.append("")
        for i, (name, value) in enumerate(zip(names, row, strict=True)):
            text = clean(value)
            room = width - label - 2 if inline else width - 2
            lines = [clip(text, room)] if i in shrink else wrap(text, room)
            if inline:
                out += [_pad(name if n == 0 else "", label) + "  " + line for n, line in enumerate(lines)]
            else:
                out += [clip(name, width)] + ["  " + line for line in lines]
    return "\n".join(out)


# --- navstream status and dlq list ---------------------------------------------------------------


def age(ts_ms: Any, now_ms: int, never: str = "-") -> str:
    """``3.2s ago``, ``5m 07s ago``, ``2h 10m ago``, ``3d 4h ago``: time since ``ts_ms``; ``never``
    for a missing, 0 or unreadable stamp (no consumer handled a batch in 1970)."""
    text = str(ts_ms).strip() if ts_ms is not None else ""
    try:
        stamp = int(float(text)) if text and text.isascii() else 0  # float() would read '１２' as 12
    except (ValueError, OverflowError):
        return never
    if stamp <= 0:
        return never
    seconds = (now_ms - stamp) / 1000
    if seconds < 0:
        return f"{-seconds:.1f}s ahead (clock skew)"
    if seconds < 100:
        return f"{seconds:.1f}s ago"
    whole = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size}{unit} {whole % size // sub_size:02d}{sub} ago"
    return f"{whole}s ago"


def render_status(status: dict[str, Any], now_ms: int | None = None, width: Width = "terminal") -> str:
    """``navstream status`` for a person; ``width`` as :data:`Width` (default: the terminal's)."""
    limit = resolve(width)
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    out = [*prose(f"prefix {status['prefix']}  group {status['group']}", limit), ""]
    rows = []
    for stream, info in status["streams"].items():
        ours = next((g for g in info["groups"] if g["name"] == status["group"]), None)
        rows.append(
            [
                stream,
                info["length"],
                ours["lag"] if ours else "no group",
                ours["pending"] if ours else "-",
                ours["consumers"] if ours else 0,
            ]
        )
    out += [table(["stream", "length", "lag", "pending", "consumers"], rows, limit), ""]
    dead = status["dlq"]["length"]
    out += prose(f"dead letters: {dead}" + ("  (navstream dlq list)" if dead else ""), limit)
    out.append("")
    if status["consumers"]:
        out.append(
            table(
                [
                    *("consumer", "status", "role", "processed", "failed"),
                    *("dead-lettered", "lost", "last batch", "heartbeat"),
                ],
                [
                    [
                        h.get("consumer"),
                        h.get("status"),
                        h.get("role") or "all",  # a heartbeat without one is from before roles: all
                        h.get("processed"),
                        h.get("failed"),
                        h.get("dead_lettered"),
                        h.get("lost"),
                        age(h.get("last_batch_ms"), now_ms, "no batch yet"),
                        age(h.get("ts"), now_ms, "none"),
                    ]
                    for h in status["consumers"]
                ],
                limit,
            )
        )
    else:
        out.append("no live consumer (no heartbeat)")
    if status["alerts"]:
        rows = [[a.get("severity", "?"), a.get("code", "?"), a.get("message", "")] for a in status["alerts"]]
        inner = None if limit is None else limit - 2
        shown = table(["severity", "code", "message"], rows, inner, shrink=[2]).splitlines()
        out += ["", "latest alerts:", *("  " + line for line in shown)]
    nav = status["plugins"].get("nav")
    quote = str(nav.get("quote", "")) if isinstance(nav, Mapping) else ""
    for name, section in status["plugins"].items():
        out += ["", f"[{name}]", render_section(section, limit, quote)]
    return "\n".join(out)


def _money_cell(value: Any, currency: str) -> Any:
    if value is None or value == "":
        return "-"
    return amount(value, currency)


def render_section(section: Any, width: int | None = None, quote: str = "") -> str:
    """A plugin's status section: each list of records (``{"scopes": [{...}, ...]}``) as a
    table, empty lists as "none", anything else as JSON. Money (:data:`MONEY_KEYS`) is shown as
    a person reads it (:func:`navstream.display.amount`), its currency in the column's header: the
    section's ``quote``, else ``quote`` (the NAV's); ``--json`` keeps the exact values."""
    if not isinstance(section, dict):
        lines = json.dumps(section, indent=2, default=str).splitlines()
        return "\n".join(clean(line) if width is None else clip(clean(line), width) for line in lines)
    currency = str(section.get("quote") or quote)
    out = []
    for key, value in section.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            headers = list(dict.fromkeys(k for row in value for k in row))
            rows = [
                [_money_cell(row.get(h), currency) if h in MONEY_KEYS else _cell(row.get(h)) for h in headers]
                for row in value
            ]
            free = [i for i, h in enumerate(headers) if h in FREE_TEXT_KEYS]
            shown = [f"{h} ({currency})" if h in MONEY_KEYS and currency else h for h in headers]
            out += [f"{key}:", table(shown, rows, width, shrink=free)]
        elif isinstance(value, list) and not value:
            out.append(f"{key}: none")
        else:
            line = f"{key}: {json.dumps(value, default=str)}"
            out.append(clip(clean(line), width) if width else clean(line))
    return "\n".join(out)


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return value


def render_dlq(rows: list[dict[str, Any]], width: Width = "terminal") -> str:
    """``navstream dlq list`` for a person: the error and the entry's fields are elided to fit."""
    if not rows:
        return "no dead letters"
    return table(
        ["id", "from", "deliveries", "error", "fields"],
        [
            [
                r["id"],
                r.get("dlq_stream"),
                r.get("dlq_deliveries"),
                r.get("dlq_error"),
                " ".join(f"{k}={v}" for k, v in r.items() if k != "id" and not k.startswith("dlq_")),
            ]
            for r in rows
        ],
        resolve(width),
        shrink=[3, 4],
    )

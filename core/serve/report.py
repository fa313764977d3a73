"""What a plugin hands the consumer's HTTP endpoint through the reporting hooks
(:mod:`navstream.plugin.hookspecs`, "Reporting"): its panels on the status page, its metric
families on ``/metrics``. Exported by the ``navstream`` facade; this module names no plugin.

A status page panel is a small typed document that the page draws without knowing whose it is:
a :class:`Panel` holds blocks, each a :class:`Table` (cells are text, a number, an age, or a
badge coloured by its :data:`Tone`), a :class:`Facts` list, a :class:`Text` paragraph or a
:class:`Chart` of series (one per row of a table, the selected row's drawn). Every value reaches
the page as text; nothing a plugin sends is parsed as HTML.

Metric families are prometheus_client's (``GaugeMetricFamily``, ``CounterMetricFamily``, built
with :func:`gauge` and :func:`counter`): a plugin builds them at scrape time, so every value is
"as of now" and there is no ``_created`` series.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

#: A badge's colour, by meaning: ``ok`` green, ``warning`` amber, ``degraded`` orange,
#: ``critical`` red, ``neutral`` grey.
Tone = Literal["ok", "warning", "degraded", "critical", "neutral", ""]


class Cell(msgspec.Struct, frozen=True, omit_defaults=True):
    """One table cell.

    :ivar text: what is shown (the exact text: format numbers yourself, ``202,000 USD``).
    :ivar badge: draw ``text`` as a badge of this kind: CSS class ``badge <badge> <badge>-<text>``.
    :ivar tone: the badge's colour.
    :ivar title: a tooltip (the reasons behind a status, say).
    :ivar num: right-aligned, tabular figures.
    :ivar wrap: long text (a message, a reason): wrapped at a readable width.
    :ivar ago: draw ``age_s`` as an age (``12s ago``; ``never`` when it is None) instead of ``text``.
    :ivar expires_ms: from this moment (epoch ms, the server's clock) on, the page draws
        ``expired`` instead: a page that cannot reach the server never shows a value past its
        own limit (an ``ok`` past its ``fresh_until`` turns ``stale`` by itself).
    """

    text: str = ""
    badge: str = ""
    tone: Tone = ""
    title: str = ""
    num: bool = False
    wrap: bool = False
    ago: bool = False
    age_s: float | None = None
    expires_ms: int | None = None
    expired: Cell | None = None


class Column(msgspec.Struct, frozen=True, omit_defaults=True):
    title: str
    num: bool = False


class Row(msgspec.Struct, frozen=True, omit_defaults=True):
    """A table row. ``key`` names it (``data-scope`` on the page, and the series a
    :class:`Chart` draws for it); ``label`` is its name in the chart's heading."""

    cells: list[Cell]
    key: str = ""
    label: str = ""


class Table(msgspec.Struct, frozen=True, omit_defaults=True, tag="table", tag_field="kind"):
    """Rows under column headings. With ``select``, a click on a row selects it (the first row
    keyed ``default_key``, else the first row, is selected at first) for the charts that follow
    this table. ``empty`` is shown instead when there is no row."""

    id: str
    columns: list[Column]
    rows: list[Row]
    empty: str = ""
    select: bool = False
    default_key: str = ""


class Fact(msgspec.Struct, frozen=True, omit_defaults=True):
    label: str
    value: str
    tone: Tone = ""


class Facts(msgspec.Struct, frozen=True, omit_defaults=True, tag="facts", tag_field="kind"):
    """``label: value`` lines."""

    items: list[Fact]
    id: str = ""


class Text(msgspec.Struct, frozen=True, omit_defaults=True, tag="text", tag_field="kind"):
    """A paragraph; ``error`` draws it as an error."""

    text: str
    id: str = ""
    muted: bool = False
    error: bool = False


class Chart(msgspec.Struct, frozen=True, omit_defaults=True, tag="chart", tag_field="kind"):
    """A line chart of the series of the row selected in table ``table``.

    ``series`` maps a row's key to its points ``[epoch_ms, value, tone]`` (oldest first; the
    value a number or the exact decimal string). A point without a value (``None``) or with the
    tone ``critical`` (a value that could not be computed, such as a failed NAV's placeholder 0)
    is drawn as a gap in the line, never as a value; so is a time between two points longer
    than ``max_gap_ms`` (when set: nothing was published then). The value axis fits the
    points that have a value. Each point's tone colours the line and a status strip under it.

    :ivar unit: the values' currency: axis labels and tooltips are money in the one format
        (grouped digits, the currency's decimals from ``[display]``), and the axis says it.
    :ivar tone_labels: what each tone means here (``{"warning": "stale"}``), for the legend
        and tooltips; a tone not listed is shown by its own name.

    The heading reads ``<title>: <row label> (<n> points...)``; the SVG is ``<id>``, its line
    ``<id>-line``, its points ``<id>-points``.
    """

    id: str
    table: str
    title: str
    series: dict[str, list[tuple[int, float | str | None, str]]]
    unit: str = ""
    max_gap_ms: int = 0
    tone_labels: dict[str, str] = {}


Block = Table | Facts | Text | Chart


class Panel(msgspec.Struct, frozen=True, omit_defaults=True):
    """One box on the status page: a heading and its blocks, in order. ``wide`` spans the page."""

    id: str
    title: str
    blocks: list[Block]
    wide: bool = False


class StatusSection(msgspec.Struct, frozen=True, omit_defaults=True):
    """A plugin's part of the status page and of ``/api/status``.

    :ivar panels: drawn on the page, in order, where the plugins' panels go.
    :ivar fields: top-level keys of ``/api/status`` this plugin keeps for readers of that
        document (JSON-able; a key navstream itself answers, or another plugin gave first, is
        left out and reported).
    """

    panels: list[Panel] = []
    fields: dict[str, Any] = {}


@dataclass(frozen=True)
class PluginMetrics:
    """A plugin's part of ``/metrics``.

    :ivar families: metric families of its own (built at scrape time; a name navstream
        exports, or another plugin did first, is left out and counted as a reporting error).
    :ivar health_counters: keys of its ``navstream_health`` report that are running counts,
        though not named ``*_total``: exported in ``navstream_plugin_counter_total``, not as gauges.
    :ivar health_hidden: keys of its ``navstream_health`` report not exported there at all
        (because a family of its own has them).
    :ivar problems: what the plugin could not read for this scrape (its families say the rest):
        each is counted in ``navstream_plugin_report_errors_total``, never dropped silently.
    """

    families: tuple[Metric, ...] = ()
    health_counters: frozenset[str] = frozenset()
    health_hidden: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    """An empty gauge family; ``add_metric(label_values, value)`` adds its samples."""
    return GaugeMetricFamily(name, doc, labels=list(labels))


def counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    """An empty counter family (``name`` without ``_total``: the exposition adds it)."""
    return CounterMetricFamily(name, doc, labels=list(labels))


def clip(text: Any, limit: int = 500) -> str:
    """``text`` cut to ``limit`` characters (``...`` marks a cut): what one status read may send."""
    shown = str(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def panel_json(panels: Iterable[Panel]) -> list[Any]:
    return [msgspec.to_builtins(p) for p in panels]


__all__ = [
    "Block",
    "Cell",
    "Chart",
    "Column",
    "CounterMetricFamily",
    "Fact",
    "Facts",
    "GaugeMetricFamily",
    "Metric",
    "Panel",
    "PluginMetrics",
    "Row",
    "StatusSection",
    "Table",
    "Text",
    "Tone",
    "clip",
    "counter",
    "gauge",
    "panel_json",
]

"""What the plugins contribute to the consumer's endpoint, gathered through their reporting hooks
(:mod:`navstream.plugin.hookspecs`, "Reporting"), always through :mod:`navstream.plugin.calls`.

- the status page and ``/api/status``: ``navstream_status_page`` (typed panels) and
  ``navstream_status`` (the mapping ``navstream status`` shows, drawn as it is when the plugin
  draws no panels of its own);
- ``/metrics``: ``navstream_metrics`` (families, and which health keys are counts);
- ``/readyz``: ``navstream_readiness`` (reasons).

Each plugin's call is bounded in time, and one that raises or runs late loses only its own
contribution: the error is shown in its place (a panel, a readiness reason, a counted error in
``/metrics``). Nothing here names a plugin.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from navstream.plugin import calls
from navstream.serve.report import (
    Cell,
    Column,
    Fact,
    Facts,
    Metric,
    Panel,
    PluginMetrics,
    Row,
    StatusSection,
    Table,
    Text,
    clip,
    panel_json,
)

if TYPE_CHECKING:
    from navstream.app import App

#: Rows and columns of a plugin's ``navstream_status`` list drawn on the page (the rest counted).
MAX_ROWS = 50
MAX_COLUMNS = 12


def _why(called: calls.Called, timeout: float | None) -> str:
    exc = called.exc
    if isinstance(exc, calls.HookTimeout):
        return f"no answer within {timeout:g}s"
    return clip(f"{type(exc).__name__}: {exc}", 300)


def _order(app: App, names: Iterable[str]) -> list[str]:
    """Plugin names in the order they were loaded (the page draws them so)."""
    rank = {info.name: i for i, info in enumerate(app.plugins.info)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))


# --- the status page and /api/status ----------------------------------------------------------


@dataclass
class PageReads:
    """The plugins' part of ``/api/status`` (see :func:`navstream.serve.status.status_document`)."""

    #: plugin -> ``{"panels": [...]}`` (plus ``"error"`` when its hook failed).
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: plugin -> its ``navstream_status`` mapping (``{"error": ...}`` when that failed).
    status: dict[str, Any] = field(default_factory=dict)
    #: plugin -> the top-level ``/api/status`` keys it keeps.
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return clip(value)
    return clip(json.dumps(value, default=str, separators=(", ", ": ")))


def generic_panels(plugin: str, data: Mapping[str, Any]) -> list[Panel]:
    """A plugin's ``navstream_status`` mapping drawn as it is: its lists of mappings as tables,
    everything else as facts (an ``error`` first, as an error)."""
    blocks: list[Any] = []
    facts: list[Fact] = []
    tables: list[Any] = []
    for key, value in data.items():
        if key == "error" and isinstance(value, str):
            blocks.append(Text(clip(value), error=True))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            shown = value[:MAX_ROWS]
            columns = list(dict.fromkeys(str(k) for row in shown for k in row))[:MAX_COLUMNS]
            more = f" (the first {MAX_ROWS} of {len(value)})" if len(value) > MAX_ROWS else ""
            tables.append(Text(f"{key}{more}", muted=True))
            tables.append(
                Table(
                    id=f"{plugin}-{key}",
                    columns=[Column(c) for c in columns],
                    rows=[Row(cells=[Cell(_text(row.get(c, ""))) for c in columns]) for row in shown],
                )
            )
        else:
            facts.append(Fact(str(key), _text(value)))
    if facts:
        blocks.append(Facts(facts))
    return [Panel(id=f"plugin-{plugin}", title=plugin, blocks=blocks + tables)]


def _error_panel(plugin: str, why: str) -> Panel:
    return Panel(
        id=f"plugin-{plugin}",
        title=plugin,
        blocks=[Text(f"plugin {plugin}: its status could not be read: {why}", error=True)],
    )


async def read_page(app: App, now_ms: int, timeout: float | None) -> PageReads:
    """Every plugin's panels and ``navstream_status`` section, as one read of the page: both
    hooks of every plugin at once, so the read takes one ``timeout`` at most. What a plugin
    hands back that cannot be shown is its own error, never the page's."""
    kwargs = {"app": app, "now_ms": now_ms}
    pages, statuses = await asyncio.gather(
        calls.collect(app.pm, "navstream_status_page", kwargs, timeout=timeout),
        calls.collect(app.pm, "navstream_status", {"app": app}, timeout=timeout),
    )
    out = PageReads()
    typed = {called.plugin: called for called in pages}
    for called in statuses:
        if not called.ok:
            out.status[called.plugin] = {"error": _why(called, timeout)}
        elif called.value is not None:
            problem = _unshowable(called.value)
            out.status[called.plugin] = {"error": problem} if problem else called.value
    for plugin in _order(app, [*typed, *out.status]):
        try:
            _section(out, plugin, typed.get(plugin), timeout)
        except Exception as exc:  # noqa: BLE001 - a section that cannot be drawn is its plugin's error
            why = f"its section cannot be shown: {type(exc).__name__}: {exc}"
            out.sections[plugin] = {"error": why, "panels": panel_json([_error_panel(plugin, why)])}
            out.fields.pop(plugin, None)
            out.errors.append(f"plugin {plugin!r}: navstream_status_page: {why}")
    return out


def _section(out: PageReads, plugin: str, page: calls.Called | None, timeout: float | None) -> None:
    if page is not None and not page.ok:
        why = _why(page, timeout)
        out.sections[plugin] = {"error": why, "panels": panel_json([_error_panel(plugin, why)])}
        out.errors.append(f"plugin {plugin!r}: navstream_status_page: {why}")
        return
    value = None if page is None else page.value
    if isinstance(value, StatusSection):
        panels = panel_json(value.panels)
        fields = dict(value.fields) if value.fields else {}
        problem = _unshowable([panels, fields])
        if problem:
            raise ValueError(problem)
        out.sections[plugin] = {"panels": panels}
        if fields:
            out.fields[plugin] = fields
        return
    if value is not None:
        why = f"navstream_status_page returned {type(value).__name__}, not a StatusSection"
        out.sections[plugin] = {"error": why, "panels": panel_json([_error_panel(plugin, why)])}
        out.errors.append(f"plugin {plugin!r}: {why}")
        return
    data = out.status.get(plugin)
    if isinstance(data, Mapping):
        out.sections[plugin] = {"panels": panel_json(generic_panels(plugin, data))}


def _unshowable(value: Any) -> str:
    """Why ``value`` cannot go into ``/api/status`` as JSON (as the route encodes it), or ""."""
    try:
        json.dumps(value, separators=(",", ":"), default=str)
    except Exception as exc:  # noqa: BLE001 - any reason is the plugin's, told as it is
        return f"not JSON: {type(exc).__name__}: {exc}"
    return ""


# --- /metrics ---------------------------------------------------------------------------------


@dataclass
class MetricReads:
    """The plugins' part of one scrape."""

    #: (plugin, family) in the plugins' order.
    families: list[tuple[str, Metric]] = field(default_factory=list)
    health_counters: dict[str, frozenset[str]] = field(default_factory=dict)
    health_hidden: dict[str, frozenset[str]] = field(default_factory=dict)
    #: (plugin, why) of each plugin whose hook failed in this scrape.
    errors: list[tuple[str, str]] = field(default_factory=list)


async def read_metrics(app: App, now_ms: int, timeout: float | None) -> MetricReads:
    out = MetricReads()
    for called in await calls.collect(app.pm, "navstream_metrics", {"app": app, "now_ms": now_ms}, timeout=timeout):
        if not called.ok:
            out.errors.append((called.plugin, _why(called, timeout)))
            continue
        value = called.value
        if value is None:
            continue
        if not isinstance(value, PluginMetrics):
            if isinstance(value, Metric) or not isinstance(value, (list, tuple)):
                out.errors.append((called.plugin, f"returned {type(value).__name__}, not a list of metric families"))
                continue
            value = PluginMetrics(families=tuple(value))
        why = _unexportable(value.families)
        if why:
            out.errors.append((called.plugin, why))
            continue
        out.families += [(called.plugin, f) for f in value.families]
        out.health_counters[called.plugin] = frozenset(value.health_counters)
        out.health_hidden[called.plugin] = frozenset(value.health_hidden)
        out.errors += [(called.plugin, str(problem)) for problem in value.problems]
    return out


def _unexportable(families: Iterable[object]) -> str:
    """Why these families cannot be rendered (so that one plugin's bad family never fails the
    whole scrape), or ""."""
    for family in families:
        if not isinstance(family, Metric):
            return f"returned {type(family).__name__}, not a metric family"
        for s in family.samples:
            if isinstance(s.value, bool) or not isinstance(s.value, (int, float)):
                return f"family {family.name}: sample {s.name} has the value {s.value!r}, not a number"
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in s.labels.items()):
                return f"family {family.name}: sample {s.name} has labels that are not text"
    return ""


# --- /readyz ----------------------------------------------------------------------------------


async def read_readiness(
    app: App, now_ms: int, ready_on_stale_data: bool, timeout: float | None
) -> list[tuple[str, list[str]]]:
    """``(plugin, reasons)`` of each plugin that gives reasons; a plugin whose hook fails is one."""
    out = []
    kwargs = {"app": app, "now_ms": now_ms, "ready_on_stale_data": ready_on_stale_data}
    for called in await calls.collect(app.pm, "navstream_readiness", kwargs, timeout=timeout):
        if not called.ok:
            why = _why(called, timeout)
            out.append((called.plugin, [f"plugin {called.plugin} cannot tell its readiness: {why}"]))
        elif called.value:
            value = called.value
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                why = f"navstream_readiness returned {type(value).__name__}, not a list of reasons"
                out.append((called.plugin, [f"plugin {called.plugin} cannot tell its readiness: {why}"]))
            else:
                out.append((called.plugin, [clip(str(r)) for r in value]))
    return out

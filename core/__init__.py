"""navstream: a plugin-based stream processor on Redis Streams for a trading desk's NAV and risk.

This module is the plugin API. A plugin imports from here, and from another plugin's declared
``api`` module, and from nowhere else in navstream; it never imports pluggy::

    from navstream import AppProtocol, Balance, Outputs, hookimpl

What is here: the hook markers, the application a hook receives (:class:`AppProtocol`), the
output buffer, the events of the wire contract, the source API (``navstream ingest``), the
number grammar (:mod:`navstream.numbers`), the key and name helpers, and the errors.

Only the light part of the API is imported by ``import navstream``; the rest (the application
and its Redis clients, the source API's HTTP helpers, the reporting types, the batch writer)
is imported the first time one of its names is used, so that importing the facade, or
``navstream.client`` in a trading engine, costs only what is used. Type checkers see every
name as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from navstream.clock import Clock, ManualClock, SystemClock
from navstream.contract import numbers
from navstream.contract.events import (
    Balance,
    DecodeError,
    Event,
    InvalidOrder,
    Order,
    Position,
    Price,
    SourceStatus,
    as_str,
    as_str_list,
    as_str_map,
    encode_fields,
)
from navstream.contract.fingerprint import order_hash, raw_order_hash
from navstream.contract.keys import DECISION_STORE, REUSED_STORE, Keys, escape_name, scope_id, unescape_name
from navstream.contract.navread import stale_as_read
from navstream.contract.outputs import Alert, Outputs, parse_field, parse_first
from navstream.display import amount as format_amount
from navstream.display import money as format_money
from navstream.plugin.hookspecs import (
    CommandHandler,
    RegisterCommand,
    RegisterSection,
    RegisterSource,
    hookimpl,
    hookspec,
)
from navstream.plugin.protocol import AppProtocol
from navstream.version import __version__

if TYPE_CHECKING:
    from navstream.app import App
    from navstream.config import ConfigError
    from navstream.ingest.httppool import check as check_response
    from navstream.ingest.httppool import excerpt as response_excerpt
    from navstream.plugin.commands import connection_options
    from navstream.plugin.manager import PluginError
    from navstream.render import table, terminal_width
    from navstream.serve.report import (
        Cell,
        Chart,
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
        Tone,
    )
    from navstream.serve.report import counter as counter_family
    from navstream.serve.report import gauge as gauge_family
    from navstream.sources import (
        Fetched,
        Source,
        SourceConfigError,
        SourceContext,
        SourceError,
        SourceEvent,
        SourceSettings,
        clip,
        redact,
    )
    from navstream.store.writer import WriteError, write_now

#: name -> (module, attribute): imported on first use (PEP 562).
_LAZY: dict[str, tuple[str, str]] = {
    "App": ("navstream.app", "App"),
    "Cell": ("navstream.serve.report", "Cell"),
    "Chart": ("navstream.serve.report", "Chart"),
    "Column": ("navstream.serve.report", "Column"),
    "ConfigError": ("navstream.config", "ConfigError"),
    "Fact": ("navstream.serve.report", "Fact"),
    "Facts": ("navstream.serve.report", "Facts"),
    "Fetched": ("navstream.sources", "Fetched"),
    "Metric": ("navstream.serve.report", "Metric"),
    "Panel": ("navstream.serve.report", "Panel"),
    "PluginError": ("navstream.plugin.manager", "PluginError"),
    "PluginMetrics": ("navstream.serve.report", "PluginMetrics"),
    "Row": ("navstream.serve.report", "Row"),
    "Source": ("navstream.sources", "Source"),
    "SourceConfigError": ("navstream.sources", "SourceConfigError"),
    "SourceContext": ("navstream.sources", "SourceContext"),
    "SourceError": ("navstream.sources", "SourceError"),
    "SourceEvent": ("navstream.sources", "SourceEvent"),
    "SourceSettings": ("navstream.sources", "SourceSettings"),
    "StatusSection": ("navstream.serve.report", "StatusSection"),
    "Table": ("navstream.serve.report", "Table"),
    "Text": ("navstream.serve.report", "Text"),
    "Tone": ("navstream.serve.report", "Tone"),
    "WriteError": ("navstream.store.writer", "WriteError"),
    "check_response": ("navstream.ingest.httppool", "check"),
    "clip": ("navstream.sources", "clip"),
    "connection_options": ("navstream.plugin.commands", "connection_options"),
    "counter_family": ("navstream.serve.report", "counter"),
    "gauge_family": ("navstream.serve.report", "gauge"),
    "redact": ("navstream.sources", "redact"),
    "response_excerpt": ("navstream.ingest.httppool", "excerpt"),
    "table": ("navstream.render", "table"),
    "terminal_width": ("navstream.render", "terminal_width"),
    "write_now": ("navstream.store.writer", "write_now"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'navstream' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Alert",
    "App",
    "AppProtocol",
    "Balance",
    "Cell",
    "Chart",
    "Clock",
    "Column",
    "CommandHandler",
    "ConfigError",
    "DECISION_STORE",
    "DecodeError",
    "Event",
    "Fact",
    "Facts",
    "Fetched",
    "InvalidOrder",
    "Keys",
    "ManualClock",
    "Metric",
    "Order",
    "Outputs",
    "Panel",
    "PluginError",
    "PluginMetrics",
    "Position",
    "Price",
    "REUSED_STORE",
    "RegisterCommand",
    "RegisterSection",
    "RegisterSource",
    "Row",
    "Source",
    "SourceConfigError",
    "SourceContext",
    "SourceError",
    "SourceEvent",
    "SourceSettings",
    "SourceStatus",
    "StatusSection",
    "SystemClock",
    "Table",
    "Text",
    "Tone",
    "WriteError",
    "__version__",
    "as_str",
    "as_str_list",
    "as_str_map",
    "check_response",
    "clip",
    "connection_options",
    "counter_family",
    "encode_fields",
    "escape_name",
    "format_amount",
    "format_money",
    "gauge_family",
    "hookimpl",
    "hookspec",
    "numbers",
    "order_hash",
    "parse_field",
    "parse_first",
    "raw_order_hash",
    "redact",
    "response_excerpt",
    "scope_id",
    "stale_as_read",
    "table",
    "terminal_width",
    "unescape_name",
    "write_now",
]

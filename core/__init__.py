"""navstream: a plugin-based stream processor on Redis Streams for a trading desk's NAV and risk.

Plugins import what they need from here and never import pluggy themselves::

    from navstream import hookimpl, Outputs
"""

__version__ = "0.1.0"

from navstream.app import App, ManualClock, SystemClock
from navstream.contract.events import (
    Balance,
    DecodeError,
    Event,
    InvalidOrder,
    Order,
    Position,
    Price,
    SourceStatus,
)
from navstream.plugin.hookspecs import hookimpl, hookspec
from navstream.contract.outputs import Alert, Outputs


__all__ = [
    "Alert",
    "App",
    "Balance",
    "DecodeError",
    "Event",
    "InvalidOrder",
    "ManualClock",
    "Order",
    "Outputs",
    "Position",
    "Price",
    "SourceStatus",
    "SystemClock",
    "__version__",
    "hookimpl",
    "hookspec",
]

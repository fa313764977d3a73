"""What the nav plugin offers other plugins: its stored state's readers, the snapshot type and
the exact money arithmetic. Other plugins import from here, never from nav's other modules,
so nav may rearrange those freely.

The risk gate reads the NAV, prices, sources and positions nav stores, and declares how old a
NAV it accepts (:func:`declare_reader_limit`, shown beside each NAV); the Firestore sink mirrors
the snapshots.
"""

from navstream.plugins.nav.config import NavConfig
from navstream.plugins.nav.readers import ReaderLimit, declare_reader_limit, read_reader_limits
from navstream.plugins.nav.state import (
    ACCOUNTS,
    LATEST,
    PRICES,
    SOURCES,
    PositionPayload,
    StateError,
    decode_snapshot,
    parse_positions,
    parse_quotes,
    parse_sources,
    positions_key,
    read_latest,
)
from navstream.plugins.nav.valuation import (
    CONTEXT,
    Market,
    Quote,
    Snapshot,
    SourceState,
    Unit,
    as_read,
    escape,
    exact_add,
    exact_mul,
    money,
    worst_by,
)

__all__ = [
    "ACCOUNTS",
    "CONTEXT",
    "LATEST",
    "PRICES",
    "SOURCES",
    "Market",
    "NavConfig",
    "PositionPayload",
    "Quote",
    "ReaderLimit",
    "Snapshot",
    "SourceState",
    "StateError",
    "Unit",
    "as_read",
    "declare_reader_limit",
    "decode_snapshot",
    "escape",
    "exact_add",
    "exact_mul",
    "money",
    "parse_positions",
    "parse_quotes",
    "parse_sources",
    "positions_key",
    "read_latest",
    "read_reader_limits",
    "worst_by",
]

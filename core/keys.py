"""Redis key names of the wire contract, all under one prefix ``P``."""

from __future__ import annotations


class Keys:
    """``Keys("navstream").events == "navstream:events"``; see docs/contract.md."""

    __slots__ = ("prefix", "events", "orders", "nav", "decisions", "alerts", "dlq", "failures")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events = f"{prefix}:events"
        self.orders = f"{prefix}:orders"
        self.nav = f"{prefix}:nav"
        self.decisions = f"{prefix}:decisions"
        self.alerts = f"{prefix}:alerts"
        self.dlq = f"{prefix}:dlq"
        #: Hash ``<stream>/<id> -> last error`` of entries that failed and await redelivery,
        #: so whichever consumer dead-letters them can say why.
        self.failures = f"{prefix}:state:failures"

    def stream(self, name: str) -> str:
        """An output stream by short name (``"nav"`` -> ``P:nav``)."""
        if not name or ":" in name or name in ("events", "orders"):
            raise ValueError(f"invalid output stream name {name!r}")
        return f"{self.prefix}:{name}"

    def state(self, *parts: str) -> str:
        """A state key, ``P:state:a:b``; parts are joined with ``:``."""
        if not parts or any(not p for p in parts):
            raise ValueError(f"invalid state key parts {parts!r}")
        return f"{self.prefix}:state:" + ":".join(parts)

    def heartbeat(self, consumer: str) -> str:
        return f"{self.prefix}:heartbeat:{consumer}"

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.events, self.orders)


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream id as a comparable ``(ms, seq)``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    """The smallest id after ``entry_id``."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"

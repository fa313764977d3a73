"""Redis key names of the wire contract, all under one prefix ``P``."""

from __future__ import annotations

import functools


def escape_chars(part: str, separators: str) -> str:
    """``part`` with ``%`` and each of ``separators`` percent-escaped (``:`` -> ``%3A``), so that
    ``part`` cannot run into the next part of whatever joins them with those separators.

    The one escaping of the wire contract. Its users differ only in the separators (each its
    own key or member format, which must not change): :func:`escape_name` (names: ``:/|``), and
    the once-markers of :mod:`navstream.contract.alerts` (a code or subject: ``:``; one part of
    an alert's default subject: ``/``).
    """
    part = part.replace("%", "%25")
    for sep in separators:
        part = part.replace(sep, _PERCENT[sep])
    return part


_PERCENT = {sep: f"%{ord(sep):02X}" for sep in ":/|"}
NAME_SEPARATORS = ":/|"


@functools.lru_cache(maxsize=65_536)
def escape_name(part: str) -> str:
    """A venue, account or asset name inside a key or member: ``%``, ``:``, ``/`` and ``|``
    escaped, so names that contain separators never collide (``a:b`` + ``c`` vs ``a`` + ``b:c``)."""
    return escape_chars(part, NAME_SEPARATORS)


def unescape_name(part: str) -> str:
    """The inverse of :func:`escape_name`."""
    return part.replace("%7C", "|").replace("%2F", "/").replace("%3A", ":").replace("%25", "%")


def scope_id(scope: str, venue: str = "", account: str = "") -> str:
    """The member of a NAV scope in ``P:state:nav:latest``: ``total``, ``exchange``,
    ``venue:<venue>``, ``account:<venue>/<account>`` (names escaped)."""
    if scope == "account":
        return f"account:{escape_name(venue)}/{escape_name(account)}"
    if scope == "venue":
        return f"venue:{escape_name(venue)}"
    return scope


def hash_tagged(prefix: str) -> str:
    """``prefix`` as a Redis Cluster hash tag: ``navstream`` -> ``{navstream}``.

    Every key of a deployment then hashes to one slot, so each Lua script and MULTI of a step
    stays in one slot (docs/scaling.md). A prefix that already holds a hash tag (a ``{...}``
    with something inside, the first one counting, as Redis reads it) is kept as it is.
    """
    start = prefix.find("{")
    if start >= 0:
        end = prefix.find("}", start + 1)
        if end > start + 1:
            return prefix
    return "{" + prefix + "}"


class Keys:
    """``Keys("navstream").events == "navstream:events"``; see docs/contract.md.

    With ``cluster=True`` (``[redis] cluster``) the prefix is a hash tag:
    ``Keys("navstream", cluster=True).events == "{navstream}:events"``, and :attr:`prefix` is
    that key prefix ``P`` (``{navstream}``), so everything built from it stays in the one slot.
    """

    __slots__ = ("prefix", "events", "orders", "nav", "decisions", "alerts", "dlq", "failures")

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        if cluster:
            prefix = hash_tagged(prefix)
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


#: ``P:state:risk:decisions`` (``Keys.state(DECISION_STORE)``): hash, ``order_id`` -> the decision
#: first given to it, as a JSON array of field/value pairs (docs/contract.md). The order gate
#: writes it; a trading engine's client reads it to answer a re-sent order without waiting.
DECISION_STORE = "risk:decisions"
#: ``P:state:risk:reused``: hash, ``<order_hash>:<order_id>`` -> the veto given to an order that
#: reused an id with other content (docs/contract.md), same encoding.
REUSED_STORE = "risk:reused"


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream id as a comparable ``(ms, seq)``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    """The smallest id after ``entry_id``."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"

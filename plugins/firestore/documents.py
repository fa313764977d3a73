"""The documents the sink writes, built from navstream's state: pure functions, no I/O.

Paths are relative to ``<root>/<env>``:

- ``nav/<scope>``: the latest NAV of a scope (``total``, ``exchange``, ``venue:<venue>``,
  ``account:<venue>|<account>``), from ``P:state:nav:latest``;
- ``risk/<scope>``: a trading record (``desk``, ``account:<venue>|<account>``), from
  ``P:state:risk:trading``;
- ``heartbeats/<consumer>``: one per consumer;
- ``nav_history/<id>``: one per scope per ``history_every_s`` (optional).

Money is an exact decimal string (Firestore has no decimal type), with a float copy beside it
(``nav_float``) for charts only. A NAV document carries the status a reader must take the NAV
for when the document is built (:func:`~navstream.plugins.nav.valuation.as_read`): a stored
``ok`` past its ``fresh_until`` is written ``stale``, whatever tick has not yet said so; the
stored status is kept beside it as ``stored_status``. A scope that rests on no data at all is
not written (:func:`with_data`): a document is absent rather than empty, so nothing ever
overwrites a real figure with a placeholder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import msgspec

from navstream import unescape_name
from navstream.plugins.nav.api import Snapshot, as_read, escape, money
from navstream.plugins.risk.api import TradingRecord

#: ``always``: written whatever the budget (heartbeats); ``changes``: significant when its
#: status moved or its value moved enough; ``never``: only while the budget is not low (history).
Significance = Literal["always", "changes", "never"]
#: Fields that change on every evaluation without saying anything new: a document that differs
#: from the one last written only in these is not written again.
VOLATILE = frozenset({"computed_at", "age_ms", "ts", "written_by"})
#: The member of ``P:state:risk:trading`` that holds the desk's record.
DESK = "*"

_encode = msgspec.json.Encoder(order="sorted").encode


@dataclass(frozen=True, slots=True)
class Doc:
    """One write (or delete, ``data is None``) the sink may make."""

    path: str
    data: Mapping[str, Any] | None
    kind: str
    significance: Significance
    #: Written only by the leader (nav, risk, history); heartbeats are every consumer's own.
    shared: bool
    #: What makes it new: the data without :data:`VOLATILE` fields.
    content: str = ""
    #: The discrete part (status, missing, stale sources; trading state): any change is significant.
    sig: str = ""
    #: The value whose move beyond ``significant_move_pct`` is significant.
    amount: Decimal | None = None
    #: ``(state key, member, score)``: recorded in Redis once written (``ZADD``), or removed
    #: (``ZREM``) once deleted: the history index.
    index: tuple[str, str, int] | None = None


def content_of(data: Mapping[str, Any]) -> str:
    return _encode({k: v for k, v in data.items() if k not in VOLATILE}).decode()


_RESERVED_ID = re.compile(r"__.*__|\.{1,2}")


unescape = unescape_name  # the inverse of navstream's name escaping (``%3A`` ``%2F`` ``%7C`` ``%25``)


def safe_id(raw: str) -> str:
    """A Firestore document id: no ``/`` (already escaped by callers), not ``.``, ``..`` or
    ``__...__`` (reserved), at most 1500 bytes."""
    out = raw if not _RESERVED_ID.fullmatch(raw) else f"~{raw}"
    if len(out.encode()) > 1500:
        digest = hashlib.sha256(out.encode()).hexdigest()[:16]
        out = out.encode()[:1400].decode(errors="ignore") + f"~{digest}"
    return out


def nav_doc_id(scope_id: str) -> str:
    """``account:binance/main`` -> ``account:binance|main``: names inside a scope id are
    escaped (``%2F``, ``%7C``), so its one raw ``/`` becomes ``|`` without any collision."""
    return safe_id(scope_id.replace("/", "|"))


def risk_doc_id(member: str) -> str:
    return "desk" if member == DESK else safe_id("account:" + member.replace("/", "|"))


def consumer_doc_id(consumer: str) -> str:
    return safe_id(escape(consumer))


def as_float(value: Decimal) -> float:
    return float(value)


def nav_data(snap: Snapshot, now_ms: int) -> dict[str, Any]:
    """The document of ``snap`` as read at ``now_ms`` (:func:`as_read`)."""
    stored = snap.status
    snap = as_read(snap, now_ms)
    return {
        "scope": snap.scope,
        "scope_id": snap.scope_id,
        "venue": snap.venue,
        "account": snap.account,
        "kind": snap.kind,
        "label": snap.label,
        "quote": snap.quote,
        "nav": money(snap.nav),
        "nav_float": as_float(snap.nav),
        "status": snap.status,
        "stored_status": stored,
        "fresh_until": snap.fresh_until,
        "as_of": snap.as_of,
        "computed_at": snap.computed_at,
        # as_of 0: part of it rests on nothing (an account without data); no age to tell
        "age_ms": max(0, snap.computed_at - snap.as_of) if snap.as_of > 0 else None,
        "since": snap.since,
        "missing": list(snap.missing),
        "stale_sources": list(snap.stale_sources),
        "reasons": list(snap.reasons),
        "accounts": list(snap.accounts),
        "zero_wallet": snap.zero_wallet,
    }


def nav_sig(snap: Snapshot) -> str:
    return "|".join((snap.status, ",".join(snap.missing), ",".join(snap.stale_sources)))


def with_data(latest: Mapping[str, Snapshot]) -> list[Snapshot]:
    """The scopes that rest on some data: an account with any input, an aggregate (venue,
    exchange, total) with any such account. The others are not written at all (absent, not
    empty); an aggregate that lacks some accounts' data is written, with the status that says so.
    """
    fed = {f"{s.venue}/{s.account}" for s in latest.values() if s.scope == "account" and s.as_of > 0}
    return [
        snap
        for _, snap in sorted(latest.items())
        if (snap.as_of > 0 if snap.scope == "account" else any(a in fed for a in snap.accounts))
    ]


def nav_document(snap: Snapshot, now_ms: int) -> Doc:
    """The latest NAV of a scope (one that rests on data: :func:`with_data`), as read at
    ``now_ms``: its status is the reader's (:func:`as_read`), and a change of it is significant."""
    data = nav_data(snap, now_ms)
    return Doc(
        f"nav/{nav_doc_id(snap.scope_id)}",
        data,
        "nav",
        "changes",
        shared=True,
        content=content_of(data),
        sig=nav_sig(as_read(snap, now_ms)),
        amount=snap.nav,
    )


def risk_document(member: str, record: TradingRecord) -> Doc:
    """A trading record as the risk gate stores it (absent means ``active``: not written)."""
    venue, _, account = member.partition("/")
    venue, account = ("", "") if member == DESK else (unescape(venue), unescape(account))
    high_water = Decimal(record.high_water) if record.high_water else None
    data: dict[str, Any] = {
        "scope": "desk" if member == DESK else "account",
        "venue": venue,
        "account": account,
        "state": record.state,
        "reason": record.reason,
        "by": record.by,
        "since": record.at,
        "high_water": record.high_water,
        "high_water_float": None if high_water is None else as_float(high_water),
    }
    return Doc(
        f"risk/{risk_doc_id(member)}", data, "risk", "changes", shared=True, content=content_of(data), sig=record.state
    )


def history_bucket(now_ms: int, every_s: float) -> int:
    """The start (epoch ms) of the history interval ``now_ms`` falls in."""
    period = int(every_s * 1000)
    return now_ms - now_ms % period


def history_doc_id(scope_id: str, bucket_ms: int) -> str:
    """``<8 hex of a hash>_<bucket ms>_<scope>``: the hash spreads consecutive ids over the key
    range, so writes do not all land on one tablet (monotonic ids hotspot in Firestore)."""
    digest = hashlib.sha256(f"{scope_id}|{bucket_ms}".encode()).hexdigest()[:8]
    return safe_id(f"{digest}_{bucket_ms}_{nav_doc_id(scope_id)}")


def history_index_key(scope_id: str) -> str:
    """State key of the sorted set of a scope's history documents (id -> bucket ms)."""
    return f"firestore:history:{escape(scope_id)}"


def history_document(snap: Snapshot, bucket_ms: int, now_ms: int) -> Doc:
    """A history point of ``snap``, with the status a reader takes it for at ``now_ms``."""
    snap = as_read(snap, now_ms)
    doc_id = history_doc_id(snap.scope_id, bucket_ms)
    data = {
        "scope": snap.scope,
        "scope_id": snap.scope_id,
        "venue": snap.venue,
        "account": snap.account,
        "quote": snap.quote,
        "bucket_ms": bucket_ms,
        "nav": money(snap.nav),
        "nav_float": as_float(snap.nav),
        "status": snap.status,
        "as_of": snap.as_of,
        "computed_at": snap.computed_at,
        "missing": list(snap.missing),
        "stale_sources": list(snap.stale_sources),
    }
    return Doc(
        f"nav_history/{doc_id}",
        data,
        "history",
        "never",
        shared=True,
        content=content_of(data),
        index=(history_index_key(snap.scope_id), doc_id, bucket_ms),
    )


def history_delete(scope_id: str, doc_id: str) -> Doc:
    return Doc(
        f"nav_history/{doc_id}",
        None,
        "history_delete",
        "never",
        shared=True,
        content="",
        index=(history_index_key(scope_id), doc_id, -1),
    )


def moved(amount: Decimal | None, before: Decimal | None, pct: float) -> bool:
    """Whether ``amount`` differs from ``before`` by more than ``pct`` percent of it."""
    if amount is None or before is None:
        return amount is not before
    if before == 0:
        return amount != 0
    return abs(amount - before) * 100 > abs(before) * Decimal(str(pct))

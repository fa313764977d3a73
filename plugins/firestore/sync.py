"""The shared documents (NAV and trading records) as navstream's state holds them now: what the
leader offers every tick, and what ``navstream firestore preview`` prints."""

from __future__ import annotations

from collections.abc import Mapping

from navstream.plugins.nav.api import Snapshot
from navstream.plugins.risk.api import TradingRecord

from .documents import Doc, nav_document, risk_document, with_data


def shared_documents(
    latest: Mapping[str, Snapshot], records: Mapping[str, tuple[str, TradingRecord]], now_ms: int
) -> list[Doc]:
    """A document per NAV scope that rests on data (a scope with none is absent), with the
    status a reader takes it for at ``now_ms`` (a stored ``ok`` past its ``fresh_until`` is
    ``stale``), and per trading record Redis holds (a scope without one is ``active``, and absent)."""
    docs = [nav_document(snap, now_ms) for snap in with_data(latest)]
    docs += [risk_document(member, record) for member, (_, record) in sorted(records.items())]
    return docs

"""Venue, exchange and total NAV: the exact sum of their accounts, as bad as the worst of them.

Apart from valuing an account (:mod:`.valuation`) because adding up has rules of its own: a
sum that cannot be exact leaves an account out (listed, ``partial``), never rounds it in.
"""

from __future__ import annotations

from collections.abc import Sequence

from .money import MAX_DIGITS, ZERO, InexactError, exact_add, money
from .snapshot import Snapshot, worst


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def aggregate(scope: str, accounts: Sequence[Snapshot], quote: str, now_ms: int, venue: str = "") -> Snapshot:
    """Venue, exchange and total NAV: the exact sum of their accounts, as bad as the worst of
    them, fresh until the first of them is not (``fresh_until``: the earliest of theirs, 0 for
    no account). An account whose NAV cannot be added exactly is left out and listed as
    ``<venue>/<account>/*`` in ``missing`` (``partial``), never rounded in."""
    total = ZERO
    left_out: list[Snapshot] = []
    for a in accounts:
        try:
            total = exact_add(total, a.nav)
        except InexactError:
            left_out.append(a)
    status = worst(a.status for a in accounts) if accounts else "failed"
    reasons = [
        f"{a.venue}/{a.account} is {a.status}" + (f": {a.reasons[0]}" if a.reasons else "")
        for a in accounts
        if a.status != "ok"
    ]
    missing = [m for a in accounts for m in a.missing]
    if left_out:
        status = worst([status, "partial"])
        missing += [f"{a.venue}/{a.account}/*" for a in left_out]
        reasons += [
            f"{a.venue}/{a.account} ({money(a.nav)}) cannot be added in exactly within {MAX_DIGITS} "
            "significant digits: left out"
            for a in left_out
        ]
    if not accounts:
        reasons = ["no accounts"]
    return Snapshot(
        scope,
        total,
        quote,
        status,
        min((a.as_of for a in accounts), default=0),
        now_ms,
        venue=venue,
        missing=_unique(missing),
        stale_sources=_unique([s for a in accounts for s in a.stale_sources]),
        reasons=reasons,
        accounts=[f"{a.venue}/{a.account}" for a in accounts],
        fresh_until=min((a.fresh_until for a in accounts), default=0),
    )

"""The one rule every reader applies to a stored NAV (``P:state:nav:latest``).

A snapshot is stored with the status its evaluation found and ``fresh_until``: the first
moment (epoch ms) at which an input it rests on is past its age limit. Ticks re-evaluate every
scope, but a reader must not depend on a tick having run: from ``fresh_until`` on, a stored
``ok`` is read as ``stale``, whatever tick has not yet said so. A snapshot without
``fresh_until`` (0, or absent) cannot show it is fresh, so its ``ok`` is read as ``stale`` too.

This lives in the core, and works on plain values, so that readers which do not import the
``nav`` plugin (the status API behind ``/api/status``, ``/readyz`` and ``/metrics``) apply the
very rule that :func:`navstream.plugins.nav.valuation.as_read` applies for the plugin's own
readers (``navstream nav``, ``navstream status``, the risk gate, the Firestore sink).
"""

from __future__ import annotations

import time


def stale_as_read(status: str, fresh_until: int, now_ms: int) -> str | None:
    """Why a NAV stored with ``status`` and ``fresh_until`` must be read as ``stale`` at
    ``now_ms``; None when it is read as stored (any status but ``ok`` is kept: it is already
    not ``ok``, and a worse one stays worse).

    The reason names the moment, not an age, so it reads the same on every request (a sink that
    writes a document when its text changes does not rewrite it every tick).
    """
    if status != "ok" or now_ms < fresh_until:
        return None
    if fresh_until <= 0:
        return "stored without a freshness horizon (fresh_until); not re-evaluated since"
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(fresh_until // 1000)) + f".{fresh_until % 1000:03d}Z"
    return f"an input passed its age limit at {at} (fresh_until); not re-evaluated since"

"""Source kind ``ccxt``: balances, positions and prices of any exchange CCXT speaks to.

A venue becomes a config section (``[sources.okx-main] kind = "ccxt"``, ``exchange = "okx"``)
instead of a plugin. CCXT is an optional extra (``pip install 'navstream[ccxt]'``), imported
only when a ``ccxt`` source is configured. One job per module: ``settings`` (what the section
may say, checked at config time), ``routed`` (CCXT's requests through navstream's HTTP pool, its
numbers exact), ``convert`` (CCXT's unified structures as events), ``errors`` (CCXT's exceptions
as a secret-free reason) and ``source`` (one fetch). docs/sources.md describes the kind.
"""

from __future__ import annotations

from .settings import CcxtSettings
from .source import CcxtSource

__all__ = ["CcxtSettings", "CcxtSource"]

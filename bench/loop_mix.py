"""bench_loop's event mix: the events both sides read, generated once, valid per docs/contract.md,
and the nav section a desk would set for them."""

from __future__ import annotations

import random
import time
from typing import Any

SPAN_MS = 60_000  # generated timestamps cover the minute before the XADD


# --- the event mix ----------------------------------------------------------------------------

# fmt: off
BASES = [
    "BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "TRX", "DOT", "MATIC", "LTC", "BCH", "AVAX",
    "LINK", "XLM", "ATOM", "UNI", "ETC", "FIL", "APT", "ARB", "OP", "NEAR", "ICP", "HBAR", "VET",
    "INJ", "SUI", "SEI", "TIA", "AAVE", "MKR", "SNX", "CRV", "LDO", "RUNE", "ALGO", "EGLD", "FTM",
    "SAND", "MANA", "AXS", "GRT", "IMX", "STX", "KAS", "PEPE", "WIF", "JUP", "PYTH",
]
# fmt: on
PRICE_SOURCES = ["binance-spot", "coingecko"]
VENUES = ["binance", "okx", "bybit", "kraken", "deribit"]
ACCOUNTS = ["main", "margin", "sub1"]
WALLET_ASSETS = ["USDT", "USDC", "USD"] + BASES[:17]  # 20 assets
SYMBOLS = [f"{b}-PERP" for b in BASES[:20]]
VENUE_SOURCES = ["balances", "positions"]
#: The nav plugin's section, as a desk would set it for this mix: every account listed, stable
#: coins pegged, every base routed through its USDT pair, and each changed NAV evaluated at most
#: every 100 ms (docs/nav.md, "Conflation"): at this rate nearly every batch moves nearly every
#: price, so without it every scope is valued, stored and published in every batch.
#: ``bench_loop.py --nav-eval-ms`` overrides the interval (0: every batch).
NAV_CONFIG = {
    "quote": "USD",
    "eval_interval_ms": 100,
    "pegs": {"USDT": "1", "USDC": "1"},
    "routes": {b: f"{b}/USDT" for b in BASES},
    "accounts": [
        {"venue": v, "account": a, "kind": "futures" if a == "margin" else "spot"} for v in VENUES for a in ACCOUNTS
    ],
}


def _dec(value: float, places: int) -> str:
    return f"{value:.{places}f}"


def generate_events(n: int, seed: int = 20240601) -> list[dict[str, str | int]]:
    """``n`` valid events per docs/contract.md; ``ts`` holds an offset (ms) from the XADD time.

    Mix: 70% price (50 bases x 2 sources), 20% balance (5 venues x 3 accounts x 20 assets),
    5% position, 5% source_status (about 2% of them failures, so alerts fire too).
    """
    rng = random.Random(seed)
    ref_price = {b: 10 ** rng.uniform(-5, 4.8) for b in BASES}
    out: list[dict[str, str | int]] = []
    for i in range(n):
        offset = -SPAN_MS + (i * SPAN_MS) // n + rng.randint(-50, 0)
        roll = rng.random()
        if roll < 0.70:
            base = rng.choice(BASES)
            price = ref_price[base] * (1 + rng.gauss(0, 0.001))
            out.append(
                {
                    "type": "price",
                    "base": base,
                    "quote": "USDT",
                    "price": f"{price:.10g}",
                    "source": rng.choice(PRICE_SOURCES),
                    "ts": offset,
                }
            )
        elif roll < 0.90:
            event: dict[str, str | int] = {
                "type": "balance",
                "venue": rng.choice(VENUES),
                "account": rng.choice(ACCOUNTS),
                "asset": rng.choice(WALLET_ASSETS),
                "balance": _dec(rng.uniform(0, 250_000), 8),
                "ts": offset,
            }
            if rng.random() < 0.3:
                event["unrealized_pnl"] = _dec(rng.gauss(0, 500), 8)
            out.append(event)
        elif roll < 0.95:
            symbol = rng.choice(SYMBOLS)
            entry = ref_price[symbol.split("-")[0]]
            out.append(
                {
                    "type": "position",
                    "venue": rng.choice(VENUES[:3]),
                    "account": rng.choice(ACCOUNTS),
                    "symbol": symbol,
                    "qty": _dec(rng.uniform(-50, 50), 4),
                    "entry_price": f"{entry:.10g}",
                    "mark_price": f"{entry * (1 + rng.gauss(0, 0.01)):.10g}",
                    "unrealized_pnl": _dec(rng.gauss(0, 1000), 6),
                    "ts": offset,
                }
            )
        else:
            ok = rng.random() >= 0.02
            event = {
                "type": "source_status",
                "venue": rng.choice(VENUES),
                "source": rng.choice(VENUE_SOURCES),
                "ok": "true" if ok else "false",
                "account": rng.choice(ACCOUNTS),
                "ts": offset,
            }
            if not ok:
                event["error"] = "HTTP 502 from venue API"
            out.append(event)
    return out


def fill_stream(client: Any, stream: str, events: list[dict[str, str | int]], chunk: int = 2000) -> None:
    """XADD every event into ``stream``, pipelined, with ``ts`` made absolute (now + offset)."""
    now = time.time_ns() // 1_000_000
    for start in range(0, len(events), chunk):
        pipe = client.pipeline(transaction=False)
        for event in events[start : start + chunk]:
            fields = dict(event)
            fields["ts"] = str(now + int(event["ts"]))
            pipe.xadd(stream, fields)
        pipe.execute()

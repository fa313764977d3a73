"""The demo's settings: :data:`DEMO_CONFIG`, decoded as a config file is, with an audit log of its own."""

from __future__ import annotations

from typing import Any

import msgspec

from navstream.config import CORE_SECTIONS, Settings, load_settings

#: The demo's settings. config/demo.toml holds the same values, documented, for
#: ``navstream run --config config/demo.toml``; tests/demo/test_demo.py keeps the two equal. They are
#: embedded here because an installed (non-editable) package does not ship config/.
DEMO_CONFIG = """
[redis]
url = "redis://127.0.0.1:6379/0"
prefix = "navstream-demo"
group = "navstream"

[consumer]
batch_size = 500
block_ms = 1000
tick_ms = 1000
claim_idle_ms = 30000
max_deliveries = 5
max_future_ms = 5000

[source_monitor]
max_silence_s = 60

[nav]
quote = "USD"
max_age_s = 120
publish_every_s = 60
jump_alert_pct = 10
max_price_divergence_pct = 2
alert_every_s = 300

[nav.pegs]
USDT = "1"

[nav.routes]
BTC = "BTC/USDT"
ETH = "ETH/USDT"
ARB = "ARB/USDT"

[[nav.accounts]]
venue = "binance"
account = "usdm-main"
kind = "futures"
label = "Binance USD-M"

[[nav.accounts]]
venue = "okx"
account = "spot-main"
kind = "spot"

[[nav.accounts]]
venue = "bank"
account = "treasury"
kind = "bank"
label = "EUR and USD cash"

[[nav.accounts]]
venue = "cold-wallet"
account = "reserve"
kind = "reserve"

[risk]
max_nav_age_s = 60
max_order_notional = "2000000"
max_order_pct_nav = 25
max_gross_exposure_x = 3
reduce_drawdown_pct = 5
halt_drawdown_pct = 10

[sources.coingecko]
vs_currency = "usd"

[sources.coingecko.ids]
BTC = "bitcoin"
ETH = "ethereum"
USDT = "tether"
EUR = "euro-coin"
"""


def demo_settings(redis_url: str | None = None, prefix: str | None = None) -> Settings:
    """:data:`DEMO_CONFIG` decoded exactly like a config file, the environment ignored (a
    stray ``NAVSTREAM_PREFIX`` must not point the demo at a desk's keys)."""
    raw: dict[str, Any] = msgspec.toml.decode(DEMO_CONFIG)
    core = {name: dict(raw.pop(name, {})) for name in CORE_SECTIONS}
    core["redis"].update({k: v for k, v in (("url", redis_url), ("prefix", prefix)) if v is not None})
    settings = load_settings(env={}, overrides=core)
    return msgspec.structs.replace(settings, extra=raw, source="navstream demo (DEMO_CONFIG)")


def with_audit_dir(settings: Settings, path: str) -> Settings:
    """``settings`` with the risk gate's audit log in ``path``: a demo's log is nobody's record."""
    extra = {**settings.extra, "risk": {**settings.extra.get("risk", {}), "audit_dir": path}}
    return msgspec.structs.replace(settings, extra=extra)

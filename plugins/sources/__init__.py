"""Built-in plugin ``sources``: the source kinds ``navstream ingest`` ships with.

They register through ``navstream_sources`` exactly as a venue plugin's would, so each is also
the worked example of one: ``coingecko`` (many prices per request), ``binance-spot`` (every pair
in one request), ``binance-usdm-account`` (a signed account snapshot) and ``ccxt`` (any exchange
CCXT speaks to, from a config section; CCXT is an optional extra). See docs/sources.md.
"""

from __future__ import annotations

from navstream import RegisterSource, hookimpl

from .binance_spot import BinanceSpotSettings, BinanceSpotSource
from .binance_usdm import BinanceUsdmAccountSettings, BinanceUsdmAccountSource
from .ccxt import CcxtSettings, CcxtSource
from .coingecko import CoinGeckoSettings, CoinGeckoSource

__all__ = [
    "BinanceSpotSettings",
    "BinanceSpotSource",
    "BinanceUsdmAccountSettings",
    "BinanceUsdmAccountSource",
    "CcxtSettings",
    "CcxtSource",
    "CoinGeckoSettings",
    "CoinGeckoSource",
]


@hookimpl
def navstream_sources(register: RegisterSource) -> None:
    register("coingecko", CoinGeckoSettings, CoinGeckoSource)
    register("binance-spot", BinanceSpotSettings, BinanceSpotSource)
    register("binance-usdm-account", BinanceUsdmAccountSettings, BinanceUsdmAccountSource)
    register("ccxt", CcxtSettings, CcxtSource)

"""Built-in plugin ``sources``: the source kinds ``navstream ingest`` ships with.

They register through ``navstream_sources`` exactly as a venue plugin's would, so each is also
the worked example of one: ``coingecko`` (many prices per request), ``binance-spot`` (every pair
in one request) and ``binance-usdm-account`` (a signed account snapshot). See docs/sources.md.
"""

from __future__ import annotations

from navstream import RegisterSource, hookimpl

from .binance_spot import BinanceSpotSettings, BinanceSpotSource
from .binance_usdm import BinanceUsdmAccountSettings, BinanceUsdmAccountSource
from .coingecko import CoinGeckoSettings, CoinGeckoSource

__all__ = [
    "BinanceSpotSettings",
    "BinanceSpotSource",
    "BinanceUsdmAccountSettings",
    "BinanceUsdmAccountSource",
    "CoinGeckoSettings",
    "CoinGeckoSource",
]


@hookimpl
def navstream_sources(register: RegisterSource) -> None:
    register("coingecko", CoinGeckoSettings, CoinGeckoSource)
    register("binance-spot", BinanceSpotSettings, BinanceSpotSource)
    register("binance-usdm-account", BinanceUsdmAccountSettings, BinanceUsdmAccountSource)

"""The ``ccxt`` source kind's settings (``[sources.<name>] kind = "ccxt"``), checked in full when
the config is read (``navstream config check`` too), so a typo fails there and not at 3 a.m.

Checking the exchange name needs CCXT itself: it is imported here, and only here and in the
source, lazily (about a second, 100 MB): a config without a ``ccxt`` source never pays it, and
one without the extra installed gets one line saying what to install.
"""

from __future__ import annotations

import difflib
import importlib
import ipaddress
import re
from functools import cache
from types import ModuleType
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from navstream import SourceSettings

from ..common import valid_base_url

#: What a ``ccxt`` source can be asked to publish.
Fetch = Literal["balances", "positions", "prices"]
NEEDS_ACCOUNT = ("balances", "positions")
#: CCXT's unified symbols: ``BTC/USDT`` (spot), ``BTC/USDT:USDT`` (a linear swap), with an
#: expiry or strike after a dash (``BTC/USD:BTC-251226``).
_SYMBOL = re.compile(r"^[^\s/:]{1,64}/[^\s/:]{1,64}(:[^\s/:]{1,64})?$")
_ASSET = re.compile(r"^[^\s/]{1,64}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MISSING_EXTRA = "the ccxt source kind needs the ccxt extra: pip install 'navstream[ccxt]'"
#: The credentials navstream can hand CCXT, by CCXT's name, with the setting naming each one's variable.
CREDENTIALS = {"apiKey": "api_key_env", "secret": "secret_env", "password": "password_env"}


@cache
def ccxt_module() -> ModuleType:
    """``ccxt.async_support``, imported on first use; ValueError (a config error) without the extra."""
    try:
        return importlib.import_module("ccxt.async_support")
    except ImportError:
        raise ValueError(MISSING_EXTRA) from None


def exchange_class(exchange: str) -> type[Any]:
    """CCXT's class for ``exchange``, or ValueError naming the close matches."""
    module = ccxt_module()
    if exchange not in module.exchanges:
        close = difflib.get_close_matches(exchange.lower(), module.exchanges, n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"`exchange`: {exchange!r} is not a CCXT exchange id ({len(module.exchanges)} known, e.g. "
            f"'okx', 'bybit', 'kraken'){hint}"
        )
    cls: type[Any] = getattr(module, exchange)
    return cls


def ccxt_budget(rate_limit: Any) -> int:
    """CCXT cost units a minute its own limiter allows (60,000 / ``rateLimit`` ms), rounded down:
    some ``rateLimit`` are fractional (kucoin 7.5), and truncating them first raised the budget."""
    return int(60_000 // max(1.0, float(rate_limit)))


def code_ok(code: str) -> bool:
    """A venue or asset name: 1 to 64 printable characters, no spaces or '/'."""
    return bool(_ASSET.match(code)) and code.isprintable()


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CcxtSettings(SourceSettings, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[sources.<name>]`` of kind ``ccxt`` (frozen, and unknown keys rejected, as every
    ``SourceSettings``). docs/sources.md has the table."""

    #: A CCXT exchange id (``okx``, ``bybit``, ``kraken``, ...).
    exchange: str
    #: The venue name events carry; empty: ``exchange``.
    venue: str = ""
    #: The navstream account balances and positions belong to (required when fetching them).
    account: str = ""
    fetch: list[Fetch] = msgspec.field(default_factory=lambda: ["balances", "positions", "prices"])
    #: CCXT unified symbols whose prices are published (required when fetching prices).
    symbols: list[str] = []
    #: Only these positions; empty: every open position.
    position_symbols: list[str] = []
    #: CCXT's ``defaultType``: the wallet balances are read from, and which markets are loaded.
    market_type: Literal["spot", "margin", "swap", "future"] = "spot"
    #: Names of the environment variables holding the credentials.
    api_key_env: str = ""
    secret_env: str = ""
    password_env: str = ""
    #: Venue or CCXT code -> the desk's code, after CCXT's own substitution (XBT -> BTC).
    assets: dict[str, str] = {}
    #: Replaces scheme and host of every API URL (a proxy, a testnet, a local stub).
    base_url: str = ""
    #: CCXT cost units a minute for the host; 0: 60000 / the exchange's ``rateLimit`` (the most allowed).
    weight_per_minute: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0

    def __post_init__(self) -> None:
        cls = exchange_class(self.exchange)
        if not self.fetch:
            raise ValueError('`fetch` must list at least one of "balances", "positions", "prices"')
        if len(set(self.fetch)) != len(self.fetch):
            raise ValueError(f"`fetch` lists a kind twice: {self.fetch}")
        if self.venue and not code_ok(self.venue):
            raise ValueError(f"`venue`: {self.venue!r} is not a venue name (1 to 64 characters, no spaces or '/')")
        private = [str(f) for f in self.fetch if f in NEEDS_ACCOUNT]
        if private and (not self.account.strip() or len(self.account) > 256 or not self.account.isprintable()):
            raise ValueError(f"`account` must name the navstream account the {' and '.join(private)} belong to")
        if "prices" in self.fetch and not self.symbols:
            raise ValueError('`symbols` must list the CCXT symbols whose prices are published (["BTC/USDT"])')
        for setting in ("symbols", "position_symbols"):
            values: list[str] = getattr(self, setting)
            for symbol in values:
                if not _SYMBOL.match(symbol):
                    raise ValueError(
                        f"`{setting}`: {symbol!r} is not a CCXT unified symbol (BASE/QUOTE, or BASE/QUOTE:SETTLE)"
                    )
            if len(set(values)) != len(values):
                raise ValueError(f"`{setting}` lists a symbol twice")
        for code, desk in self.assets.items():
            if not code_ok(code) or not code_ok(desk):
                raise ValueError(f"`assets`: {code!r} = {desk!r} is not a pair of asset codes")
        self._check_credentials(cls, private)
        self._check_url()
        limit = ccxt_budget(cls().rateLimit)
        if self.weight_per_minute > limit:
            raise ValueError(
                f"`weight_per_minute` = {self.weight_per_minute} is above what CCXT allows {self.exchange} "
                f"({limit} cost units a minute); it may only lower it"
            )

    def _check_credentials(self, cls: type[Any], private: list[str]) -> None:
        for setting in CREDENTIALS.values():
            name = getattr(self, setting)
            if name and not _ENV.match(name):
                raise ValueError(f"`{setting}`: {name!r} is not an environment variable name")
        if not private:
            return
        required = {k for k, v in cls().requiredCredentials.items() if v}
        unsupported = sorted(required - set(CREDENTIALS))
        if unsupported:
            raise ValueError(
                f"{self.exchange} needs credentials this source kind cannot pass ({', '.join(unsupported)}); "
                "use `navstream new-plugin` for it"
            )
        for credential in sorted(required):
            setting = CREDENTIALS[credential]
            if not getattr(self, setting):
                raise ValueError(
                    f"`{setting}` must name the environment variable holding the {credential} "
                    f"({self.exchange} needs it for {' and '.join(private)})"
                )

    def _check_url(self) -> None:
        if not self.base_url:
            return
        url = valid_base_url(self.base_url)
        parts = urlsplit(url)
        if "@" in parts.netloc:
            raise ValueError(
                f"`base_url` must not carry a user or password (they would show wherever the host is named), "
                f"got {parts.scheme}://...@{parts.netloc.rpartition('@')[2]}"
            )
        if parts.path:
            raise ValueError(f"`base_url` must be scheme://host[:port] without a path, got {self.base_url!r}")
        if parts.scheme == "http" and not loopback(parts.hostname or ""):
            raise ValueError(
                f"`base_url` {self.base_url!r}: http:// only to this machine (127.0.0.1, ::1, localhost); "
                "credentials would travel in clear: use https://"
            )

    @property
    def venue_name(self) -> str:
        return self.venue or self.exchange

    @property
    def private(self) -> bool:
        return any(f in NEEDS_ACCOUNT for f in self.fetch)

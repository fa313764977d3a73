"""Source kind ``coingecko``: prices of many assets from CoinGecko's ``/simple/price``.

The old system asked one price per request and tripped the rate limit; here up to
``batch_size`` ids share one request (250 assets: 3 requests), and every request first takes
its weight from the host's budget (``calls_per_minute``), shared by every CoinGecko source of
the process. ``include_last_updated_at=true`` makes ``ts`` the moment CoinGecko observed the
price, not when we asked, so the NAV judges its real age.

CoinGecko answers prices as JSON numbers: they are decoded straight to ``Decimal``, never
through float, and one outside the wire's bounds (``navstream.contract.numbers``) is a problem.
An id missing from the answer, or without a price or time, is a *problem*: the asset is not
published (never as 0) and the rest of the round is. A request that fails fails the whole fetch:
the batches go one after another, and the first failure stops the round before it spends more of
a budget the venue just refused, so a partial round would mostly mean "the first batches, then a
429". ``source_status ok=false`` says it plainly, and the prices already published age on their
own until the next round.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import httpx
import msgspec

from navstream import Fetched, Price, SourceContext, SourceError, SourceEvent, SourceSettings
from navstream import response_excerpt as excerpt

from .common import BaseSource, deadline, decode_json, epoch_ms, exact, quoted, skew_problem, skewed, valid_base_url

PUBLIC_URL = "https://api.coingecko.com/api/v3"
PRO_URL = "https://pro-api.coingecko.com/api/v3"
#: Where each plan's key goes (CoinGecko rejects a key sent to the other plan's host).
KEY_HEADER = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}
#: Calls a minute when ``calls_per_minute`` is not set: the demo plan's documented floor (the
#: keyless public API varies with traffic; lower it if 429s come), and the smallest paid plan.
DEFAULT_CALLS = {"public": 30, "demo": 30, "pro": 500}
_ID = re.compile(r"^[^\s,]{1,200}$")
_ASSET = re.compile(r"^[^\s/]{1,64}$")
_CURRENCY = re.compile(r"^[A-Za-z0-9]{1,16}$")
#: CoinGecko's own codes for a key it does not accept (missing, wrong plan's host).
KEY_ERRORS = {10002, 10010, 10011}


# The options are SourceSettings' own, restated for type checkers.
class CoinGeckoSettings(SourceSettings, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[sources.<name>]`` of kind ``coingecko`` (frozen, and unknown keys rejected, as
    every ``SourceSettings``)."""

    #: Empty: the plan's API root (``pro``: pro-api.coingecko.com, else api.coingecko.com).
    base_url: str = ""
    #: ``public`` (no key), ``demo`` or ``pro``: which header carries the key, which host.
    #: Empty: ``demo`` when ``api_key_env`` is set, else ``public``.
    plan: Literal["", "public", "demo", "pro"] = ""
    #: Environment variable holding the key (required for ``demo`` and ``pro``).
    api_key_env: str = ""
    #: The host's budget; None: 30 (public, demo) or 500 (pro).
    calls_per_minute: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    #: Ids per request.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    #: CoinGecko's ``vs_currencies``; the events' ``quote`` is its upper case.
    vs_currency: str = "usd"
    #: Asset -> CoinGecko id (``BTC = "bitcoin"``).
    ids: dict[str, str] = {}
    #: A quote fetched less than this ago is re-published from the cache instead of asked
    #: again (with its original ``ts``); 0: always ask.
    cache_ttl_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 0.0

    def __post_init__(self) -> None:
        if self.base_url:
            valid_base_url(self.base_url)
        if self.plan == "public" and self.api_key_env:
            raise ValueError(
                '`api_key_env` is set but `plan` is "public": set plan = "demo" or "pro" '
                "(the key's header depends on it)"
            )
        if self.plan in ("demo", "pro") and not self.api_key_env:
            raise ValueError(f'`plan` = "{self.plan}" needs `api_key_env`, the environment variable holding the key')
        host = self.root.split("://", 1)[-1].split("/", 1)[0]
        if self.tier == "pro" and host == "api.coingecko.com":
            raise ValueError('a "pro" key is only accepted on pro-api.coingecko.com: fix `base_url`')
        if self.tier != "pro" and host == "pro-api.coingecko.com":
            raise ValueError(f'pro-api.coingecko.com needs plan = "pro" (plan is "{self.tier}")')
        if not _CURRENCY.match(self.vs_currency):
            raise ValueError(f'`vs_currency` must be a currency code like "usd", got {self.vs_currency!r}')
        if not self.ids:
            raise ValueError(
                '`ids` must map at least one asset to its CoinGecko id ([sources.<name>.ids] BTC = "bitcoin")'
            )
        for asset, cg_id in self.ids.items():
            if not _ASSET.match(asset):
                raise ValueError(f"`ids`: {asset!r} is not an asset name")
            if not _ID.match(cg_id):
                raise ValueError(f"`ids.{asset}`: {cg_id!r} is not a CoinGecko id (no spaces or commas)")

    @property
    def tier(self) -> str:
        """The plan in force: ``plan``, or what ``api_key_env`` implies."""
        return self.plan or ("demo" if self.api_key_env else "public")

    @property
    def root(self) -> str:
        """The API root: ``base_url``, or the plan's."""
        return valid_base_url(self.base_url) if self.base_url else (PRO_URL if self.tier == "pro" else PUBLIC_URL)


class CoinGeckoSource(BaseSource):
    """Built once at startup: a missing key fails there, naming its variable."""

    def __init__(self, name: str, settings: CoinGeckoSettings, ctx: SourceContext) -> None:
        super().__init__(name, settings, ctx, venue="coingecko")
        self.cfg = settings
        self.url = settings.root + "/simple/price"
        self.headers = {"Accept": "application/json"}
        if settings.tier != "public":
            self.headers[KEY_HEADER[settings.tier]] = ctx.secret(name, "api_key_env", settings.api_key_env)
        ctx.http.limit(self.url, settings.calls_per_minute or DEFAULT_CALLS[settings.tier])
        self.vs = settings.vs_currency.lower()
        self.quote = settings.vs_currency.upper()
        #: id -> its assets (two assets may share an id: one question, two answers).
        self.assets_of: dict[str, list[str]] = {}
        for asset, cg_id in settings.ids.items():
            self.assets_of.setdefault(cg_id, []).append(asset)

    async def fetch(self) -> Fetched:
        until = deadline(self.ctx, self.settings)
        events: list[SourceEvent] = []
        problems: list[str] = []
        asked = self._uncached(events)
        fresh: list[Price] = []
        for start in range(0, len(asked), self.cfg.batch_size):
            batch = asked[start : start + self.cfg.batch_size]
            what = f"coingecko /simple/price ({len(batch)} ids)"
            response = await self.ctx.http.request(
                "GET",
                self.url,
                deadline=until,
                weight=1,
                headers=self.headers,
                what=what,
                params={
                    "ids": ",".join(batch),
                    "vs_currencies": self.vs,
                    "include_last_updated_at": "true",
                    "precision": "full",
                },
            )
            arrival = self.ctx.clock.now_ms()
            self._check(response, what)
            body = decode_json(response, what)
            if not isinstance(body, dict):
                raise SourceError(f"{what}: expected a JSON object keyed by id, got {type(body).__name__}")
            for cg_id in batch:
                fresh.extend(self._read(cg_id, body.get(cg_id), arrival, problems))
        if self.cfg.cache_ttl_s > 0:
            self.ctx.cache.put(fresh)
        events.extend(fresh)
        return Fetched(events, problems)

    def _uncached(self, events: list[SourceEvent]) -> list[str]:
        """The ids to ask; the assets of the others are re-published from the cache into
        ``events`` (an id is asked again if any of its assets has no fresh quote)."""
        ttl = self.cfg.cache_ttl_s
        if ttl <= 0:
            return list(self.assets_of)
        asked = []
        for cg_id, assets in self.assets_of.items():
            held = [self.ctx.cache.get(self.name, asset, self.quote, ttl) for asset in assets]
            if all(p is not None for p in held):
                events.extend(p for p in held if p is not None)
            else:
                asked.append(cg_id)
        return asked

    def _read(self, cg_id: str, entry: Any, arrival_ms: int, problems: list[str]) -> list[Price]:
        """The prices of ``cg_id``'s assets, or a problem and none (never a made-up value)."""
        assets = self.assets_of[cg_id]
        label = f"{'/'.join(assets)} (id {cg_id!r})"
        if entry is None:
            problems.append(f"{label}: not in CoinGecko's answer (unknown or delisted id?)")
            return []
        if not isinstance(entry, dict):
            problems.append(f"{label}: unreadable entry in CoinGecko's answer")
            return []
        price = exact(entry.get(self.vs))
        if price is None or price <= 0:
            problems.append(
                f"{label}: no usable {self.vs} price in CoinGecko's answer (got {quoted(entry.get(self.vs))})"
            )
            return []
        updated = epoch_ms(entry.get("last_updated_at"))
        if updated is None:
            problems.append(f"{label}: no last_updated_at in CoinGecko's answer, so no observation time")
            return []
        ts = updated * 1000
        if skewed(ts, arrival_ms):
            problems.append(f"{label}: " + skew_problem("CoinGecko"))
            ts = arrival_ms
        try:
            return [Price(ts=ts, base=asset, quote=self.quote, price=price, source=self.name) for asset in assets]
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
            return []

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        """A SourceError for an error status, saying so when the key is what CoinGecko refuses
        (its body: ``{"status": {"error_code": 10002, "error_message": "..."}}``)."""
        if response.is_success:
            return
        try:
            status = msgspec.json.decode(response.content).get("status")
            code = status.get("error_code") if isinstance(status, dict) else None
        except (msgspec.DecodeError, AttributeError):
            code = None
        hint = (
            " (API key rejected: check `plan`, `base_url` and the key)"
            if response.status_code in (401, 403) or code in KEY_ERRORS
            else ""
        )
        raise SourceError(f"HTTP {response.status_code} on {what}: {excerpt(response)}{hint}")

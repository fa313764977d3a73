"""``procplugins.fake_source``: a source kind for the ingest tests, loaded by dotted path
(``[plugins] modules = ["procplugins.fake_source"]``) exactly like an entry-point plugin.

Kind ``fake-prices``: each fetch publishes ``prices`` (asset -> decimal string, quoted in USD)
stamped with the clock, reports ``missing`` assets as problems, and, per ``behaviour``, fails
(``"fail"``), hangs past its timeout (``"hang"``), or raises a bug (``"bug"``). With
``token_env`` set, it needs that credential at startup and quotes it in no message.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from navstream import Price, hookimpl
from navstream.sources import Fetched, SourceContext, SourceError, SourceSettings


class FakeSettings(SourceSettings, kw_only=True, forbid_unknown_fields=True, frozen=True):
    prices: dict[str, str] = {}
    missing: list[str] = []
    behaviour: str = "ok"
    token_env: str = ""
    venue: str = "fakex"


class FakeSource:
    def __init__(self, name: str, settings: FakeSettings, ctx: SourceContext) -> None:
        self.name = name
        self.venue = settings.venue
        self.account: str | None = None
        self.settings = settings
        self.ctx = ctx
        self.token = ctx.secret(name, "token_env", settings.token_env) if settings.token_env else ""
        self.fetches = 0
        self.closed = False

    async def fetch(self) -> Fetched:
        self.fetches += 1
        behaviour = self.settings.behaviour
        if behaviour == "fail":
            raise SourceError(f"HTTP 503 on GET /prices?asset=BTC&signature={'ab' * 8}: upstream down")
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour == "bug":
            raise ValueError("unexpected payload shape")
        now = self.ctx.clock.now_ms()
        events = [
            Price(ts=now, base=asset, quote="USD", price=Decimal(value), source=self.name)
            for asset, value in self.settings.prices.items()
        ]
        return Fetched(events, [f"{asset} missing from the answer" for asset in self.settings.missing])

    async def aclose(self) -> None:
        self.closed = True


@hookimpl
def navstream_sources(register) -> None:  # type: ignore[no-untyped-def]
    register("fake-prices", FakeSettings, FakeSource)

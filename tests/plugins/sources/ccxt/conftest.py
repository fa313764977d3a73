"""The shared rig of the ``ccxt`` source kind's tests: the real CCXT classes against a local stub.

Nothing here mocks CCXT: each test builds a ``ccxt`` source through the registered kind (the
``sources`` plugin's entry point included) with ``base_url`` pointing every API URL of the
exchange at :class:`support.httpstub.HttpStub`, which answers recorded-shape payloads from
``payloads/<exchange>/<name>.json`` (raw text, so a number in them reaches CCXT exactly as
written). Fixtures:

- ``ccxt_secrets``: variable name -> fake credential (the rig's environment), to grep for.
- ``stub``: a started :class:`HttpStub` (``stub.url``, ``stub.add``/``always`` per route, a
  route may carry a query subset, ``stub.to(route)`` for what was asked).
- ``payloads``: :class:`Payloads` (``payloads.canned("okx", "account-balance")`` a ``Canned``
  with the file's raw text; ``.text(...)``, ``.json(...)``).
- ``ccxt_rig``: :class:`CcxtRig`, a pool on a hand-moved monotonic clock (``rig.mono``: bans
  and ``Retry-After`` last seconds to minutes), a ``ManualClock`` at ``START_MS`` (the events'
  arrival time), and a ``SourceContext`` whose environment is :data:`ENV`.
  ``rig.table("okx", fetch=[...], ...)`` is a valid settings table for that exchange pointed at
  the stub, with the exchange's credential variables; ``rig.build(table)`` builds the source
  through the registered kind (closed after the test); ``await rig.fetch(source)`` runs one fetch.
- ``ingest_once``: ``await ingest_once({"okx-main": table, ...})`` builds an ``Ingest`` with
  those ``[sources.*]`` sections on ``backend`` (fakeredis, then a real Redis), runs every
  source once, and returns an :class:`IngestRun` with each source's ok, every event decoded
  from ``P:events`` in order and every ``P:alerts`` entry. The ingest process runs on the real
  clock (payload times are in the past, so they stand as ``ts``).

Credentials are distinctive fake strings (:data:`SECRETS`, the ``ccxt_secrets`` fixture): a test
greps everything it captured (events, statuses, problems, log records, exception texts) for them.
Test modules take everything through fixtures and never import this module (pytest loads several
``conftest`` modules under one name).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import START_MS, Backend
from support.httpstub import Canned, HttpStub

from navstream.app import ManualClock
from navstream.config import load_settings
from navstream.contract.events import decode_event
from navstream.ingest.httppool import HttpPool
from navstream.ingest.pricecache import PriceCache
from navstream.ingest.runner import Ingest
from navstream.plugin.manager import build_plugin_manager
from navstream.sources import Fetched, Source, SourceContext, SourceKind

KINDS: dict[str, SourceKind] = build_plugin_manager(env={}).source_kinds
PAYLOADS = Path(__file__).parent / "payloads"

#: Fake credentials, long and distinctive so that a grep for them cannot match by chance. Kraken's
#: secret must be valid base64 (CCXT decodes it to sign).
SECRETS = {
    "OKX_KEY": "okxkey-5f1d2c7a-NAVSTREAM-TEST-0e3b",
    "OKX_SECRET": "OKXSECRET9A7C3E1F5B2D4C6E8A0F1B3D",
    "OKX_PASSPHRASE": "okx-passphrase-Qw7!zX2#",
    "BYBIT_KEY": "bybitkeyNAVSTREAMtest7Hq2",
    "BYBIT_SECRET": "bybitsecretNAVSTREAMtestZk9Lm4Pq8Rt",
    "KRAKEN_KEY": "krakenkeyNAVSTREAMtest+Vb6Nc3Xs1/Ua",
    "KRAKEN_SECRET": "a3Jha2VuLXNlY3JldC1uYXZzdHJlYW0tdGVzdC1vbmx5LTAxMjM0NTY3ODk=",
}
ENV = dict(SECRETS)
#: The credential settings of each exchange's test tables.
CREDENTIALS: dict[str, dict[str, str]] = {
    "okx": {"api_key_env": "OKX_KEY", "secret_env": "OKX_SECRET", "password_env": "OKX_PASSPHRASE"},
    "bybit": {"api_key_env": "BYBIT_KEY", "secret_env": "BYBIT_SECRET"},
    "kraken": {"api_key_env": "KRAKEN_KEY", "secret_env": "KRAKEN_SECRET"},
}


class Mono:
    """The pool's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Payloads:
    """The recorded-shape answers under payloads/<exchange>/."""

    def text(self, exchange: str, name: str) -> str:
        return (PAYLOADS / exchange / f"{name}.json").read_text()

    def json(self, exchange: str, name: str) -> Any:
        """Parsed, with every non-integer number as its text (as the source reads it)."""
        return json.loads(self.text(exchange, name), parse_float=str)

    def canned(self, exchange: str, name: str, status: int = 200, **kw: Any) -> Canned:
        """The file's raw text as an answer (``headers=``, ``delay_s=`` passed on)."""
        return Canned(status, body=self.text(exchange, name), **kw)


@dataclass
class CcxtRig:
    stub: HttpStub
    http: HttpPool
    mono: Mono
    clock: ManualClock
    ctx: SourceContext
    built: list[Source] = field(default_factory=list)

    def table(self, exchange: str, **settings: Any) -> dict[str, Any]:
        """A ``[sources.*]`` table of kind ``ccxt`` for ``exchange`` at the stub: account
        ``main``, the exchange's credential variables, ``settings`` on top."""
        return {
            "kind": "ccxt",
            "exchange": exchange,
            "account": "main",
            "base_url": self.stub.url,
            **CREDENTIALS.get(exchange, {}),
            **settings,
        }

    def build(self, table: dict[str, Any], name: str = "venue") -> Source:
        """The source, built as ``navstream ingest`` builds it (settings decoded, then the factory)."""
        spec = KINDS["ccxt"]
        settings = msgspec.convert({"kind": "ccxt", **table}, spec.settings)
        source = spec.factory(name, settings, self.ctx)
        self.built.append(source)
        return source

    async def fetch(self, source: Source) -> Fetched:
        return await source.fetch()


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


@pytest.fixture
def ccxt_secrets() -> dict[str, str]:
    """Variable name -> fake credential (:data:`SECRETS`), for a test to grep what it captured."""
    return dict(SECRETS)


@pytest.fixture
def payloads() -> Payloads:
    return Payloads()


@pytest.fixture
async def ccxt_rig(stub: HttpStub) -> AsyncIterator[CcxtRig]:
    mono = Mono()
    http = HttpPool(timeout_s=5.0, clock=mono)
    clock = ManualClock(START_MS)
    rig = CcxtRig(stub, http, mono, clock, SourceContext(http, PriceCache(clock=mono), clock, env=ENV))
    yield rig
    for source in rig.built:
        await source.aclose()
    await http.aclose()


@dataclass
class IngestRun:
    """One round of the ingest process: each source's ok, ``P:events`` decoded, ``P:alerts``."""

    ok: dict[str, bool]
    events: list[Any]
    alerts: list[dict[str, str]]


@pytest.fixture
def ingest_once(backend: Backend) -> Callable[[dict[str, dict[str, Any]]], Awaitable[IngestRun]]:
    async def run(sources: dict[str, dict[str, Any]]) -> IngestRun:
        settings = load_settings(env={}, overrides={"redis": {"prefix": backend.prefix}})
        settings = msgspec.structs.replace(settings, extra={"sources": sources})
        ingest = Ingest(settings, KINDS, backend.connect(decode_responses=True), http=HttpPool(timeout_s=5.0), env=ENV)
        try:
            ok = await ingest.run_once()
            client = backend.connect(decode_responses=True)
            try:
                events = [decode_event(f) for _, f in await client.xrange(f"{backend.prefix}:events")]
                alerts = [f for _, f in await client.xrange(f"{backend.prefix}:alerts")]
            finally:
                await client.aclose()
        finally:
            await ingest.aclose()
            await ingest.redis.aclose()  # the caller's client: Ingest does not close it
        return IngestRun(ok, events, alerts)

    return run

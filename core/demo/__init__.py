"""``navstream demo``: a bundled trading-desk scenario replayed through the real consumer loop.

Why it exists: the quickest way to see what navstream does, how it behaves when sources fail,
and how the risk gate answers the trading engine's orders through it all, is to watch it process
a realistic feed, with no Redis to install. Nothing in the loop is simulated: entries go through
XADD, XREADGROUP, every loaded plugin, the writer and XACK exactly as in production. Only the
clock is (a :class:`ManualClock`), so ten desk minutes take seconds.

The scenario (``demo_scenario.jsonl``) is one JSON object a line, a *step*:
``{"at_s": 45, "note": "what happens", "entries": [...]}``, ``at_s`` seconds after the start,
never going back. Each entry of a step is one of two forms; a step's events are written in
the order listed, its orders after them:

- A **scripted event**, written as a producer would XADD it: string fields with ``type``, and
  ``ts_offset_s`` (decimal seconds, whole milliseconds) instead of ``ts``, relative to the step.
  Orders go to ``P:orders``, everything else to ``P:events``. The other venues' ingestors
  (Binance, OKX, the bank, the cold wallet) and the trading engine are scripted this way.
- A **source attempt**: ``{"source": NAME, "answer": {...}}`` runs one fetch of the real source
  ``[sources.NAME]`` of :data:`DEMO_CONFIG` (kind ``coingecko``) through the real ingest code
  (:class:`~navstream.ingest.runner.Ingest`), which publishes the source's prices and its
  ``source_status`` to ``P:events`` itself. Its HTTP never leaves the process: an
  ``httpx.MockTransport``, *the stub venue* (:class:`StubVenue`), answers each request with the
  step's ``answer``, and the HTTP pool and its rate limiter run on the simulated clock, so a
  429's ``Retry-After`` blocks the source's later steps as it would block a real one. ``answer``:

  - ``{"status": 200, "prices": {"bitcoin": "96871.15", ...}, "age_s": 5}``: CoinGecko's
    ``/simple/price`` body with these prices (by CoinGecko id, sent as exact JSON numbers) for
    the ids asked, ``last_updated_at`` ``age_s`` seconds before the step. An id asked and not
    listed is absent from the body, as CoinGecko leaves out an unknown id.
  - ``{"status": 429, "retry_after_s": 120}``: CoinGecko's rate-limit answer (its JSON error
    body, and ``Retry-After`` when given; a minute is assumed without).
  - ``{"status": 503, "body": "..."}``: any other error status (not 418, which is Binance's),
    with ``body`` or, by default, its reason phrase; a 503 may carry ``retry_after_s`` too (the
    HTTP pool blocks a host on 429 and 418 only).
  - ``{"timeout": true}``: no answer before the request's timeout.
  - no ``answer``: the source must not ask at this step, because a 429's ``Retry-After`` still
    blocks its host: it reports "rate limited" on its own.

:func:`load_scenario` checks all of it, and replays the sources' blocks: an answer scripted
while the host is blocked, a step where the source would ask with none scripted, or a step
where the source would *wait* for the block (less than its ``timeout_s`` left: simulated time
does not pass within a step) are errors naming the line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import tempfile
import textwrap
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Annotated, Any, Callable, Iterator, Mapping, Sequence, TextIO, cast

import fakeredis
import httpx
import msgspec
import redis.asyncio as aioredis

from navstream.ops.admin import AdminError, dlq_list
from navstream.app import App, Connect, ManualClock, SystemClock, default_connect
from navstream.config import CORE_SECTIONS, SOURCES_SECTION, ConfigError, Settings, load_settings, redact_url
from navstream.loop.consumer import Consumer
from navstream.ingest.httppool import HttpPool
from navstream.ingest.runner import Ingest
from navstream.contract.keys import Keys
from navstream.plugin.manager import await_me_maybe, call_impl, hook_impls
from navstream.ingest.ratelimit import RETRY_AFTER_DEFAULT_S
from navstream.cli.render import table
from navstream.sources import SourceKind, SourceSettings

#: The demo's settings. config/demo.toml holds the same values, documented, for
#: ``navstream run --config config/demo.toml``; tests/test_demo.py keeps the two equal. They are
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

SCENARIO_FILE = "demo_scenario.jsonl"
#: Longest real pause between two steps, whatever the simulated gap: keeps the demo short.
MAX_PAUSE_S = 1.5
#: The live table, the decisions and the trading state fit a terminal this wide (scenario
#: notes are kept short enough; tests/test_demo.py checks it). Alert messages are printed whole.
TERMINAL_WIDTH = 100
#: Width of the "total NAV" cell (``10,245,332 partial``).
NAV_WIDTH = 18
#: Alerts listed one by one in the summary (all of them are counted in the table).
ALERTS_LISTED = 30
#: Lines of a source's own error text under its row in the live table (cut beyond).
SOURCE_ERROR_LINES = 2


class ScenarioError(ValueError):
    """The scenario is broken; the message names the line (or the step) and what to change."""


# --- scenario ---------------------------------------------------------------------------------

#: Source kinds the stub venue answers for: a source attempt must name a ``[sources.<name>]`` of
#: :data:`DEMO_CONFIG` of one of these kinds.
STUB_KINDS = frozenset({"coingecko"})
#: CoinGecko's answer to a client over its rate limit, as its public API sends it (with
#: ``Retry-After``, e.g. 119 s, in the headers).
COINGECKO_429_BODY = (
    '{"status":{"error_code":429,"error_message":"You\'ve exceeded the Rate Limit. Please visit '
    'https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate limits."}}'
)


class VenueAnswer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What the stub venue answers to a source's requests at one step (see the module doc)."""

    #: The HTTP status; None with ``timeout``.
    status: Annotated[int, msgspec.Meta(ge=200, le=599)] | None = None
    #: No answer before the request's timeout (the source sees httpx's ``ReadTimeout``).
    timeout: bool = False
    #: Status 200: CoinGecko id -> price in ``vs_currency``, sent as an exact JSON number.
    prices: dict[str, str] = {}
    #: Status 200: CoinGecko observed the prices this long before the step (``last_updated_at``).
    age_s: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 0
    #: ``Retry-After`` of a 429 (or 503), seconds; a 429 without one blocks for a minute.
    retry_after_s: Annotated[int, msgspec.Meta(ge=0, le=86_400)] | None = None
    #: Body of an error status; default CoinGecko's own for a 429, else the reason phrase.
    body: str | None = None

    def describe(self) -> str:
        """``HTTP 429, Retry-After 120 s``: the answer in a few words."""
        if self.timeout:
            return "no answer (timed out)"
        retry = "" if self.retry_after_s is None else f", Retry-After {self.retry_after_s} s"
        return f"HTTP {self.status}{retry}"


class SourceAttempt(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A scenario entry that runs one fetch of the real source ``source``; ``answer`` is what
    the stub venue answers it, None when the source must not ask (its host is blocked)."""

    source: Annotated[str, msgspec.Meta(min_length=1)]
    answer: VenueAnswer | None = None


#: A scenario entry: a scripted event (string fields, ``ts_offset_s``) or a source attempt.
Entry = dict[str, str] | SourceAttempt


class Step(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One line of the scenario: what producers publish at ``at_s`` seconds after the start."""

    at_s: Annotated[int, msgspec.Meta(ge=0)]
    note: Annotated[str, msgspec.Meta(min_length=1)]
    entries: list[Entry]

    @property
    def at_ms(self) -> int:
        return self.at_s * 1000

    @property
    def scripted(self) -> list[dict[str, str]]:
        """The step's scripted events and orders (not what its sources publish)."""
        return [e for e in self.entries if isinstance(e, dict)]

    @property
    def attempts(self) -> list[SourceAttempt]:
        return [e for e in self.entries if isinstance(e, SourceAttempt)]


class _RawStep(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    at_s: Annotated[int, msgspec.Meta(ge=0)]
    note: Annotated[str, msgspec.Meta(min_length=1)]
    entries: list[dict[str, Any]]


@dataclass(frozen=True)
class StubSource:
    """What the scenario checks need of a ``[sources.<name>]`` the stub venue answers for."""

    name: str
    kind: str
    #: The CoinGecko ids it asks.
    ids: frozenset[str]
    timeout_s: float


def demo_sources(tables: Mapping[str, Any] | None = None) -> dict[str, StubSource]:
    """The ``[sources.*]`` tables ``tables`` (by default :data:`DEMO_CONFIG`'s), as the
    scenario checks need them."""
    if tables is None:
        tables = msgspec.toml.decode(DEMO_CONFIG).get(SOURCES_SECTION, {})
    default_timeout = SourceSettings().timeout_s
    return {name: StubSource(name, str(table.get("kind") or name), frozenset(dict(table.get("ids", {})).values()),
                             float(table.get("timeout_s", default_timeout)))
            for name, table in tables.items() if isinstance(table, dict)}


def load_scenario(text: str | None = None, sources: Mapping[str, StubSource] | None = None) -> list[Step]:
    """Parse the scenario (the bundled file unless ``text`` is given), checking every line
    against ``sources`` (by default :data:`DEMO_CONFIG`'s).

    :raises ScenarioError: a line that is not a step, time going backwards, a scripted entry
        that is not all strings or whose ``ts_offset_s`` is missing or not a whole number of
        milliseconds, a source attempt that is malformed, names no source the stub venue
        answers for, or does not match what the source will do (see the module doc).
    """
    if text is None:
        text = resources.files("navstream.demo").joinpath(SCENARIO_FILE).read_text("utf-8")
    if sources is None:
        sources = demo_sources()
    decoder = msgspec.json.Decoder(_RawStep)
    steps: list[Step] = []
    #: source -> (blocked until, at_s of the 429 that blocked it), in simulated seconds.
    blocked: dict[str, tuple[int, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{SCENARIO_FILE}:{number}"
        try:
            raw = decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise ScenarioError(f"{where}: {exc}") from exc
        if steps and raw.at_s < steps[-1].at_s:
            raise ScenarioError(f"{where}: at_s {raw.at_s} goes back in time")
        entries: list[Entry] = []
        for index, entry in enumerate(raw.entries):
            at = f"{where}: entries[{index}]"
            if "type" in entry:
                bad = sorted(k for k, v in entry.items() if not isinstance(v, str))
                if bad:
                    raise ScenarioError(f"{at}: a scripted entry's fields are strings; not {', '.join(bad)}")
                _offset_ms(entry, at)
                entries.append(cast("dict[str, str]", entry))
            elif "source" in entry:
                entries.append(_attempt(entry, at, sources))
            else:
                raise ScenarioError(f"{at}: neither a scripted event (with `type`) nor a source attempt "
                                    f"(`source`, `answer`): {entry}")
        step = Step(raw.at_s, raw.note, entries)
        _replay_blocks(step, where, sources, blocked)
        steps.append(step)
    if not steps:
        raise ScenarioError(f"{SCENARIO_FILE}: no steps")
    return steps


def _attempt(entry: Mapping[str, Any], where: str, sources: Mapping[str, StubSource]) -> SourceAttempt:
    """A source attempt, checked on its own (the blocks are :func:`_replay_blocks`' job)."""
    try:
        attempt = msgspec.convert(entry, SourceAttempt)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{where}: source attempt: {exc}") from None
    source = sources.get(attempt.source)
    if source is None or source.kind not in STUB_KINDS:
        known = ", ".join(sorted(n for n, s in sources.items() if s.kind in STUB_KINDS)) or "none"
        raise ScenarioError(f"{where}: {attempt.source!r} is not a source the stub venue answers for (the demo "
                            f"config's [sources.*] of kind {', '.join(sorted(STUB_KINDS))}: {known})")
    answer = attempt.answer
    if answer is None:
        return attempt
    say = f"{where}: {attempt.source}'s answer"
    if answer.timeout == (answer.status is not None):
        raise ScenarioError(f"{say}: give either `status` or `timeout: true`")
    if answer.timeout and (answer.prices or answer.age_s or answer.retry_after_s is not None or answer.body):
        raise ScenarioError(f"{say}: a timeout has no `prices`, `age_s`, `retry_after_s` or `body`")
    if answer.status == 200:
        if not answer.prices:
            raise ScenarioError(f"{say}: status 200 needs `prices` (CoinGecko id -> price)")
        if answer.retry_after_s is not None or answer.body is not None:
            raise ScenarioError(f"{say}: status 200 takes `prices` and `age_s`, no `retry_after_s` or `body`")
        for cg_id, price in answer.prices.items():
            if cg_id not in source.ids:
                raise ScenarioError(f"{say}: {cg_id!r} is not one of the ids [sources.{source.name}.ids] asks "
                                    f"({', '.join(sorted(source.ids))})")
            try:
                number = Decimal(price)
            except InvalidOperation:
                number = Decimal("NaN")
            if not number.is_finite():
                raise ScenarioError(f"{say}: price {price!r} of {cg_id!r} is not a decimal number")
    elif answer.status is not None:
        if answer.status < 400:
            raise ScenarioError(f"{say}: status {answer.status}: 200 or an error status (400-599)")
        if answer.status == 418:
            raise ScenarioError(f"{say}: 418 is Binance's IP ban; CoinGecko answers 429")
        if answer.prices or answer.age_s:
            raise ScenarioError(f"{say}: an error status carries no `prices` or `age_s`")
        if answer.retry_after_s is not None and answer.status not in (429, 503):
            raise ScenarioError(f"{say}: `retry_after_s` goes with 429 or 503, not {answer.status}")
    return attempt


def _replay_blocks(step: Step, where: str, sources: Mapping[str, StubSource],
                   blocked: dict[str, tuple[int, int]]) -> None:
    """Check the step's source attempts against the blocks earlier 429s left, as the HTTP pool's
    limiter will apply them, and record the blocks of the step's own 429s."""
    seen: set[str] = set()
    for attempt in step.attempts:
        name = attempt.source
        if name in seen:
            raise ScenarioError(f"{where}: {name} runs twice in one step (one attempt per step)")
        seen.add(name)
        until, since = blocked.get(name, (0, 0))
        left = until - step.at_s
        if left > 0:
            timeout_s = sources[name].timeout_s
            if left <= timeout_s:
                earliest = until - math.ceil(timeout_s)
                raise ScenarioError(
                    f"{where}: the 429 at {clock_label(since)} blocks {name} until {clock_label(until)}, {left}s "
                    f"after this step: within its timeout_s ({timeout_s:g}s), so the source would wait for it, "
                    f"and simulated time does not pass within a step. Move the step before "
                    f"{clock_label(earliest)}, or to {clock_label(until)} or later")
            if attempt.answer is not None:
                raise ScenarioError(
                    f"{where}: {name} asks nothing here: the 429 at {clock_label(since)} blocks its host until "
                    f"{clock_label(until)}; drop the `answer` (the source reports \"rate limited\" itself)")
        elif attempt.answer is None:
            raise ScenarioError(f"{where}: {name} asks at this step (no 429 blocks it): script its `answer`")
        answer = attempt.answer
        if answer is not None and answer.status == 429:
            wait = answer.retry_after_s if answer.retry_after_s is not None else int(RETRY_AFTER_DEFAULT_S)
            blocked[name] = (step.at_s + wait, step.at_s)


def _offset_ms(entry: Mapping[str, str], where: str) -> int:
    raw = entry.get("ts_offset_s")
    if raw is None:
        raise ScenarioError(f"{where}: entry without `ts_offset_s`: {dict(entry)}")
    try:
        ms = Decimal(raw) * 1000
    except InvalidOperation:
        raise ScenarioError(f"{where}: `ts_offset_s` {raw!r} is not a decimal") from None
    if not ms.is_finite() or ms != ms.to_integral_value():
        raise ScenarioError(f"{where}: `ts_offset_s` {raw!r} is not a whole number of ms")
    return int(ms)


def materialize(entry: Mapping[str, str], step_ms: int) -> dict[str, str]:
    """The entry as a producer XADDs it: ``ts_offset_s`` becomes an epoch-ms ``ts``."""
    fields = {k: v for k, v in entry.items() if k != "ts_offset_s"}
    fields["ts"] = str(step_ms + _offset_ms(entry, "entry"))
    return fields


def stream_for(keys: Keys, fields: Mapping[str, str]) -> str:
    """Orders go to ``P:orders``, everything else to ``P:events`` (as ``navstream publish``)."""
    return keys.orders if fields.get("type") == "order" else keys.events


# --- settings and Redis -----------------------------------------------------------------------


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


@dataclass
class Backend:
    label: str
    connect: Connect
    real: bool


def make_backend(settings: Settings, redis_url: str | None) -> Backend:
    if redis_url is None:
        server = fakeredis.FakeServer()
        return Backend(
            "in-process Redis (fakeredis)",
            lambda decode: fakeredis.FakeAsyncRedis(server=server, decode_responses=decode),
            real=False,
        )
    return Backend(f"Redis at {redact_url(redis_url)}", default_connect(settings), real=True)


async def _keys_under(client: aioredis.Redis, prefix: str) -> list[str]:
    # Prefix characters are limited to [A-Za-z0-9_.-{}] by config, so no glob escaping needed.
    return [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]


async def ensure_prefix_unused(client: aioredis.Redis, prefix: str, label: str) -> None:
    """The demo deletes every key under its prefix at the end, so it must own them all.

    :raises AdminError: keys under the prefix exist already (a deployment, or a demo that was
        killed before cleaning up).
    """
    found = await _keys_under(client, prefix)
    if found:
        raise AdminError(
            f"{label} already has {len(found)} key(s) under {prefix}:* (e.g. {sorted(found)[0]}); "
            "the demo deletes its keys when it ends, so it only runs on an unused prefix. Pick "
            "another --prefix, or delete those keys if they are left over from a demo."
        )


async def delete_prefix(client: aioredis.Redis, prefix: str) -> int:
    keys = await _keys_under(client, prefix)
    if keys:
        await client.delete(*keys)
    return len(keys)


# --- the sources and the stub venue -------------------------------------------------------------

#: Exact JSON numbers: the stub venue sends the scenario's prices as CoinGecko does, as numbers.
_NUMBERS = msgspec.json.Encoder(decimal_format="number")


class StubVenue:
    """The venue the demo's sources talk to, in process: the handler of an
    ``httpx.MockTransport``. Before each attempt the demo tells it the step's answer
    (:meth:`expect`); it answers every request of that attempt with it, as CoinGecko would
    (``/simple/price`` bodies for the ids asked, its 429), and records what was asked. A request
    it has no answer for is answered 500 and recorded as unexpected: the demo then stops with a
    :class:`ScenarioError` instead of showing a failure the scenario did not script.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.answer: VenueAnswer | None = None
        #: The requests of the current attempt: (path, ids asked).
        self.asked: list[tuple[str, list[str]]] = []
        self.unexpected: list[str] = []

    def expect(self, answer: VenueAnswer | None) -> None:
        self.answer, self.asked, self.unexpected = answer, [], []

    def handle(self, request: httpx.Request) -> httpx.Response:
        ids = [i for i in request.url.params.get("ids", "").split(",") if i]
        self.asked.append((request.url.path, ids))
        answer = self.answer
        if answer is None or not request.url.path.endswith("/simple/price"):
            self.unexpected.append(f"{request.method} {request.url.copy_with(query=None)}")
            return httpx.Response(500, text="stub venue: no answer scripted for this request")
        if answer.timeout:
            raise httpx.ReadTimeout("stub venue: no answer before the timeout", request=request)
        status = answer.status or 200
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if answer.retry_after_s is not None:
            headers["Retry-After"] = str(answer.retry_after_s)
        if status == 200:
            vs = request.url.params.get("vs_currencies", "usd")
            observed = self.clock.now_ms() // 1000 - answer.age_s
            body = {cg_id: {vs: Decimal(answer.prices[cg_id]), "last_updated_at": observed}
                    for cg_id in ids if cg_id in answer.prices}
            return httpx.Response(200, headers=headers, content=_NUMBERS.encode(body))
        if answer.body is not None:
            text = answer.body
        elif status == 429:
            text = COINGECKO_429_BODY
        else:
            text, headers["Content-Type"] = httpx.codes.get_reason_phrase(status), "text/plain"
        return httpx.Response(status, headers=headers, text=text)


@dataclass
class SourceReport:
    """One attempt of a source at a step: what the stub venue was asked and answered, and what
    the source published to ``P:events`` (read back from the stream, as written)."""

    source: str
    #: The step's scripted answer; None: the source was expected not to ask.
    answer: VenueAnswer | None
    #: Requests the stub venue received, and the ids they asked.
    requests: int
    ids: int
    #: The entries the attempt wrote, in stream order: its prices, then its source_status.
    written: list[dict[str, str]]

    @property
    def status(self) -> dict[str, str]:
        return next((f for f in reversed(self.written) if f.get("type") == "source_status"), {})

    @property
    def ok(self) -> bool:
        return self.status.get("ok") == "true"

    @property
    def prices(self) -> int:
        return sum(1 for f in self.written if f.get("type") == "price")

    def summary(self) -> str:
        """``asked 4 ids, HTTP 429, Retry-After 120 s -> no price, source_status ok=false``."""
        if self.requests:
            asked = f"asked {self.ids} ids, {self.answer.describe() if self.answer else 'no answer'}"
        else:
            blocked = "HTTP 429" in self.status.get("error", "")
            asked = "not asked (host blocked by the 429)" if blocked else "not asked"
        published = f"{self.prices} prices" if self.prices else "no price"
        return f"{asked} -> {published}, source_status {'ok' if self.ok else 'ok=false'}"


class DemoSources:
    """The demo's ingest side: the ``[sources.*]`` of its settings built by the real
    :class:`Ingest` from the loaded plugins' source kinds, HTTP through the :class:`StubVenue`,
    the HTTP pool and its limiters on the simulated clock, writing to ``P:events`` through
    ``redis`` exactly as ``navstream ingest`` does."""

    def __init__(self, settings: Settings, kinds: Mapping[str, SourceKind], redis: aioredis.Redis,
                 clock: ManualClock) -> None:
        self.clock = clock
        self.venue = StubVenue(clock)
        missing = sorted({s.kind for s in demo_sources(settings.extra.get(SOURCES_SECTION, {})).values()}
                         - set(kinds))
        if missing:
            raise ConfigError(f"{settings.source}: the demo's prices come from source kind(s) {', '.join(missing)} "
                              "of the built-in plugin `sources`, which is not loaded (see `navstream plugins`, "
                              "NAVSTREAM_PLUGINS)")
        self.http = HttpPool(transport=httpx.MockTransport(self.venue.handle), clock=self.monotonic_s)
        self.ingest = Ingest(settings, kinds, redis, clock=clock, http=self.http, env={})
        self.keys = Keys(settings.redis.prefix)
        self.redis = redis

    def monotonic_s(self) -> float:
        """The pool's clock: the simulated time in seconds, so Retry-After and budgets count it."""
        return self.clock.now_ms() / 1000

    def _check_waits(self, attempt: SourceAttempt, at_s: int) -> None:
        """A source whose host is blocked, or out of budget, for less than its ``timeout_s``
        would wait for it in real time while the simulated clock stands still: refused."""
        run = self.ingest.runs[attempt.source]
        now = self.monotonic_s()
        for limiter in self.http.limiters.values():
            limiter.spent()  # expires the window's old requests
            free = limiter._free_at(1, now)  # what acquire() would wait for (every demo request weighs 1)
            if now < free <= now + run.source.settings.timeout_s:
                raise ScenarioError(f"{clock_label(at_s)}: {attempt.source} would wait {free - now:g}s for "
                                    f"{limiter.host} ({limiter.block_reason or 'its call budget'}), and simulated "
                                    "time does not pass within a step: move the step")

    async def attempt(self, attempt: SourceAttempt, at_s: int) -> SourceReport:
        """One fetch of ``attempt.source``, answered by the stub venue, published by the ingest code.

        :raises ScenarioError: the source asked with no answer scripted, or did not ask for one.
        """
        self._check_waits(attempt, at_s)
        last = cast("list[tuple[str, dict[str, str]]]", await self.redis.xrevrange(self.keys.events, count=1))
        after = last[0][0] if last else "0-0"
        self.venue.expect(attempt.answer)
        await self.ingest.attempt(self.ingest.runs[attempt.source])
        asked, unexpected = self.venue.asked, self.venue.unexpected
        if unexpected:
            raise ScenarioError(f"{clock_label(at_s)}: {attempt.source} sent {', '.join(unexpected)} with no answer "
                                "scripted")
        if attempt.answer is not None and not asked:
            raise ScenarioError(f"{clock_label(at_s)}: an answer is scripted for {attempt.source}, which asked "
                                "nothing (rate limited?)")
        rows = cast("list[tuple[str, dict[str, str]]]",
                    await self.redis.xrange(self.keys.events, min=f"({after}", max="+"))
        written = [dict(fields) for _, fields in rows or []]
        return SourceReport(attempt.source, attempt.answer, len(asked), sum(len(ids) for _, ids in asked), written)

    async def aclose(self) -> None:
        await self.ingest.aclose()


# --- what the terminal shows ------------------------------------------------------------------

STATE_RANK = {"ok": 0, "FAIL": 1, "silent": 2}
SEVERITY_COLOUR = {"info": "32", "warning": "33", "critical": "31"}


@dataclass
class SourceRow:
    venue: str
    source: str
    account: str
    state: str
    age_s: float
    error: str


@dataclass
class Answer:
    """One ``P:decisions`` entry, as the risk gate wrote it."""

    fields: dict[str, str]
    #: When this order_id was first answered (s after the start) if this repeats that answer.
    first_at_s: int | None = None

    @property
    def reasons(self) -> list[str]:
        return [r for r in self.fields.get("reasons", "").split(",") if r]


@dataclass
class StepRow:
    step: Step
    entries_in: int
    #: (code, severity) of each alert the step raised.
    alerts: list[tuple[str, str]]
    sources: list[SourceRow] | None
    #: The nav plugin's scopes as ``navstream status`` shows them; None without the plugin.
    nav: list[dict[str, Any]] | None = None
    #: The decisions the risk gate published during the step, in order.
    decisions: list[Answer] = field(default_factory=list)
    #: What the step's source attempts asked, were answered and published.
    attempts: list[SourceReport] = field(default_factory=list)
    #: Those the live table describes under the row: a source's first attempt, its failures and
    #: its recovery (a good round like the previous one adds nothing to read).
    shown: list[SourceReport] = field(default_factory=list)


def total_nav(scopes: list[dict[str, Any]] | None) -> str:
    """``9,815,020 USD ok``: the total NAV and its status, as the nav plugin stored them."""
    if scopes is None:
        return "n/a (nav not loaded)"
    total = next((s for s in scopes if s["scope"] == "total"), None)
    if total is None:
        return "none yet"
    return f"{Decimal(total['nav']):,.0f} {total['status']}"


def clock_label(seconds: int) -> str:
    return f"T+{seconds // 60:02d}:{seconds % 60:02d}"


def venue_health(sources: list[SourceRow] | None) -> str:
    """``okx FAIL · coingecko silent · 3 ok``: the venues in trouble, then how many are fine.

    A venue is as bad as its worst source: one failing API of an exchange is the exchange failing.
    """
    if sources is None:
        return "n/a (source_monitor not loaded)"
    if not sources:
        return "no reports yet"
    worst: dict[str, str] = {}
    for row in sources:
        if STATE_RANK[row.state] >= STATE_RANK.get(worst.get(row.venue, "ok"), 0):
            worst[row.venue] = row.state
    bad = [f"{venue} {state}" for venue, state in worst.items() if state != "ok"]
    fine = sum(1 for state in worst.values() if state == "ok")
    if not bad:
        return f"all {fine} ok"
    return " · ".join(bad + ([f"{fine} ok"] if fine else []))


def decisions_cell(answers: Sequence[Answer]) -> str:
    """``approve 1, veto 2 (nav_stale, source_unhealthy)``: the step's new decisions by kind
    with every veto reason once, then each repeated answer with the time it was first given."""
    parts = []
    for kind in ("approve", "veto"):
        group = [a for a in answers if a.first_at_s is None and a.fields.get("decision") == kind]
        if group:
            reasons = ", ".join(dict.fromkeys(r for a in group for r in a.reasons))
            parts.append(f"{kind} {len(group)}" + (f" ({reasons})" if reasons else ""))
    for a in answers:
        if a.first_at_s is not None:
            reasons = f" ({', '.join(a.reasons)})" if a.reasons else ""
            parts.append(f"{a.fields.get('order_id')} re-sent: {a.fields.get('decision')}{reasons}, "
                         f"as given at {clock_label(a.first_at_s)}")
    return ", ".join(parts)


def counted(codes: Sequence[str]) -> str:
    """``["a", "b", "a"]`` -> ``a ×2, b``, first-seen order."""
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return ", ".join(code if n == 1 else f"{code} ×{n}" for code, n in counts.items())


class Painter:
    """ANSI colour for a terminal, nothing for a pipe, a file or ``NO_COLOR``."""

    def __init__(self, out: TextIO) -> None:
        isatty = getattr(out, "isatty", None)
        self.enabled = bool(isatty and isatty()) and "NO_COLOR" not in os.environ

    def paint(self, text: str, *words: tuple[str, str]) -> str:
        if not self.enabled:
            return text
        for word, code in words:
            text = text.replace(word, f"\x1b[{code}m{word}\x1b[0m")
        return text

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.enabled else text


class LiveTable:
    """A :func:`render.table` printed row by row: cells are padded to widths fixed up front.

    Each step is one row; what its sources asked and published (:attr:`StepRow.shown`), the
    alerts it raised and the risk gate's decisions follow on lines of their own under "what
    happens", so a row fits :data:`TERMINAL_WIDTH` however many there are.
    """

    HEADERS = ("time", "what happens", "in", "total NAV", "sources")

    def __init__(self, steps: Sequence[Step], painter: Painter) -> None:
        self.painter = painter
        #: Labels of the lines under a row (``alerts``, ``decisions``, a source's name), padded.
        self.label_width = max([len("decisions"), *(len(a.source) for s in steps for a in s.attempts)])
        self.widths = [len("T+00:00"), max(len(s.note) for s in steps), 3, NAV_WIDTH]
        self.note_at = self.widths[0] + 2  # where the "what happens" cell starts
        self.nav_at = sum(self.widths[:3]) + 2 * 3  # where the NAV cell starts
        # The last column is not padded; its rule reaches the right edge of the terminal.
        self.widths.append(max(len("sources"), TERMINAL_WIDTH - self.nav_at - NAV_WIDTH - 2))

    def _line(self, cells: Sequence[str], index: int) -> str:
        padded = [str(c).ljust(w) for c, w in zip(cells, self.widths)]
        headers = [h.ljust(w) for h, w in zip(self.HEADERS, self.widths)]
        return table(headers, [padded] if index == 2 else []).splitlines()[index]

    def header(self) -> str:
        return "\n".join((self.painter.bold(self._line(self.HEADERS, 0)), self._line(self.HEADERS, 1)))

    def _detail(self, label: str, text: str, *words: tuple[str, str]) -> str:
        return f"{' ' * self.note_at}{label:<{self.label_width}}  {self.painter.paint(text, *words)}"

    def _source_lines(self, report: SourceReport) -> list[str]:
        """What the source asked and was answered, what it published and, when it failed or
        left values out, its own words (its ``source_status`` error, cut to the terminal)."""
        words = (("ok=false", "31"), ("status ok", "32"))
        lines = [self._detail(report.source, report.summary(), *words)]
        error = report.status.get("error", "")
        if error:
            room = TERMINAL_WIDTH - self.note_at - self.label_width - 2
            quoted = textwrap.wrap(f'"{error}"', room, max_lines=SOURCE_ERROR_LINES, placeholder="...")
            lines += [self._detail("", part) for part in quoted]
        return lines

    def row(self, r: StepRow) -> str:
        health = venue_health(r.sources)
        nav = total_nav(r.nav)
        line = self._line([clock_label(r.step.at_s), r.step.note, str(r.entries_in), nav, health], 2)
        health_at = self.nav_at + max(NAV_WIDTH, len(nav)) + 2
        paint = self.painter.paint
        lines = [line[: self.nav_at]
                 + paint(line[self.nav_at: health_at], ("stale", "33"), ("partial", "33"), ("failed", "31"))
                 + paint(line[health_at:], ("FAIL", "31"), ("silent", "33"))]
        for report in r.shown:
            lines += self._source_lines(report)
        if r.alerts:
            lines.append(self._detail("alerts", counted([c for c, _ in r.alerts]),
                                      *((code, SEVERITY_COLOUR.get(severity, "33"))
                                        for code, severity in dict.fromkeys(r.alerts))))
        if r.decisions:
            lines.append(self._detail("decisions", decisions_cell(r.decisions),
                                      ("approve", "32"), ("veto", "31")))
        return "\n".join(lines)


# --- reading results back from Redis ----------------------------------------------------------


async def plugin_section(app: App, name: str) -> dict[str, Any] | None:
    """What plugin ``name`` shows in ``navstream status``; None when it is not loaded."""
    for impl in hook_impls(app.pm, "navstream_status"):
        if impl.plugin_name == name:
            return dict(await await_me_maybe(call_impl(impl, {"app": app})) or {})
    return None


async def nav_rows(app: App) -> list[dict[str, Any]] | None:
    """Every NAV scope as the nav plugin stored it (the demo never recomputes one)."""
    section = await plugin_section(app, "nav")
    return None if section is None else list(section.get("scopes", []))


async def source_rows(app: App) -> list[SourceRow] | None:
    """Source health as ``source_monitor`` reports it to ``navstream status``; None without it."""
    for impl in hook_impls(app.pm, "navstream_status"):
        if impl.plugin_name != "source_monitor":
            continue
        section = await await_me_maybe(call_impl(impl, {"app": app})) or {}
        return [
            SourceRow(s["venue"], s["source"], s["account"],
                      "silent" if s["silent"] else ("ok" if s["ok"] else "FAIL"), s["age_s"], s["error"])
            for s in section.get("sources", [])
        ]
    return None


@dataclass
class StreamCursor:
    """Reads the entries of output stream ``key`` added since the last call: what a step
    raised (``P:alerts``) or answered (``P:decisions``), as written."""

    app: App
    key: str
    last_id: str = "0-0"

    async def new(self) -> list[dict[str, str]]:
        rows = await read_stream(self.app, self.key, after=self.last_id)
        if rows:
            self.last_id = rows[-1][0]
        return [fields for _, fields in rows]


async def read_stream(app: App, key: str, after: str = "0-0") -> list[tuple[str, dict[str, str]]]:
    """Entries of ``key`` after id ``after``, as ``str`` (``app.redis`` decodes responses)."""
    rows = await app.redis.xrange(key, min=f"({after}", max="+")
    return cast("list[tuple[str, dict[str, str]]]", rows or [])


# --- the replay -------------------------------------------------------------------------------


class Replay:
    """Drives the real :class:`Consumer` through the scenario on a manual clock, and the demo's
    sources (:class:`DemoSources`) at the steps that run them.

    :param sources: whether to build the sources of ``app.settings`` (the demo's scenario needs
        them; a scenario without source attempts does not).
    """

    def __init__(self, app: App, clock: ManualClock, producer: aioredis.Redis, start_ms: int,
                 sources: bool = True) -> None:
        self.app = app
        self.clock = clock
        self.producer = producer
        self.start_ms = start_ms
        self.consumer = Consumer(app)
        self.alerts = StreamCursor(app, app.keys.alerts)
        self.decisions = StreamCursor(app, app.keys.decisions)
        #: order_id -> when (s after the start) it was first answered.
        self.answered: dict[str, int] = {}
        self.entries_in = 0
        self.sources = DemoSources(app.settings, app.plugins.source_kinds, producer, clock) if sources else None
        #: source -> whether its last attempt succeeded.
        self.source_ok: dict[str, bool] = {}

    async def start(self) -> list[str]:
        """Create the groups and run the startup hooks; returns the alerts raised doing so."""
        await self.consumer.setup()
        return [a.get("code", "?") for a in await self.alerts.new()]

    async def _xadd(self, stream: str, batch: list[dict[str, str]]) -> None:
        if batch:
            pipe = self.producer.pipeline(transaction=False)
            for fields in batch:
                pipe.xadd(stream, cast("dict[Any, Any]", fields))
            await pipe.execute()

    async def play(self, step: Step) -> StepRow:
        self.clock.advance(self.start_ms + step.at_ms - self.clock.now_ms())
        now = self.clock.now_ms()
        keys = self.app.keys
        # The step's events in its order: scripted ones XADDed as a producer would, and at a
        # source attempt, whatever that source publishes itself.
        written = 0
        reports: list[SourceReport] = []
        pending: list[dict[str, str]] = []
        for entry in step.entries:
            if isinstance(entry, SourceAttempt):
                if self.sources is None:
                    raise ScenarioError(f"{clock_label(step.at_s)}: {entry.source} runs, but this replay has "
                                        "no sources")
                await self._xadd(keys.events, pending)
                written, pending = written + len(pending), []
                report = await self.sources.attempt(entry, step.at_s)
                reports.append(report)
                written += len(report.written)
            elif stream_for(keys, entry) == keys.events:
                pending.append(materialize(entry, now))
        await self._xadd(keys.events, pending)
        written += len(pending)
        # The ingestors' reports of a step come before the engine's orders (they are stamped
        # earlier): they are processed first, so the gate judges each order on the step's state.
        # Written together, one XREADGROUP could read both, and a batch judges its orders on the
        # state before its events (docs/risk.md).
        while await self.consumer.step(block_ms=1):
            pass
        orders = [materialize(e, now) for e in step.scripted if stream_for(keys, e) == keys.orders]
        if orders:
            await self._xadd(keys.orders, orders)
            written += len(orders)
            while await self.consumer.step(block_ms=1):
                pass
        self.entries_in += written
        await self.consumer.reclaim()
        await self.consumer.tick()
        raised = [(a.get("code", "?"), a.get("severity", "")) for a in await self.alerts.new()]
        answers = []
        for fields in await self.decisions.new():
            order_id = fields.get("order_id", "")
            answers.append(Answer(fields, self.answered.get(order_id)))
            self.answered.setdefault(order_id, step.at_s)
        shown = []
        for report in reports:
            previous = self.source_ok.get(report.source)
            self.source_ok[report.source] = report.ok
            # The first attempt, every failure and the recovery; not every good round.
            if previous is None or not report.ok or not previous:
                shown.append(report)
        return StepRow(step, written, raised, await source_rows(self.app), await nav_rows(self.app),
                       answers, reports, shown)

    async def aclose(self) -> None:
        """Close the sources' HTTP clients."""
        if self.sources is not None:
            await self.sources.aclose()

    async def stop(self) -> None:
        """Final heartbeat and the plugins' shutdown hooks, as ``navstream run`` ends; errors
        propagate (the demo must show a plugin that cannot shut down cleanly)."""
        await self.consumer.tick(final=True)
        for impl in hook_impls(self.app.pm, "navstream_shutdown"):
            await await_me_maybe(call_impl(impl, {"app": self.app}))


def pause_s(previous: Step | None, step: Step, speed: float, fast: bool) -> float:
    if fast or previous is None:
        return 0.0
    return min((step.at_s - previous.at_s) / speed, MAX_PAUSE_S)


# --- summary ----------------------------------------------------------------------------------


def _where(alert: Mapping[str, str]) -> str:
    parts = [alert.get("venue"), alert.get("source") or alert.get("account"), alert.get("asset")]
    return "/".join(p for p in parts if p) or "-"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def alerts_table(alerts: Sequence[Mapping[str, str]]) -> str:
    """Alerts grouped by code, first-seen order, with where they came from."""
    groups: dict[str, list[Mapping[str, str]]] = {}
    for alert in alerts:
        groups.setdefault(alert.get("code", "?"), []).append(alert)
    rows = [[code, items[0].get("severity"), len(items), ", ".join(dict.fromkeys(_where(a) for a in items))]
            for code, items in groups.items()]
    return table(["code", "severity", "count", "where"], rows)


def alerts_list(alerts: Sequence[Mapping[str, str]], start_ms: int) -> list[str]:
    """Every alert in order, at its simulated time, message in full (ops read the message)."""
    shown = alerts[-ALERTS_LISTED:]
    lines = [f"  ({len(alerts) - len(shown)} earlier alerts not listed)"] if len(shown) < len(alerts) else []
    for alert in shown:
        at = clock_label((int(alert.get("ts", start_ms)) - start_ms) // 1000)
        lines.append(f"  {at}  {alert.get('severity', '?'):<8}  {alert.get('code', '?')}: {alert.get('message', '')}")
    return lines


def dlq_table(rows: Sequence[Mapping[str, Any]]) -> str:
    shown = []
    for row in rows:
        fields = " ".join(f"{k}={v}" for k, v in row.items()
                          if k not in ("id", "ts") and not k.startswith("dlq_"))
        stream = str(row.get("dlq_stream", "")).rpartition(":")[2]
        shown.append([stream, row.get("dlq_deliveries"), fields, row.get("dlq_error")])
    return table(["from", "deliveries", "entry (ts omitted)", "error"], shown)


def nav_table(scopes: list[dict[str, Any]] | None) -> str:
    if scopes is None:
        return "the nav plugin is not loaded: no NAV"
    return table(["scope", "name", "NAV", "status", "oldest input", "missing", "stale"],
                 [[s["scope"], s["name"], f"{Decimal(s['nav']):,.2f}", s["status"],
                   "-" if s["as_of_age_s"] is None else f"{s['as_of_age_s']:.0f} s",
                   _short(", ".join(s["missing"]), 40) or "-", _short(", ".join(s["stale_sources"]), 50) or "-"]
                  for s in scopes])


def sources_table(sources: list[SourceRow] | None) -> str:
    if sources is None:
        return "source_monitor is not loaded: no source health"
    return table(["venue", "source", "account", "state", "last report", "error"],
                 [[s.venue, s.source, s.account or "-", s.state, f"{s.age_s:.0f} s ago", _short(s.error, 60) or "-"]
                  for s in sources])


def _label_at(ts: str | None, start_ms: int) -> str:
    try:
        return clock_label(max(0, int(ts or "") - start_ms) // 1000)
    except ValueError:
        return "-"


def decisions_table(decisions: Sequence[Mapping[str, str]], accounts: Mapping[str, str], start_ms: int) -> str:
    """Every ``P:decisions`` entry in order, with the account of its order (a decision names
    none) and the simulated time it was decided (a repeated answer keeps the first one's)."""
    return table(["decided", "order_id", "account", "decision", "trading", "NAV", "reasons"],
                 [[_label_at(d.get("ts"), start_ms), d.get("order_id"), accounts.get(d.get("order_id", ""), "-"),
                   d.get("decision"), d.get("trading_state"), d.get("nav_status"),
                   d.get("reasons", "").replace(",", ", ") or "-"] for d in decisions])


def decisions_checks(decisions: Sequence[Mapping[str, str]], sent: Mapping[str, int]) -> list[str]:
    """What the contract promises about the answers, checked on what the gate wrote: every
    order answered, and every answer to one order_id identical."""
    answers: dict[str, list[Mapping[str, str]]] = {}
    for d in decisions:
        answers.setdefault(d.get("order_id", ""), []).append(d)
    lines = []
    for order_id, given in answers.items():
        if len(given) > 1:
            same = all(a == given[0] for a in given)
            lines.append(f"  {order_id} sent {sent.get(order_id, 0)} times, answered {len(given)} times: "
                         + ("the first decision each time, field for field" if same
                            else "DIFFERENT answers, which the contract forbids"))
    unanswered = [order_id for order_id in sent if order_id not in answers]
    if unanswered:
        lines.append(f"  NO ANSWER to {', '.join(unanswered)}")
    return lines


def _since(text: str, start_ms: int) -> str:
    """``2026-11-25 03:07:32Z`` (as ``navstream risk show`` prints it) as a simulated time."""
    try:
        at = datetime.strptime(text, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return text or "-"
    return clock_label(max(0, int(at.timestamp() * 1000) - start_ms) // 1000)


def trading_lines(section: Mapping[str, Any] | None, start_ms: int) -> list[str]:
    """The risk plugin's trading records as ``navstream status`` shows them; each scope that is
    not active with its reason, and what resumes it."""
    if section is None:
        return ["the risk plugin is not loaded: no trading state"]
    if "error" in section:
        return [f"trading state unreadable: {section['error']}"]
    rows = list(section.get("trading", []))
    lines = [table(["scope", "state", "since", "by", "high-water mark"],
                   [[r.get("scope"), r.get("state"), _since(r.get("since", ""), start_ms), r.get("by") or "-",
                     f"{Decimal(r['high_water']):,.2f}" if r.get("high_water") else "-"] for r in rows])]
    for r in rows:
        if r.get("state") == "active":
            continue
        scope = str(r.get("scope"))
        account = "" if scope == "desk" else f" --account {scope.partition('/')[2]}"
        lines += [f"  {scope} {r.get('state')}: {r.get('reason')}",
                  f"  recovery does not resume it, ops do: navstream risk resume{account} --reason TEXT"]
    return lines


async def summary(app: App, replay: Replay, last: StepRow) -> list[str]:
    """Totals by type, dead letters, alerts and decisions as read back from Redis; the final
    trading state, NAV and source health."""
    stats = app.stats
    by_type = sorted(stats.by_type.items(), key=lambda kv: (-kv[1], kv[0]))
    dead = await dlq_list(app, limit=1000)
    alerts = [fields for _, fields in await read_stream(app, app.keys.alerts)]
    decisions = [fields for _, fields in await read_stream(app, app.keys.decisions)]
    accounts: dict[str, str] = {}
    sent: dict[str, int] = {}
    for _, order in await read_stream(app, app.keys.orders):
        order_id = order.get("order_id", "")
        accounts.setdefault(order_id, f"{order.get('venue', '?')}/{order.get('account', '?')}")
        sent[order_id] = sent.get(order_id, 0) + 1
    kinds = ", ".join(f"{kind} {n}" for kind, n in Counter(d.get("decision", "?") for d in decisions).items())
    return [
        f"entries: {replay.entries_in} in, {stats.processed} processed, {stats.dead_lettered} dead-lettered",
        "",
        "processed by type",
        table(["type", "count"], [[t, n] for t, n in by_type]),
        "",
        f"dead letters ({app.keys.dlq}): {len(dead)}",
        *([dlq_table(dead)] if dead else []),
        "",
        f"alerts ({app.keys.alerts}): {len(alerts)}",
        *([alerts_table(alerts), "", *alerts_list(alerts, replay.start_ms)] if alerts else []),
        "",
        f"decisions ({app.keys.decisions}): {len(decisions)} answers to {sum(sent.values())} orders sent"
        + (f" ({kinds})" if decisions else ""),
        *([decisions_table(decisions, accounts, replay.start_ms), *decisions_checks(decisions, sent)]
          if decisions else []),
        "",
        f"trading state at {clock_label(last.step.at_s)} (P:state:risk:trading; `navstream risk show`)",
        *trading_lines(await plugin_section(app, "risk"), replay.start_ms),
        "",
        f"NAV at {clock_label(last.step.at_s)} (P:state:nav:latest; `navstream nav` explains each)",
        nav_table(last.nav),
        "",
        f"source health at {clock_label(last.step.at_s)}",
        sources_table(last.sources),
    ]


# --- entry point ------------------------------------------------------------------------------


@contextmanager
def quiet_logs(level: int = logging.ERROR) -> Iterator[None]:
    """The table already shows alerts and dead letters; JSON logs of them would only clutter
    stderr (alerts not at all: the summary lists every one, critical ones too). Restored
    afterwards, so an embedding process keeps its own levels."""
    logger = logging.getLogger("navstream")
    alerts = logging.getLogger("navstream.alerts")
    previous, previous_alerts = logger.level, alerts.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    alerts.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)
        alerts.setLevel(previous_alerts)


def _header(app: App, backend: Backend, steps: Sequence[Step], start_ms: int, speed: float, fast: bool) -> list[str]:
    plugins = ", ".join(p.name for p in app.plugins.info) or "none"
    minutes = steps[-1].at_s / 60
    pace = "--fast, no pauses" if fast else f"speed {speed:g}x, at most {MAX_PAUSE_S:g} s per step"
    start = datetime.fromtimestamp(start_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    sources = list(dict.fromkeys(a.source for step in steps for a in step.attempts))
    return [
        f"navstream demo on {backend.label}, prefix {app.keys.prefix}",
        f"plugins: {plugins}",
        f"replaying {len(steps)} steps ({minutes:g} simulated minutes of a crypto desk) through the real "
        "consumer loop",
        *([f"source {', '.join(sources)} runs for real (`navstream ingest`'s code), answered by an in-process "
           "stub venue"] if sources else []),
        f"simulated clock starts {start}; {pace}",
    ]


def _footer(backend: Backend, prefix: str, removed: int | None) -> list[str]:
    if backend.real:
        return [f"removed the demo's {removed} keys under {prefix}:* from {backend.label}"]
    return [
        "Run it against a real Redis (it refuses a prefix already in use, and deletes its keys at "
        "the end):",
        f"  navstream demo --redis-url redis://127.0.0.1:6379/0 --prefix {prefix}",
        "A consumer with the demo's settings: navstream run --config config/demo.toml",
    ]


async def _play_all(
    app: App, clock: ManualClock, producer: aioredis.Redis, steps: Sequence[Step], start_ms: int,
    speed: float, fast: bool, emit: Callable[..., None], painter: Painter,
) -> None:
    """Startup, the live table row by row, shutdown, then the summary."""
    replay = Replay(app, clock, producer, start_ms, sources=any(step.attempts for step in steps))
    try:
        startup = await replay.start()
        if startup:
            emit(f"alerts at startup: {counted(startup)}", "")
        live = LiveTable(steps, painter)
        emit(live.header())
        previous: Step | None = None
        last: StepRow | None = None
        for step in steps:
            delay = pause_s(previous, step, speed, fast)
            if delay:
                await asyncio.sleep(delay)
            last = await replay.play(step)
            emit(live.row(last))
            previous = step
        await replay.stop()
    finally:
        await replay.aclose()
    assert last is not None  # load_scenario refuses an empty scenario
    emit("", painter.bold("summary"), *await summary(app, replay, last), "")


async def run_demo(
    redis_url: str | None, prefix: str | None, speed: float, fast: bool, out: TextIO | None = None
) -> int:
    """Replay the scenario and print the live table and the summary to ``out``; returns 0.

    Unexpected failures propagate: a demo that hides an error would show a healthy system.
    """
    if speed <= 0:
        raise ValueError(f"speed must be greater than 0, got {speed}")
    out = out or sys.stdout
    steps = load_scenario()
    settings = demo_settings(redis_url, prefix)
    backend = make_backend(settings, redis_url)
    # The risk gate's audit log of a demo is nobody's record: it goes to a directory of the
    # demo's own, deleted with it, never to the user's state directory.
    audit = tempfile.TemporaryDirectory(prefix="navstream-demo-audit-")
    settings = with_audit_dir(settings, audit.name)
    start_ms = SystemClock().now_ms() // 1000 * 1000
    clock = ManualClock(start_ms)

    def emit(*lines: str) -> None:
        out.write("\n".join(lines) + "\n")
        out.flush()

    with quiet_logs():
        app = App.create(settings, connect=backend.connect, clock=clock)
        producer = backend.connect(True)
        owned, removed = False, None
        try:
            if backend.real:
                await ensure_prefix_unused(producer, app.keys.prefix, backend.label)
            owned = True
            emit(*_header(app, backend, steps, start_ms, speed, fast), "")
            await _play_all(app, clock, producer, steps, start_ms, speed, fast, emit, Painter(out))
        finally:
            try:
                if owned and backend.real:
                    removed = await delete_prefix(producer, app.keys.prefix)
            finally:
                await producer.aclose()
                await app.aclose()
                audit.cleanup()
        emit(*_footer(backend, app.keys.prefix, removed))
    return 0

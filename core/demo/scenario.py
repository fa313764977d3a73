"""The demo's scenario: ``demo_scenario.jsonl`` parsed and checked, line by line.

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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Annotated, Any, cast

import msgspec

from navstream.config import SOURCES_SECTION
from navstream.contract.keys import Keys
from navstream.demo.settings import DEMO_CONFIG
from navstream.ingest.ratelimit import RETRY_AFTER_DEFAULT_S
from navstream.sources import SourceSettings

SCENARIO_FILE = "demo_scenario.jsonl"


class ScenarioError(ValueError):
    """The scenario is broken; the message names the line (or the step) and what to change."""


#: Source kinds the stub venue answers for: a source attempt must name a ``[sources.<name>]`` of
#: :data:`DEMO_CONFIG` of one of these kinds.
STUB_KINDS = frozenset({"coingecko"})


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
    return {
        name: StubSource(
            name,
            str(table.get("kind") or name),
            frozenset(dict(table.get("ids", {})).values()),
            float(table.get("timeout_s", default_timeout)),
        )
        for name, table in tables.items()
        if isinstance(table, dict)
    }


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
                raise ScenarioError(
                    f"{at}: neither a scripted event (with `type`) nor a source attempt (`source`, `answer`): {entry}"
                )
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
        raise ScenarioError(
            f"{where}: {attempt.source!r} is not a source the stub venue answers for (the demo "
            f"config's [sources.*] of kind {', '.join(sorted(STUB_KINDS))}: {known})"
        )
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
                raise ScenarioError(
                    f"{say}: {cg_id!r} is not one of the ids [sources.{source.name}.ids] asks "
                    f"({', '.join(sorted(source.ids))})"
                )
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


def _replay_blocks(
    step: Step, where: str, sources: Mapping[str, StubSource], blocked: dict[str, tuple[int, int]]
) -> None:
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
                    f"{clock_label(earliest)}, or to {clock_label(until)} or later"
                )
            if attempt.answer is not None:
                raise ScenarioError(
                    f"{where}: {name} asks nothing here: the 429 at {clock_label(since)} blocks its host until "
                    f'{clock_label(until)}; drop the `answer` (the source reports "rate limited" itself)'
                )
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


def clock_label(seconds: int) -> str:
    return f"T+{seconds // 60:02d}:{seconds % 60:02d}"

"""The replay: the real consumer driven through the scenario, and what it wrote read back from Redis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis

from navstream.app import App, ManualClock
from navstream.demo.scenario import ScenarioError, SourceAttempt, Step, clock_label, materialize, stream_for
from navstream.demo.stubs import DemoSources, SourceReport
from navstream.loop.consumer import Consumer
from navstream.plugin import calls

# --- what a step did --------------------------------------------------------------------------


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
    #: The nav plugin's quote currency, that :attr:`nav`'s values are in ("" without the plugin).
    quote: str = ""


# --- reading results back from Redis ----------------------------------------------------------


async def plugin_section(app: App, name: str) -> dict[str, Any] | None:
    """What plugin ``name`` shows in ``navstream status``; None when it is not loaded."""
    answer = await calls.call_plugin(app.pm, "navstream_status", name, {"app": app})
    if answer is None:
        return None
    if answer.exc is not None:
        raise answer.exc
    return dict(answer.value or {})


async def nav_rows(app: App) -> tuple[list[dict[str, Any]] | None, str]:
    """Every NAV scope as the nav plugin stored it (the demo never recomputes one), and the
    quote currency of their values ("" without the plugin)."""
    section = await plugin_section(app, "nav")
    if section is None:
        return None, ""
    return list(section.get("scopes", [])), str(section.get("quote", ""))


async def source_rows(app: App) -> list[SourceRow] | None:
    """Source health as ``source_monitor`` reports it to ``navstream status``; None without it."""
    section = await plugin_section(app, "source_monitor")
    if section is not None:
        return [
            SourceRow(
                s["venue"],
                s["source"],
                s["account"],
                "silent" if s["silent"] else ("ok" if s["ok"] else "FAIL"),
                s["age_s"],
                s["error"],
            )
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

    def __init__(
        self, app: App, clock: ManualClock, producer: aioredis.Redis, start_ms: int, sources: bool = True
    ) -> None:
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
                    raise ScenarioError(
                        f"{clock_label(step.at_s)}: {entry.source} runs, but this replay has no sources"
                    )
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
        scopes, quote = await nav_rows(self.app)
        return StepRow(step, written, raised, await source_rows(self.app), scopes, answers, reports, shown, quote)

    async def aclose(self) -> None:
        """Close the sources' HTTP clients."""
        if self.sources is not None:
            await self.sources.aclose()

    async def stop(self) -> None:
        """Final heartbeat and the plugins' shutdown hooks, as ``navstream run`` ends; errors
        propagate (the demo must show a plugin that cannot shut down cleanly)."""
        await self.consumer.tick(final=True)
        for answer in await calls.collect(self.app.pm, "navstream_shutdown", {"app": self.app}):
            if answer.exc is not None:
                raise answer.exc

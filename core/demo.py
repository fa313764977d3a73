"""``navstream demo``: a bundled trading-desk scenario replayed through the real consumer loop.

Why it exists: the quickest way to see what navstream does, how it behaves when sources fail,
and how the risk gate answers the trading engine's orders through it all, is to watch it process
a realistic feed, with no Redis to install. Nothing in the loop is simulated: entries go through
XADD, XREADGROUP, every loaded plugin, the writer and XACK exactly as in production. Only the
clock is (a :class:`ManualClock`), so ten desk minutes take seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Annotated, Any, Callable, Iterator, Mapping, Sequence, TextIO, cast

import fakeredis
import msgspec
import redis.asyncio as aioredis

from .admin import AdminError, dlq_list
from .app import App, Connect, ManualClock, SystemClock, default_connect
from .config import CORE_SECTIONS, Settings, load_settings, redact_url
from .consumer import Consumer
from .keys import Keys
from .pluginmanager import await_me_maybe, call_impl, hook_impls
from .render import table

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
max_future_ms = 300000

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


class ScenarioError(ValueError):
    """The bundled scenario file is broken; the message names the line."""


# --- scenario ---------------------------------------------------------------------------------


class Step(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One line of the scenario: what producers publish at ``at_s`` seconds after the start."""

    at_s: Annotated[int, msgspec.Meta(ge=0)]
    note: Annotated[str, msgspec.Meta(min_length=1)]
    entries: list[dict[str, str]]

    @property
    def at_ms(self) -> int:
        return self.at_s * 1000


def load_scenario(text: str | None = None) -> list[Step]:
    """Parse the scenario (the bundled file unless ``text`` is given), checking every line.

    :raises ScenarioError: a line that is not a step, time going backwards, or an entry whose
        ``ts_offset_s`` is missing or not a whole number of milliseconds.
    """
    if text is None:
        text = resources.files("navstream").joinpath(SCENARIO_FILE).read_text("utf-8")
    decoder = msgspec.json.Decoder(Step)
    steps: list[Step] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            step = decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise ScenarioError(f"{SCENARIO_FILE}:{number}: {exc}") from exc
        if steps and step.at_s < steps[-1].at_s:
            raise ScenarioError(f"{SCENARIO_FILE}:{number}: at_s {step.at_s} goes back in time")
        for entry in step.entries:
            _offset_ms(entry, f"{SCENARIO_FILE}:{number}")
        steps.append(step)
    if not steps:
        raise ScenarioError(f"{SCENARIO_FILE}: no steps")
    return steps


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

    Each step is one row; the alerts it raised and the risk gate's decisions follow on lines of
    their own under "what happens", so a row fits :data:`TERMINAL_WIDTH` however many there are.
    """

    HEADERS = ("time", "what happens", "in", "total NAV", "sources")
    #: Labels of the lines under a row, padded to this width.
    LABEL_WIDTH = len("decisions")

    def __init__(self, steps: Sequence[Step], painter: Painter) -> None:
        self.painter = painter
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
        return f"{' ' * self.note_at}{label:<{self.LABEL_WIDTH}}  {self.painter.paint(text, *words)}"

    def row(self, r: StepRow) -> str:
        health = venue_health(r.sources)
        nav = total_nav(r.nav)
        line = self._line([clock_label(r.step.at_s), r.step.note, str(r.entries_in), nav, health], 2)
        health_at = self.nav_at + max(NAV_WIDTH, len(nav)) + 2
        paint = self.painter.paint
        lines = [line[: self.nav_at]
                 + paint(line[self.nav_at: health_at], ("stale", "33"), ("partial", "33"), ("failed", "31"))
                 + paint(line[health_at:], ("FAIL", "31"), ("silent", "33"))]
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
    """Drives the real :class:`Consumer` through the scenario on a manual clock."""

    def __init__(self, app: App, clock: ManualClock, producer: aioredis.Redis, start_ms: int) -> None:
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

    async def start(self) -> list[str]:
        """Create the groups and run the startup hooks; returns the alerts raised doing so."""
        await self.consumer.setup()
        return [a.get("code", "?") for a in await self.alerts.new()]

    async def play(self, step: Step) -> StepRow:
        self.clock.advance(self.start_ms + step.at_ms - self.clock.now_ms())
        now = self.clock.now_ms()
        keys = self.app.keys
        entries = [materialize(entry, now) for entry in step.entries]
        # The ingestors' reports of a step come before the engine's orders (they are stamped
        # earlier): they are processed first, so the gate judges each order on the step's state.
        # Written together, one XREADGROUP could read both, and a batch judges its orders on the
        # state before its events (docs/risk.md).
        for stream in (keys.events, keys.orders):
            batch = [fields for fields in entries if stream_for(keys, fields) == stream]
            if not batch:
                continue
            pipe = self.producer.pipeline(transaction=False)
            for fields in batch:
                pipe.xadd(stream, cast("dict[Any, Any]", fields))
            await pipe.execute()
            while await self.consumer.step(block_ms=1):
                pass
        self.entries_in += len(entries)
        await self.consumer.reclaim()
        await self.consumer.tick()
        raised = [(a.get("code", "?"), a.get("severity", "")) for a in await self.alerts.new()]
        answers = []
        for fields in await self.decisions.new():
            order_id = fields.get("order_id", "")
            answers.append(Answer(fields, self.answered.get(order_id)))
            self.answered.setdefault(order_id, step.at_s)
        return StepRow(step, len(entries), raised, await source_rows(self.app), await nav_rows(self.app),
                       answers)

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
    return [
        f"navstream demo on {backend.label}, prefix {app.keys.prefix}",
        f"plugins: {plugins}",
        f"replaying {len(steps)} steps ({minutes:g} simulated minutes of a crypto desk) through the real "
        "consumer loop",
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
    replay = Replay(app, clock, producer, start_ms)
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
    extra = {**settings.extra, "risk": {**settings.extra.get("risk", {}), "audit_dir": audit.name}}
    settings = msgspec.structs.replace(settings, extra=extra)
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

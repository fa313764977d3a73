"""What the nav plugin reports through navstream's reporting hooks: the NAV per scope and its
history on the status page (and as ``nav`` and ``history`` in ``/api/status``), the
``navstream_nav_*`` families on ``/metrics``, and the stale-data rule of ``/readyz`` (only with
``[http] ready_on_stale_data = false``).

Every NAV is read as every reader reads it (:func:`~.valuation.as_read`): a stored ``ok`` past its
``fresh_until`` is ``stale`` at the time of the read, so the page, ``/readyz`` and ``/metrics``
never show a NAV fresher than its own age limit allows; the page is told when its ``ok`` runs
out, so that it turns ``stale`` by itself while it cannot reach the consumer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import RedisError

from navstream import (
    AppProtocol,
    Cell,
    Chart,
    Column,
    Metric,
    Panel,
    Row,
    StatusSection,
    Table,
    Text,
    Tone,
    format_money,
    gauge_family,
    hookimpl,
    scope_id,
)

from .config import NavConfig
from .readers import ReaderLimit, read_reader_limits, seconds
from .state import LATEST, decode_snapshot
from .valuation import Snapshot, as_read, money

#: ``P:nav`` entries read for the history chart (newest first), and points kept per scope.
HISTORY_ENTRIES = 1000
HISTORY_POINTS = 120
MAX_TEXT = 500
NAV_STATUSES = ("ok", "stale", "partial", "failed")
TONES: dict[str, Tone] = {"ok": "ok", "stale": "warning", "partial": "degraded", "failed": "critical"}
SCOPE_ORDER = {"total": 0, "exchange": 1, "venue": 2, "account": 3}
#: What the page says of an ``ok`` it re-judged itself (the consumer out of reach).
EXPIRED = "an input passed its age limit, and no newer answer has arrived (this page re-judged the last one)"
#: Characters of a scope's name shown in the table (the rest behind an ellipsis, the whole in its
#: tooltip), and of the first reason beside a status.
MAX_SCOPE = 32
MAX_REASON = 160


def _clip(text: Any, limit: int = MAX_TEXT) -> str:
    shown = str(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _shorten(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: its head and tail around an ellipsis, so two long
    account names of one venue stay apart."""
    if len(text) <= limit:
        return text
    tail = (limit - 1) // 3
    return text[: limit - 1 - tail] + "\u2026" + text[len(text) - tail :]


def scope_name(snap: Snapshot) -> str:
    if snap.scope == "account":
        return f"{snap.venue}/{snap.account}"
    return snap.venue if snap.scope == "venue" else snap.scope


@dataclass(frozen=True)
class Scope:
    """One member of ``P:state:nav:latest`` as read at one moment."""

    id: str
    snap: Snapshot
    #: The status the plugin stored (``snap.status`` is what a reader takes it for now).
    stored_status: str

    @property
    def name(self) -> str:
        return scope_name(self.snap)

    def as_json(self, now_ms: int) -> dict[str, Any]:
        s = self.snap
        return {
            "id": self.id,
            "scope": s.scope,
            "name": self.name,
            "label": s.label,
            "nav": money(s.nav),
            "quote": s.quote,
            "status": s.status,
            "stored_status": self.stored_status,
            "fresh_until": s.fresh_until or None,
            "as_of_age_s": round((now_ms - s.as_of) / 1000, 1) if s.as_of else None,
            "computed_age_s": round((now_ms - s.computed_at) / 1000, 1),
            "reasons": [_clip(r) for r in s.reasons[:5]],
        }


@dataclass
class Latest:
    """Every scope's latest NAV, as read at ``read_ms``, and the members that could not be read."""

    read_ms: int
    scopes: list[Scope] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    #: Declared reader limits (``P:state:nav:readers``) that could not be read.
    readers_unreadable: list[str] = field(default_factory=list)


async def read_scopes(app: AppProtocol, now_ms: int) -> Latest:
    raw = cast("dict[str, str]", await app.redis.hgetall(app.keys.state(*LATEST)))
    out = Latest(now_ms)
    for member, value in sorted(raw.items()):
        try:
            stored = decode_snapshot(member, value)
        except Exception as exc:  # noqa: BLE001 - one bad member is reported, the others shown
            out.unreadable.append(f"{member}: {type(exc).__name__}: {exc}")
            continue
        out.scopes.append(Scope(member, as_read(stored, now_ms), stored.status))
    out.scopes.sort(key=lambda s: (SCOPE_ORDER.get(s.snap.scope, 9), s.name))
    return out


async def read_history(
    app: AppProtocol, entries: int = HISTORY_ENTRIES, points: int = HISTORY_POINTS
) -> dict[str, list[list[Any]]]:
    """scope id -> ``[[computed_at, nav, status], ...]`` (oldest first) from the newest ``P:nav`` entries.

    ``P:nav`` holds every scope in one stream, so one ``XREVRANGE`` of the newest entries is
    split by scope: a scope published rarely has fewer points, never a costlier read.
    """
    rows = cast("list[tuple[str, dict[str, str]]]", await app.redis.xrevrange(app.keys.nav, count=entries))
    history: dict[str, list[list[Any]]] = {}
    for _, f in rows:
        sid = scope_id(f.get("scope", ""), f.get("venue", ""), f.get("account", ""))
        series = history.setdefault(sid, [])
        if len(series) >= points:
            continue
        try:
            at = int(f.get("computed_at") or 0)
            float(f["nav"])  # a chart point must be a number; the exact string is what is sent
        except (KeyError, ValueError):
            continue
        series.append([at, f["nav"], f.get("status", "")])
    for series in history.values():
        series.reverse()
    return history


def stale_data(latest: Latest, eval_limit_ms: int) -> list[str]:
    """What is stale in the desk's NAV, in words: scopes whose status as read now is ``stale``
    (stored so, or an ``ok`` past its ``fresh_until``), scopes nobody has evaluated for longer
    than ``eval_limit_ms`` (every tick re-evaluates every scope, so an old evaluation means no
    consumer is ticking this plugin), and members that cannot be read."""
    stale = []
    for scope in latest.scopes:
        snap = scope.snap
        age_ms = latest.read_ms - snap.computed_at
        if snap.status == "stale":
            why = snap.reasons[0] if snap.reasons else "an input is past its age limit"
            stale.append(f"NAV {scope.name} is stale: {why}")
        elif age_ms > eval_limit_ms:
            stale.append(
                f"NAV {scope.name} was last evaluated {age_ms / 1000:.0f}s ago "
                f"(limit {eval_limit_ms / 1000:.0f}s): no consumer is ticking the nav plugin"
            )
    stale += [f"NAV {item} is unreadable" for item in latest.unreadable]
    return stale


def _status_cell(scope: Scope, refused_by: list[tuple[ReaderLimit, int]]) -> Cell:
    """The status badge. An ``ok`` that a reader already refuses for its age is drawn in a
    warning tone, saying so; an ``ok`` turns ``stale`` on the page at its ``fresh_until``."""
    s = scope.snap
    title = "\n".join(s.reasons)
    if s.status != "ok":
        return Cell(s.status, badge="status", tone=TONES.get(s.status, "neutral"), title=title)
    refusals = [
        f"ok by its own age limit, but the {r.reader} refuses it: its age {seconds(age)} is past the "
        f"{r.reader}'s {seconds(r.max_age_ms)}"
        for r, age in refused_by
    ]
    return Cell(
        "ok",
        badge="status",
        tone="warning" if refusals else "ok",
        title="\n".join([*refusals, *s.reasons]),
        expires_ms=s.fresh_until,
        expired=Cell("stale", badge="status", tone="warning", title=EXPIRED),
    )


def _why_cell(scope: Scope) -> Cell:
    """The first reason of a status that is not ``ok`` (all of them in the tooltip); for an
    ``ok``, what the page will say once it passes its ``fresh_until`` unanswered."""
    s = scope.snap
    if s.status != "ok":
        first = s.reasons[0] if s.reasons else ""
        return Cell(_shorten(first, MAX_REASON), wrap=True, title=_clip("\n".join(s.reasons)))
    return Cell("", wrap=True, expires_ms=s.fresh_until, expired=Cell(_shorten(EXPIRED, MAX_REASON), wrap=True))


def _reader_cell(reader: ReaderLimit, snap: Snapshot, now_ms: int) -> Cell:
    """What ``reader`` does with this NAV: its limit, or that it refuses an ``ok`` NAV past it
    (drawn so from that moment on by the page itself)."""
    if not reader.reads(snap):
        return Cell("-", title=f"the {reader.reader} does not read {snap.scope} NAVs")
    limit = seconds(reader.max_age_ms)
    title = (
        f"the {reader.reader} vetoes an order on this NAV once its oldest input or its evaluation "
        f"is older than {limit}, and whenever its status is not ok"
    )
    refusing = Cell(f"refuses it: older than {limit}", badge="reader", tone="warning", title=title)
    if snap.status == "ok" and reader.refuses(snap, now_ms):
        return refusing
    plain = Cell(f"vetoes at age > {limit}", title=title)
    if snap.status != "ok":
        return plain
    return Cell(plain.text, title=title, expires_ms=reader.refused_from(snap), expired=refusing)


def _row(scope: Scope, now_ms: int, readers: list[ReaderLimit]) -> Row:
    s = scope.snap
    full = scope.name + (f" ({s.label})" if s.label else "")
    refused_by = [(r, r.age_ms(s, now_ms)) for r in readers if r.refuses(s, now_ms)]
    return Row(
        key=scope.id,
        label=scope.name,
        cells=[
            Cell(_shorten(full, MAX_SCOPE), title=full if len(full) > MAX_SCOPE else ""),
            Cell(format_money(s.nav, s.quote), num=True),
            _status_cell(scope, refused_by),
            _why_cell(scope),
            Cell(ago=True, age_s=round((now_ms - s.as_of) / 1000, 1) if s.as_of else None, num=True),
            Cell(ago=True, age_s=round((now_ms - s.computed_at) / 1000, 1), num=True),
            *(_reader_cell(r, s, now_ms) for r in readers),
        ],
    )


def panels(
    latest: Latest,
    history: dict[str, list[list[Any]]],
    error: str = "",
    readers: list[ReaderLimit] | None = None,
    unit: str = "",
    max_gap_ms: int = 0,
) -> list[Panel]:
    """The NAV table and its chart; ``readers``: the limits readers declared that count now,
    one column each (none declared: no column, nothing invented). ``unit``: the quote currency
    the chart's money is in; ``max_gap_ms``: a longer time without a point is drawn as a gap."""
    now = latest.read_ms
    readers = readers or []
    table = Table(
        id="nav-table",
        columns=[
            Column("scope"),
            Column("NAV", num=True),
            Column("status"),
            Column("why"),
            Column("inputs age", num=True),
            Column("evaluated", num=True),
            *(Column(r.reader) for r in readers),
        ],
        rows=[_row(s, now, readers) for s in latest.scopes],
        select=True,
        default_key="total",
        empty="" if error else "No NAV computed yet (P:state:nav:latest is empty).",
    )
    notes: list[Any] = [Text(f"NAV {item} is unreadable", error=True) for item in latest.unreadable[:5]]
    notes += [
        Text(f"A reader's declared NAV age limit is unreadable: {item}", error=True)
        for item in latest.readers_unreadable[:5]
    ]
    if error:
        notes.append(Text(f"The NAV could not be read: {error}", error=True))
    # A failed NAV's value is a placeholder, not a NAV: sent as no value, so it is a gap.
    series = {
        sid: [
            (int(at), None if status == "failed" else str(nav), TONES.get(status, "neutral"))
            for at, nav, status in points
        ]
        for sid, points in history.items()
    }
    return [
        Panel(id="nav-section", title="NAV per scope", blocks=[table, *notes]),
        Panel(
            id="chart-section",
            title="",
            blocks=[
                Chart(
                    id="chart",
                    table="nav-table",
                    title="NAV history",
                    series=cast("Any", series),
                    unit=unit,
                    max_gap_ms=max_gap_ms,
                    tone_labels={TONES[status]: status for status in NAV_STATUSES},
                ),
                Text("From the newest entries of P:nav; click a scope to chart it.", muted=True),
            ],
        ),
    ]


class NavReport:
    """The nav plugin's reporting hook implementations, mixed into its plugin class."""

    @hookimpl
    async def navstream_status_page(self, app: AppProtocol, now_ms: int) -> StatusSection:
        try:
            navcfg = app.plugin_config("nav", NavConfig)
        except KeyError:  # an app built with this report alone: the chart keeps its defaults
            navcfg = NavConfig()
        error = ""
        latest, history = Latest(now_ms), {}
        readers: list[ReaderLimit] = []
        try:
            latest = await read_scopes(app, now_ms)
            history = await read_history(app)
            readers, latest.readers_unreadable = await read_reader_limits(app, now_ms)
        except (RedisError, OSError) as exc:  # Redis out of reach: the page says why, with no rows
            error = f"{type(exc).__name__}: {exc}"
        return StatusSection(
            panels=panels(
                latest,
                history,
                error,
                readers,
                unit=navcfg.quote,
                # three publish periods without a point: nothing was published then
                max_gap_ms=int(3 * navcfg.publish_every_s * 1000),
            ),
            fields={"nav": [s.as_json(now_ms) for s in latest.scopes], "history": history},
        )

    @hookimpl
    async def navstream_metrics(self, app: AppProtocol, now_ms: int) -> list[Metric]:
        latest = await read_scopes(app, now_ms)
        value = gauge_family(
            "navstream_nav_value",
            "Latest NAV of each scope in its quote currency (a float: the exact decimal is in P:state:nav:latest).",
            ["scope", "quote"],
        )
        age = gauge_family("navstream_nav_age_seconds", "Age of the oldest input the scope's NAV rests on.", ["scope"])
        evaluated = gauge_family(
            "navstream_nav_evaluation_age_seconds",
            "Time since the scope's NAV was last evaluated (every tick while a consumer runs the nav plugin).",
            ["scope"],
        )
        status = gauge_family(
            "navstream_nav_status",
            "1 for the scope's current NAV status (ok, stale, partial, failed), 0 for the others.",
            ["scope", "status"],
        )
        for scope in latest.scopes:
            s = scope.snap
            value.add_metric([scope.id, s.quote], float(s.nav))
            if s.as_of:
                age.add_metric([scope.id], (now_ms - s.as_of) / 1000)
            evaluated.add_metric([scope.id], (now_ms - s.computed_at) / 1000)
            for name in NAV_STATUSES:
                status.add_metric([scope.id, name], 1 if s.status == name else 0)
        return [value, age, evaluated, status]

    @hookimpl
    async def navstream_readiness(self, app: AppProtocol, now_ms: int, ready_on_stale_data: bool) -> list[str]:
        if ready_on_stale_data:
            return []
        return stale_data(await read_scopes(app, now_ms), app.settings.consumer.heartbeat_ttl_ms)

"""Built-in plugin ``firestore``: the desk's dashboards, fed from navstream's state, and honest
about being broken.

Off unless ``[firestore] enabled = true``; then it refuses to start without a namespace
(``env``), with ``prod`` but no ``allow_prod``, without the package, without credentials, or
when a first read and write to the project fail. Every tick (never waiting on Firestore):

- the lease decides which consumer of the group writes the shared documents; that one offers
  the latest NAV of every scope (``nav/``), every trading record (``risk/``) and, optionally,
  the NAV history (``nav_history/``);
- every consumer offers its own heartbeat (``heartbeats/<consumer>``) every
  ``heartbeat_every_s``, and at once when its status changes;
- failures and a low budget are alerted (``firestore_write_failed``, ``firestore_budget_low``,
  ``firestore_recovered``), and the health report says ``degraded`` with the reason.

The writing itself (coalescing, pacing, batching, retries) is :mod:`.sink`'s background task.
See docs/firestore.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from navstream import AppProtocol, Outputs, RegisterCommand, RegisterSection, hookimpl
from navstream.plugins.nav.api import Snapshot, read_latest
from navstream.plugins.risk.api import read_records

from . import commands
from .client import (
    DryRunStore,
    FirestoreStore,
    credentials,
    import_firestore,
    make_client,
)
from .config import FirestoreConfig, Target, resolve_target
from .coordination import Coordination
from .documents import (
    history_bucket,
    history_delete,
    history_document,
    history_index_key,
    with_data,
)
from .heartbeat import heartbeat_document, read_consumer_health, read_sources
from .report import FirestoreReport
from .sink import COMMIT_TIMEOUT_S, LOW_BUDGET, Sink, iso, utc_day
from .sync import shared_documents

SECTION = "firestore"
#: Shutdown waits this long for what may still be written.
FLUSH_TIMEOUT_S = 10.0
#: The lease is trusted locally for this share of its TTL after a renewal was sent.
LEASE_TRUST = 0.5

log = logging.getLogger("navstream.firestore")


def config(app: AppProtocol) -> FirestoreConfig:
    return app.plugin_config(SECTION, FirestoreConfig)


@dataclass
class Running:
    """The sink of one consumer, and what its ticks remember."""

    cfg: FirestoreConfig
    target: Target
    sink: Sink
    coordination: Coordination
    holder: str = ""
    #: Heartbeat: when last offered (clock ms), and the status it said.
    heartbeat_ms: int = 0
    heartbeat_said: tuple[str, ...] = ()
    sources: list[dict[str, Any]] = field(default_factory=list)
    #: History: the interval last offered.
    history_bucket: int = -1
    #: The failure run already alerted (its start, ms), for the recovery alert.
    alerted_failure: int = 0


def lease_ttl_ms(app: AppProtocol) -> int:
    """As long as the consumer's heartbeat lives: a consumer that stopped ticking loses both."""
    return app.settings.consumer.heartbeat_ttl_ms


async def start(app: AppProtocol, cfg: FirestoreConfig) -> Running:
    """The sink started after a first read and write proved the project works."""
    target = resolve_target(cfg, os.environ)
    coordination = Coordination(app)
    now = app.clock.now_ms()
    if cfg.dry_run:
        sink = Sink(cfg, DryRunStore(target), None, app.clock)
        log.warning(
            "firestore sink in dry run: documents are logged, nothing is written",
            extra={"event": "firestore_dry_run_started", "project": target.project, "path": target.base},
        )
    else:
        firestore = import_firestore()
        creds, where = await asyncio.to_thread(credentials, os.environ)
        store = FirestoreStore(
            firestore, make_client(firestore, target.project, creds), target, app.consumer_name, COMMIT_TIMEOUT_S
        )
        sink = Sink(cfg, store, coordination, app.clock)
        first = heartbeat_document(
            app, target, sink, now, "starting", [("starting", "starting: no write confirmed yet")], []
        )
        try:
            await store.probe(first)
        except BaseException:
            await store.aclose()
            raise
        await sink.confirmed(first)
        log.info(
            "firestore sink started",
            extra={"event": "firestore_started", "project": target.project, "path": target.base, "credentials": where},
        )
    sink.start()
    return Running(cfg, target, sink, coordination)


async def on_tick(app: AppProtocol, run: Running, now_ms: int, out: Outputs) -> None:
    sink = run.sink
    day, _ = utc_day(now_ms)
    sent = time.monotonic()
    held, run.holder, used = await run.coordination.renew(day, lease_ttl_ms(app))
    if sink.lease(held, lease_ttl_ms(app) / 1000 * LEASE_TRUST, sent):
        log.warning(
            "firestore lease lost: another consumer writes the shared documents",
            extra={"event": "firestore_lease_lost", "holder": run.holder},
        )
    sink.observe_used(day, used)
    await _heartbeat(app, run, now_ms)
    _alerts(app, run, now_ms, out)
    if held:
        await _shared(app, run, now_ms)


async def _heartbeat(app: AppProtocol, run: Running, now_ms: int, consumer_status: str = "running") -> None:
    """Offer this consumer's heartbeat when it is due, or when its status changed."""
    problems = run.sink.problems(now_ms)
    health, reasons = await read_consumer_health(app)
    said = tuple(code for code, _ in problems) + (("consumer",) if health != "ok" else ())
    due = now_ms - run.heartbeat_ms >= run.cfg.heartbeat_every_s * 1000
    if not due and said == run.heartbeat_said:
        return
    run.sources = await read_sources(app)
    if health != "ok":
        problems = [*problems, ("consumer", f"consumer health degraded: {reasons}")]
    run.sink.offer(heartbeat_document(app, run.target, run.sink, now_ms, consumer_status, problems, run.sources))
    run.heartbeat_ms, run.heartbeat_said = now_ms, said


def _alerts(app: AppProtocol, run: Running, now_ms: int, out: Outputs) -> None:
    s, cfg = run.sink.stats, run.cfg
    if s.failing_since_ms:
        out.alert(
            "firestore_write_failed",
            "critical",
            f"Firestore writes of consumer {app.consumer_name} to {run.target.project}/{run.target.base} "
            f"failing since {iso(s.failing_since_ms)} ({s.consecutive_failures} attempts, retried with "
            f"backoff; {len(run.sink.pending)} documents waiting; the dashboards show older data): "
            f"{s.last_failure}",
            subject=app.consumer_name,
            version=str(s.failing_since_ms),
            every_s=cfg.alert_every_s,
        )
        run.alerted_failure = s.failing_since_ms
    elif run.alerted_failure:
        out.alert(
            "firestore_recovered",
            "info",
            f"Firestore writes of consumer {app.consumer_name} succeed again (failing since "
            f"{iso(run.alerted_failure)})",
        )
        run.alerted_failure = 0
    if run.sink.budget_low(now_ms):
        used, budget = run.sink.used_now(now_ms), cfg.max_writes_per_day
        over = used >= budget
        day, _ = utc_day(now_ms)
        out.alert(
            "firestore_budget_low",
            "critical" if over else "warning",
            f"{used} of the {budget} Firestore writes a day are used ({day}, UTC; at least "
            f"{LOW_BUDGET:.0%}): only significant changes (NAV status, missing or stale inputs, moves over "
            f"{cfg.significant_move_pct:g}%, trading state) and heartbeats are written until the day ends"
            + ("; over the budget, Firestore may refuse or bill them" if over else ""),
            subject=run.target.base,
            version=f"{day}|{'over' if over else 'low'}",
            every_s=cfg.alert_every_s,
        )


async def _shared(app: AppProtocol, run: Running, now_ms: int) -> None:
    """The leader's part: the latest NAV and trading records, and the history."""
    latest = await read_latest(app)
    records = await read_records(app)
    for doc in shared_documents(latest, records, now_ms):
        run.sink.offer(doc)
    if run.cfg.history_every_s:
        await _history(app, run, latest, now_ms)


async def _history(app: AppProtocol, run: Running, latest: Mapping[str, Snapshot], now_ms: int) -> None:
    bucket = history_bucket(now_ms, run.cfg.history_every_s)
    if bucket == run.history_bucket:
        return
    run.history_bucket = bucket
    scopes = []
    for snap in with_data(latest):
        run.sink.offer(history_document(snap, bucket, now_ms))
        scopes.append(snap.scope_id)
    if not scopes:
        return
    # Each scope keeps the newest `history_keep - 1` written (as recorded once written) and the
    # one just offered; the rest goes.
    pipe = app.redis.pipeline(transaction=False)
    for scope in scopes:
        pipe.zrange(app.keys.state(history_index_key(scope)), 0, -run.cfg.history_keep)
    for scope, old in zip(scopes, await pipe.execute()):
        for doc_id in old:
            run.sink.offer(history_delete(scope, doc_id))


async def stop(app: AppProtocol, run: Running) -> None:
    now = app.clock.now_ms()
    run.sink.offer(heartbeat_document(app, run.target, run.sink, now, "stopped", run.sink.problems(now), run.sources))
    left = await run.sink.close(FLUSH_TIMEOUT_S)
    try:
        await run.coordination.release()
    except Exception as exc:  # noqa: BLE001 - shutting down: the lease expires anyway; say so and go on
        log.warning(
            "could not hand over the firestore lease", extra={"event": "firestore_release_failed", "error": str(exc)}
        )
    log.info(
        "firestore sink stopped",
        extra={
            "event": "firestore_stopped",
            "writes": run.sink.stats.writes,
            "failures": run.sink.stats.failures,
            "unwritten": left,
        },
    )


class FirestorePlugin(FirestoreReport):
    """The plugin object: one per application; ``run`` is its sink while one runs."""

    def __init__(self) -> None:
        self.run: Running | None = None

    @hookimpl
    def navstream_config_sections(self, register: RegisterSection) -> None:
        register(SECTION, FirestoreConfig)

    @hookimpl
    async def navstream_startup(self, app: AppProtocol) -> None:
        cfg = config(app)
        if not cfg.enabled:
            return
        held, self.run = self.run, None
        if held is not None:  # startup is run again (Redis went away during it): one sink only
            await held.sink.close(0)
        self.run = await start(app, cfg)

    @hookimpl
    async def navstream_tick(self, app: AppProtocol, now_ms: int, out: Outputs) -> None:
        if self.run is not None:
            await on_tick(app, self.run, now_ms, out)

    @hookimpl
    async def navstream_shutdown(self, app: AppProtocol) -> None:
        run, self.run = self.run, None
        if run is not None:
            await stop(app, run)

    @hookimpl
    def navstream_health(self, app: AppProtocol) -> Mapping[str, Any] | None:
        if self.run is None:
            return None
        report = self.run.sink.health(app.clock.now_ms())
        report["holder"] = self.run.holder
        return report

    @hookimpl
    async def navstream_status(self, app: AppProtocol) -> Mapping[str, Any]:
        return await commands.status(app, config(app))

    @hookimpl
    def navstream_commands(self, register: RegisterCommand) -> None:
        commands.register_commands(register)

"""bench_risk's responders, each in its own subprocess: the raw baseline, and navstream as
``navstream run`` runs it (with ``--spans``, its loop instrumented)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import msgspec
from common import builtin_plugins
from risk_load import GROUP, NAV_CONFIG, RISK_CONFIG


def _install_stop(loop: asyncio.AbstractEventLoop, stop: Any) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)


async def worker_baseline(url: str, prefix: str) -> dict[str, Any]:
    """redis-py asyncio + hiredis: XREADGROUP on both streams; a fixed approve per order; XACK."""
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:
        raise SystemExit("baseline: hiredis is not installed; the baseline must use it")
    events, orders, decisions = f"{prefix}:events", f"{prefix}:orders", f"{prefix}:decisions"
    r = aioredis.Redis.from_url(url, decode_responses=False)
    stopping = asyncio.Event()
    _install_stop(asyncio.get_running_loop(), stopping.set)
    answered = acked = batches = 0
    try:
        for stream in (events, orders):
            try:
                await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        print("READY", flush=True)
        while not stopping.is_set():
            response: Any = await r.xreadgroup(GROUP, "baseline", {events: ">", orders: ">"}, count=500, block=1000)
            if not response:
                continue
            pipe = r.pipeline(transaction=False)
            now = str(time.time_ns() // 1_000_000)
            for stream, items in response:
                ids = [entry_id for entry_id, _ in items]
                if stream == orders.encode():
                    for _, fields in items:
                        pipe.xadd(
                            decisions,
                            {
                                b"order_id": fields[b"order_id"],
                                b"decision": b"approve",
                                b"reasons": b"",
                                b"trading_state": b"active",
                                b"nav": b"0",
                                b"nav_status": b"ok",
                                b"nav_age_ms": b"0",
                                b"ts": now,
                            },
                            maxlen=100_000,
                            approximate=True,
                        )
                    answered += len(items)
                pipe.xack(stream, GROUP, *ids)
                acked += len(ids)
            await pipe.execute()
            batches += 1
    finally:
        await r.aclose()
    return {"side": "baseline", "acked": acked, "answered": answered, "batches": batches}


class Spans:
    """Timing spans of the navstream loop (``--spans``), on ``perf_counter_ns``: CLOCK_MONOTONIC,
    the same clock in every process of this machine, so the driver can line them up with the
    moments it sent each order and received its decision."""

    def __init__(self) -> None:
        #: [read issued, handling started, events hook done, orders hook done, written,
        #:  n events, n orders, [order ids]], one per batch handled: where the handler splits a
        #: read into its orders and its events (``BatchHandler._handle``), one per part.
        self.batches: list[list[Any]] = []
        #: [kind, start, end]: ticks and reclaims
        self.other: list[list[Any]] = []
        #: [start, end] of each orders hook's state read (read_batch_state)
        self.state_reads: list[list[int]] = []

    def install(self, consumer: Any) -> None:
        """Subscribe to the loop's observer (``navstream.loop.observer``): each read, each part of a
        batch (started, its plugins done, written), each tick and reclaim. Only the risk gate's own
        state read is timed by wrapping it: a plugin's inside is not the loop's to report."""
        import navstream.plugins.risk as risk_mod

        spans = self
        original_read = risk_mod.read_batch_state
        #: When the last read of each kind was issued: the loop's (``read``) and, in role all,
        #: its orders lane's (``read_orders``), which run side by side.
        read_issued = {"read": 0, "read_orders": 0}
        current: dict[int, list[Any]] = {}  # parts in flight, by their entries (the two may interleave)

        async def read_batch_state(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            result = await original_read(*args, **kwargs)
            spans.state_reads.append([t0, time.perf_counter_ns()])
            return result

        def on_work(work: Any) -> None:
            if work.kind in read_issued:
                read_issued[work.kind] = work.started_ns
            else:
                spans.other.append([work.kind, work.started_ns, work.ended_ns])

        def on_part(moment: Any) -> None:
            key = id(moment.entries)
            if moment.phase == "started":
                entries = moment.entries
                orders = [e.fields.get(b"order_id", b"").decode() for e in entries if e.stream.endswith(":orders")]
                lane = "read_orders" if len(orders) == len(entries) and read_issued["read_orders"] else "read"
                events = len(entries) - len(orders)
                current[key] = [read_issued[lane], moment.at_ns, 0, 0, 0, events, len(orders), orders]
            elif key in current and moment.phase == "dispatched":
                current[key][2 if moment.hook == "navstream_events" else 3] = moment.at_ns
            elif key in current:
                part = current.pop(key)
                part[4] = moment.at_ns
                spans.batches.append(part)

        consumer.observer.on_work(on_work)
        consumer.observer.on_part(on_part)
        risk_mod.read_batch_state = read_batch_state

    def dump(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(
                msgspec.json.encode({"batches": self.batches, "other": self.other, "state_reads": self.state_reads})
            )


def risk_gate(app: Any) -> Any:
    """The risk plugin's gate, whose counters and audit log the report reads: the plugin is an
    instance per app, and its gate is open from startup to shutdown."""
    return getattr(app.plugin("risk"), "gate", None)


async def worker_navstream(
    url: str,
    prefix: str,
    audit_dir: str,
    spans_path: str | None,
    role: str = "all",
    cluster: bool = False,
    nav_eval_ms: int | None = None,
) -> dict[str, Any]:
    """What ``navstream run --role ROLE`` does, until SIGTERM."""
    from navstream.app import App
    from navstream.config import load_settings
    from navstream.logs import setup_logging, stop_logging
    from navstream.loop.consumer import Consumer

    spans = Spans() if spans_path else None

    class BenchConsumer(Consumer):
        gate: Any = None

        async def setup(self) -> None:
            await super().setup()
            self.gate = risk_gate(self.app)  # the shutdown hook pops it: kept for the report
            print("READY", flush=True)

    setup_logging("INFO")  # as `navstream run` does: JSON lines on stderr, through a queue
    overrides: dict[str, Any] = {"redis": {"url": url, "prefix": prefix, "group": GROUP, "cluster": cluster}}
    if role != "all":
        overrides["consumer"] = {"role": role}
    settings = load_settings(env={}, overrides=overrides)
    settings = msgspec.structs.replace(
        settings,
        extra={
            "nav": {**NAV_CONFIG, **({} if nav_eval_ms is None else {"eval_interval_ms": nav_eval_ms})},
            "risk": {**RISK_CONFIG, "audit_dir": audit_dir},
        },
    )
    app = App.create(settings)
    plugins = sorted(p.name for p in app.plugins.info)
    installed, declared = builtin_plugins()
    if set(plugins) != installed or not declared <= installed or "risk" not in plugins:
        await app.aclose()
        raise SystemExit(
            f"navstream: loaded plugins {plugins}, installed entry points {sorted(installed)}, "
            f"pyproject.toml declares {sorted(declared)}; every built-in plugin must run, the risk gate "
            "included (unset NAVSTREAM_PLUGINS; after adding an entry point, `pip install -e .` again)"
        )
    consumer = BenchConsumer(app)
    if spans is not None:
        spans.install(consumer)
    _install_stop(asyncio.get_running_loop(), consumer.request_stop)
    try:
        code = await consumer.run()
    finally:
        await app.aclose()
        stop_logging()
    if spans is not None and spans_path:
        spans.dump(spans_path)
    stats = app.stats
    gate = consumer.gate
    audit = gate.audit.stats if gate is not None else None
    return {
        "side": "navstream",
        "role": role,
        "exit": code,
        "processed": stats.processed,
        "by_type": dict(stats.by_type),
        "batches": stats.batches,
        "dead_lettered": stats.dead_lettered,
        "failed": stats.failed,
        "plugin_errors": stats.plugin_errors,
        "write_failures": stats.write_failures,
        "reconnects": stats.reconnects,
        "plugins": plugins,
        "decided": dict(gate.decided) if gate is not None else {},
        "audit": {
            "written": audit.written,
            "dropped": audit.dropped,
            "failed": audit.failed,
            "path": str(gate.audit.path),
        }
        if audit is not None
        else {},
    }

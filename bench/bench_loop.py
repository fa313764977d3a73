"""Throughput of the navstream loop against a raw redis-py consumer, on a real Redis.

    python bench/bench_loop.py [--events 100000] [--redis-url redis://127.0.0.1:6379/0] [--repeat 3]
                               [--nav-eval-ms N]

Each repeat XADDs the same generated event mix into two fresh streams and times each side in its
own subprocess (so peak memory is per side), alternating which side goes first:

- ``baseline``: redis-py asyncio + hiredis, ``XREADGROUP COUNT 500``, every entry decoded with
  ``navstream.contract.events.decode_event`` (the loop's own msgspec decoder), one ``XACK`` per batch;
- ``navstream``: what ``navstream run`` does (``App.create`` with every built-in plugin from the
  entry points, ``Consumer.run``, JSON logging through its queue), ``batch_size`` 500, stopped
  by ``max_events``. nav runs with loop_mix's ``[nav]`` section; ``--nav-eval-ms N`` sets its
  ``eval_interval_ms`` (default: loop_mix's, 100; 0 evaluates every NAV in every batch), so both
  can be measured in one sitting.

Both are timed from the first read to the moment the last entry is acknowledged; startup (group
creation, plugin startup hooks) and shutdown are outside the window. Prints the median rate of
each side, their ratio and the peak RSS of each, and exits 1 if the ratio is under the bar (0.5)
(with ``--check``, CI's smoke run, only if a run broke: events lost, dead-lettered or left pending,
a plugin failed).
Every key it creates lives under ``nsbench-<random>`` and is deleted at the end.

``--profile FILE`` instead runs the navstream side once under cProfile, writes the stats to FILE
and prints the top functions (rates under a profiler mean nothing; no bar is checked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import msgspec
from common import builtin_plugins, delete_matching, machine, maxrss_kb, mb, rss_kb, side_order, worker_env
from loop_mix import NAV_CONFIG, fill_stream, generate_events

BAR = 0.5
AIM = 0.7
GROUP = "bench"
BATCH = 500


# --- the two sides (each in its own subprocess) -------------------------------------------------


async def worker_baseline(url: str, stream: str, n: int) -> dict[str, Any]:
    """redis-py asyncio + hiredis: XREADGROUP COUNT 500, decode each entry with msgspec, XACK."""
    import redis.asyncio as aioredis
    from redis.utils import HIREDIS_AVAILABLE

    from navstream.contract.events import decode_event

    if not HIREDIS_AVAILABLE:
        raise SystemExit("baseline: hiredis is not installed; the baseline must use it")
    rss_start = rss_kb()
    r = aioredis.Redis.from_url(url, decode_responses=False)
    try:
        await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
        acked = 0
        decoded = 0
        batches = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        while acked < n:
            response = await r.xreadgroup(GROUP, "baseline", {stream: ">"}, count=BATCH, block=100)
            for _stream, items in response or ():
                ids = []
                for entry_id, fields in items:
                    decode_event(fields)
                    decoded += 1
                    ids.append(entry_id)
                if ids:
                    acked += await r.xack(stream, GROUP, *ids)
                    batches += 1
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        pending = (await r.xpending(stream, GROUP))["pending"]
    finally:
        await r.aclose()
    if acked != n or decoded != n or pending:
        raise SystemExit(f"baseline: acked {acked}, decoded {decoded}, pending {pending}; expected {n}, {n}, 0")
    return {
        "side": "baseline",
        "events": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "cpu_us_per_event": cpu / n * 1e6,
        "batches": batches,
        "rss_start_kb": rss_start,
        "maxrss_kb": maxrss_kb(),
    }


async def worker_navstream(url: str, prefix: str, n: int, nav_eval_ms: int | None = None) -> dict[str, Any]:
    """What ``navstream run --max-events N`` does, timed from the first read to the last ack."""
    from navstream.app import App
    from navstream.config import load_settings
    from navstream.logs import setup_logging, stop_logging
    from navstream.loop.consumer import Consumer

    class TimedConsumer(Consumer):
        first_read: float | None = None
        done: float | None = None
        cpu: float = 0.0

        async def step(self, block_ms: int | None = None) -> int:
            if self.first_read is None:
                self.first_read = time.perf_counter()
                self.cpu = -time.process_time()
            got = await super().step(block_ms)
            stats = self.app.stats
            if self.done is None and stats.processed + stats.dead_lettered >= n:
                self.done = time.perf_counter()
                self.cpu += time.process_time()
            return got

    rss_start = rss_kb()
    setup_logging("INFO")  # as `navstream run` does: JSON lines on stderr, through a queue
    settings = load_settings(
        env={},
        overrides={
            "redis": {"url": url, "prefix": prefix, "group": GROUP},
            "consumer": {"batch_size": BATCH},
        },
    )
    nav = dict(NAV_CONFIG) if nav_eval_ms is None else {**NAV_CONFIG, "eval_interval_ms": nav_eval_ms}
    settings = msgspec.structs.replace(settings, extra={"nav": nav})
    app = App.create(settings)
    plugins = sorted(p.name for p in app.plugins.info)
    installed, declared = builtin_plugins()
    if set(plugins) != installed or not declared <= installed:
        await app.aclose()
        raise SystemExit(
            f"navstream: loaded plugins {plugins}, installed entry points {sorted(installed)}, "
            f"pyproject.toml declares {sorted(declared)}; every built-in plugin must run "
            "(unset NAVSTREAM_PLUGINS; after adding an entry point, `pip install -e .` again)"
        )
    try:
        consumer = TimedConsumer(app, until_idle_s=10.0, max_events=n)
        run_started = time.perf_counter()
        code = await consumer.run()
        run_wall = time.perf_counter() - run_started
        stats = app.stats
        keys = app.keys
        pending = (await app.raw.xpending(keys.events, GROUP))["pending"]
        dlq = await app.raw.xlen(keys.dlq)
        alerts = await app.raw.xlen(keys.alerts)
    finally:
        await app.aclose()
        stop_logging()
    problems = []
    if code != 0:
        problems.append(f"exit code {code}")
    if stats.processed != n:
        problems.append(f"processed {stats.processed} of {n}")
    if stats.dead_lettered or dlq:
        problems.append(f"{stats.dead_lettered} dead-lettered ({dlq} on {keys.dlq})")
    if stats.plugin_errors or stats.failed:
        problems.append(f"{stats.plugin_errors} plugin errors, {stats.failed} failed entries")
    if pending:
        problems.append(f"{pending} still pending")
    if consumer.first_read is None or consumer.done is None:
        problems.append("the timing window never closed")
    if problems:
        raise SystemExit("navstream: " + "; ".join(problems))
    elapsed = consumer.done - consumer.first_read  # type: ignore[operator]
    return {
        "side": "navstream",
        "events": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "cpu_us_per_event": consumer.cpu / n * 1e6,
        "run_wall_s": run_wall,
        "batches": stats.batches,
        "alerts": alerts,
        "plugins": plugins,
        "nav_eval_ms": nav["eval_interval_ms"],
        "rss_start_kb": rss_start,
        "maxrss_kb": maxrss_kb(),
    }


def run_worker(args: argparse.Namespace) -> int:
    if args.worker == "baseline":
        result = asyncio.run(worker_baseline(args.redis_url, args.stream, args.events))
    elif args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(
            asyncio.run, worker_navstream(args.redis_url, args.prefix, args.events, args.nav_eval_ms)
        )
        profiler.dump_stats(args.profile)
    else:
        result = asyncio.run(worker_navstream(args.redis_url, args.prefix, args.events, args.nav_eval_ms))
    print(json.dumps(result), flush=True)
    return 0


# --- the driver -------------------------------------------------------------------------------


def _spawn(args: argparse.Namespace, side: str, target: str, profile: str | None = None) -> dict[str, Any]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        side,
        "--events",
        str(args.events),
        "--redis-url",
        args.redis_url,
    ]
    cmd += ["--stream", target] if side == "baseline" else ["--prefix", target]
    if side == "navstream" and args.nav_eval_ms is not None:
        cmd += ["--nav-eval-ms", str(args.nav_eval_ms)]
    if profile:
        cmd += ["--profile", profile]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env())
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{side} worker failed (exit {proc.returncode}): {proc.stdout.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _profile(args: argparse.Namespace, client: Any, root: str, events: list[dict[str, str | int]]) -> int:
    import pstats

    target = f"{root}-profile"
    fill_stream(client, f"{target}:events", events)
    result = _spawn(args, "navstream", target, profile=args.profile)
    print(f"navstream under cProfile: {result['rate']:,.0f} events/s (not comparable); stats in {args.profile}")
    stats = pstats.Stats(args.profile)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    return 0


def drive(args: argparse.Namespace) -> int:
    import redis

    client = redis.Redis.from_url(args.redis_url)
    root = f"nsbench-{uuid.uuid4().hex[:8]}"
    events = generate_events(args.events)
    mix: dict[str, int] = {}
    for event in events:
        mix[str(event["type"])] = mix.get(str(event["type"]), 0) + 1
    results: dict[str, list[dict[str, Any]]] = {"baseline": [], "navstream": []}
    try:
        print("machine: " + ", ".join(f"{k} {v}" for k, v in machine(client).items()))
        print(
            f"events: {args.events} ({', '.join(f'{k} {v}' for k, v in sorted(mix.items()))}); "
            f"batch {BATCH}; keys under {root}"
        )
        if args.profile:
            return _profile(args, client, root, events)
        for rep in range(args.repeat):
            for side in side_order(rep):
                target = f"{root}-r{rep}-{side[:3]}"
                stream = target if side == "baseline" else f"{target}:events"
                fill_stream(client, stream, events)
                result = _spawn(args, side, stream if side == "baseline" else target)
                delete_matching(client, f"{target}*")
                results[side].append(result)
                extra = ""
                if side == "navstream":
                    extra = (
                        f"  (run() with startup/shutdown {result['run_wall_s']:.2f}s, "
                        f"{result['alerts']} alerts, nav eval_interval_ms {result['nav_eval_ms']}, "
                        f"plugins: {', '.join(result['plugins']) or 'none'})"
                    )
                print(
                    f"  repeat {rep + 1} {side:<9} {result['rate']:>9,.0f} events/s  "
                    f"{result['seconds']:.3f}s  {result['cpu_us_per_event']:.1f} CPU-us/event  "
                    f"{result['batches']} batches  peak RSS {mb(result['maxrss_kb'])}{extra}",
                    flush=True,
                )
    finally:
        delete_matching(client, f"{root}*")
        client.close()

    base = statistics.median(r["rate"] for r in results["baseline"])
    nav = statistics.median(r["rate"] for r in results["navstream"])
    ratio = nav / base
    print()
    print("| side      | events  | median events/s | median CPU-us/event | peak RSS | RSS before the run |")
    print("|-----------|---------|-----------------|---------------------|----------|--------------------|")
    for side, rate in (("baseline", base), ("navstream", nav)):
        rs = results[side]
        cpu = statistics.median(r["cpu_us_per_event"] for r in rs)
        peak = max(r["maxrss_kb"] for r in rs)
        start = min(r["rss_start_kb"] for r in rs)
        print(f"| {side:<9} | {args.events:>7} | {rate:>15,.0f} | {cpu:>19.1f} | {mb(peak):>8} | {mb(start):>18} |")
    print()
    print(f"ratio {ratio:.2f} (bar {BAR}, aim {AIM})")
    if ratio < BAR and not args.check:
        print(f"FAIL: navstream runs at {ratio:.2f} of the raw baseline, under the bar of {BAR}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rate of `navstream run` against a raw redis-py consumer of the same stream."
    )
    parser.add_argument("--events", type=int, default=100_000, help="events per run (default 100000)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="a real Redis (default $REDIS_URL or redis://127.0.0.1:6379/0)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; medians are reported")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the navstream side once under cProfile, save stats to FILE, print the top",
    )
    parser.add_argument(
        "--nav-eval-ms",
        type=int,
        metavar="N",
        help="[nav] eval_interval_ms of the navstream side (default: bench/loop_mix.py's, 100; 0: every batch)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="CI's smoke run: exit 1 only if the bench or navstream broke (an event lost, dead-lettered or "
        "left pending, a plugin failed), never on a timing",
    )
    parser.add_argument("--worker", choices=["baseline", "navstream"], help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be positive")
    if args.nav_eval_ms is not None and args.nav_eval_ms < 0:
        parser.error("--nav-eval-ms must be 0 or more")
    if args.worker:
        return run_worker(args)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())

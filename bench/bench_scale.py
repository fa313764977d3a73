"""Scale-out: events/s and order p99 for 1, 2 and 3 consumers in one group, on one Redis and on
a local 3-node Redis Cluster.

    python bench/bench_scale.py [--events 60000] [--consumers 1,2,3] [--backends single,cluster]
    python bench/bench_scale.py --quick          # 10,000 events, 2 s of orders per point

For each backend and each consumer count N:

- **throughput**: the bench_loop event mix (every built-in plugin, the heavy ``[nav]`` case) is
  XADDed to a fresh stream first; then N ``navstream run`` processes (one group) are started,
  wait at a barrier, and drain it together. The rate is events / (last acknowledgement - first
  read) over all N, on CLOCK_MONOTONIC (one clock for every process);
- **order p99**: bench_risk's smooth load (1,000 orders/s, 20,000 events/s) answered by N
  consumers of role ``all``, latency from each order's XADD to its decision.

On the cluster a deployment is one hash tag, so one slot on one node (docs/scaling.md): these
runs show what the cluster client costs and that one deployment does not spread over nodes. The
local cluster runs on the same 2 cores as everything else. Keys live under ``nsbench-<random>``
(on the private cluster, which is torn down); nothing here is a timing test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import msgspec
from common import delete_matching_url, git_tree, machine, worker_env
from loop_mix import NAV_CONFIG, fill_stream, generate_events
from risk_runs import Children, local_redis_pid, run_once
from scale_cluster import LocalCluster

GROUP = "navstream"
RISK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_risk.py")


# --- one consumer of the throughput runs (its own subprocess) -----------------------------------


async def worker_loop(url: str, prefix: str, cluster: bool) -> dict[str, Any]:
    """``navstream run`` until idle, after a barrier: READY once set up, then wait for GO."""
    from navstream.app import App
    from navstream.config import load_settings
    from navstream.logs import setup_logging, stop_logging
    from navstream.loop.consumer import Consumer

    class Timed(Consumer):
        first: int = 0
        last: int = 0
        cpu_first: float = 0.0
        cpu_last: float = 0.0

        async def setup(self) -> None:
            await super().setup()
            print("READY", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def step(self, block_ms: int | None = None) -> int:
            if not self.first:
                self.first, self.cpu_first = time.perf_counter_ns(), time.process_time()
            got = await super().step(block_ms)
            if got:
                self.last, self.cpu_last = time.perf_counter_ns(), time.process_time()
            return got

    setup_logging("WARNING")
    settings = load_settings(
        env={}, overrides={"redis": {"url": url, "prefix": prefix, "group": GROUP, "cluster": cluster}}
    )
    settings = msgspec.structs.replace(settings, extra={"nav": NAV_CONFIG})
    app = App.create(settings)
    consumer = Timed(app, until_idle_s=1.0)
    try:
        await consumer.run()
    finally:
        await app.aclose()
        stop_logging()
    stats = app.stats
    return {
        "first_ns": consumer.first,
        "last_ns": consumer.last,
        "processed": stats.processed,
        "dead_lettered": stats.dead_lettered,
        "plugin_errors": stats.plugin_errors,
        "cpu_s": max(0.0, consumer.cpu_last - consumer.cpu_first),
    }


# --- the driver -----------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, load_url: str, nav_url: str, prefix: str, n: int, cluster: bool) -> dict:
    import redis

    events = generate_events(args.events)
    client = redis.Redis.from_url(load_url)
    try:
        fill_stream(client, f"{prefix}:events", events)
    finally:
        client.close()
    procs = []
    for _ in range(n):
        argv = [sys.executable, os.path.abspath(__file__), "--worker", "--redis-url", nav_url, "--prefix", prefix]
        procs.append(
            subprocess.Popen(
                argv + (["--cluster"] if cluster else []),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=worker_env(),
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "READY":
            raise SystemExit(f"a consumer did not start: {line!r}")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("GO\n")
        proc.stdin.flush()
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a consumer failed (exit {proc.returncode}): {out[-500:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    processed = sum(r["processed"] + r["dead_lettered"] for r in reports)
    if processed != args.events or any(r["plugin_errors"] for r in reports):
        raise SystemExit(f"{n} consumers handled {processed} of {args.events} events: {reports}")
    busy = [r for r in reports if r["first_ns"] and r["last_ns"]]
    seconds = (max(r["last_ns"] for r in busy) - min(r["first_ns"] for r in busy)) / 1e9
    return {
        "events_per_s": args.events / seconds,
        "seconds": seconds,
        "cpu_us_per_event": sum(r["cpu_s"] for r in reports) / args.events * 1e6,
        "shares": [r["processed"] for r in reports],
    }


async def order_p99(args: argparse.Namespace, kids: Children, root: str, tmp: str, n: int) -> dict[str, Any]:
    r = await run_once(args, kids, root, tmp, "navstream", 1_000, "smooth", consumers=n)
    return {k: r[k] for k in ("p50_ms", "p99_ms", "max_ms", "unanswered", "event_rate", "events_lag_at_end")}


def run_backend(args: argparse.Namespace, backend: str, root: str, tmp: str) -> list[dict[str, Any]]:
    rows = []

    def points(load_url: Any, nav_url: str, cluster: bool, cluster_obj: LocalCluster | None) -> None:
        for n in args.consumers:
            tag = f"{root}-{backend}-{n}"
            prefix = "{" + tag + "}" if cluster else tag
            url = cluster_obj.node_of(tag) if cluster_obj else load_url
            row: dict[str, Any] = {"backend": backend, "consumers": n}
            row.update(throughput(args, url, nav_url, prefix, n, cluster))
            kids = Children(tmp, RISK_SCRIPT)
            args.redis_url = cluster_obj.node_of(f"{root}-{backend}o{n}-s1000-nav") if cluster_obj else load_url
            args.cluster_url = nav_url if cluster else None
            args.redis_pid = local_redis_pid(args.redis_url)
            try:
                row.update(asyncio.run(order_p99(args, kids, f"{root}-{backend}o{n}", tmp, n)))
            finally:
                kids.stop_all()
            if not cluster:
                delete_matching_url(load_url, f"{root}*")
            rows.append(row)
            print(_row(row), flush=True)

    if backend == "single":
        points(args.single_url, args.single_url, False, None)
    else:
        with LocalCluster() as c:
            points(None, c.url, True, c)
    return rows


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['backend']:<7} | {r['consumers']:>9} | {r['events_per_s']:>8,.0f} | {r['cpu_us_per_event']:>13.1f} "
        f"| {r['p50_ms']:>9.2f} | {r['p99_ms']:>9.2f} | {r['unanswered']:>10} | {r['events_lag_at_end']} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scale-out of navstream over consumers and backends.")
    parser.add_argument("--events", type=int, default=60_000, help="events drained per throughput point")
    parser.add_argument("--consumers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["single", "cluster"])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds of orders per point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="10,000 events and 2 s of orders per point")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--cluster", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(worker_loop(args.redis_url, args.prefix, args.cluster))), flush=True)
        return 0
    if args.quick:
        args.events, args.seconds = 10_000, 2.0
    args.single_url = args.redis_url
    args.event_rate, args.spans = 20_000, False
    root = f"nsbench-{uuid.uuid4().hex[:8]}"
    tmp = tempfile.mkdtemp(prefix="nsbench-scale-")
    import redis

    client = redis.Redis.from_url(args.single_url)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in {**machine(client), "tree": git_tree()}.items()))
    client.close()
    print(
        "| backend | consumers | events/s | CPU µs/event | p50 ms | p99 ms | unanswered | events lag |\n"
        "|---------|-----------|----------|--------------|--------|--------|------------|------------|"
    )
    try:
        for backend in args.backends:
            run_backend(args, backend, root, tmp)
    finally:
        delete_matching_url(args.single_url, f"{root}*")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

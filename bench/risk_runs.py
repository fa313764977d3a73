"""bench_risk's runs: the subprocesses of a run (:class:`Children`), the CPU each used, and one
run (:func:`run_once`): responder, load, window, latencies."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from common import percentile, worker_env
from risk_load import BURST_ORDERS, GROUP, OrderFlow
from risk_spans import analyse_spans

TAIL_S = 3.0  # after the window, how long to wait for the last answers


class Children:
    """Every subprocess started, stopped whatever happens."""

    def __init__(self, logdir: str, script: str) -> None:
        self.logdir = logdir
        #: The bench's own script: each worker is ``script --worker NAME ...``.
        self.script = script
        self.procs: list[tuple[str, subprocess.Popen[str], str]] = []

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[str]:
        cmd = [sys.executable, self.script, *argv]
        env = worker_env()
        log = os.path.join(self.logdir, f"{name}.stderr")
        with open(log, "w") as err:
            # Its own session: a Ctrl-C reaches the driver alone, which stops the workers in order.
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def tail(self, proc: subprocess.Popen[str]) -> str:
        for _, p, log in self.procs:
            if p is proc:
                try:
                    with open(log) as f:
                        return f.read()[-3000:]
                except OSError:
                    return ""
        return ""

    async def ready(self, name: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
        """Wait for its ``READY [value]`` line; return the value."""
        loop = asyncio.get_running_loop()
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), timeout)
        except TimeoutError:
            line = ""
        except BaseException:  # Ctrl-C: the thread reading its stdout must not wait for it
            self.kill(proc)
            raise
        word, _, value = line.strip().partition(" ")
        if word != "READY":
            self.kill(proc)
            raise SystemExit(f"{name} did not start: {line.strip()!r}\n{self.tail(proc)}")
        return value

    async def finish(
        self, name: str, proc: subprocess.Popen[str], timeout: float = 15.0, stop: bool = True
    ) -> dict[str, Any]:
        """SIGTERM (unless ``stop`` is False: it ends by itself), then its report (the last stdout
        line, JSON)."""
        if stop and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        try:
            out, _ = await asyncio.wait_for(loop.run_in_executor(None, proc.communicate), timeout)
        except TimeoutError:
            self.kill(proc)
            raise SystemExit(f"{name} did not stop within {timeout:g}s\n{self.tail(proc)}") from None
        except BaseException:
            self.kill(proc)
            raise
        lines = (out or "").strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{name} failed (exit {proc.returncode}): {(out or '').strip()[-500:]}\n{self.tail(proc)}")
        return json.loads(lines[-1])  # type: ignore[no-any-return]

    def kill(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        alive = [p for _, p, _ in self.procs if p.poll() is None]
        for p in alive:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in alive:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _cpu_ticks(pid: int | None) -> int | None:
    """utime + stime of a process, in clock ticks (None where /proc cannot tell)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, steal) clock ticks of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def _cpu_share(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """Share of one core each process used between two samples; ``others``: every other
    process of the machine (not ours, not Redis), ``steal``: time the hypervisor took."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {
        name: round((after[name] - b) / hz / seconds, 3)
        for name, b in before.items()
        if name != "machine" and b is not None and after.get(name) is not None
    }
    if before.get("machine") and after.get("machine"):
        busy = (after["machine"][0] - before["machine"][0]) / hz / seconds
        out["others"] = round(max(0.0, busy - sum(out.values())), 3)
        out["steal"] = round((after["machine"][1] - before["machine"][1]) / hz / seconds, 3)
    return out


async def _lag(client: Any, stream: str) -> int | None:
    try:
        for group in await client.xinfo_groups(stream):
            if group.get("name") in (GROUP, GROUP.encode()):
                lag = group.get("lag")
                return None if lag is None else int(lag)
    except Exception:  # noqa: BLE001 - informational
        return None
    return None


#: The responders of each side: (worker, role); ``split`` is two processes of navstream, one
#: reading orders only and one events only (``navstream run --role``).
RESPONDERS = {
    "baseline": [("baseline", "all")],
    "navstream": [("navstream", "all")],
    "split": [("navstream", "orders"), ("navstream", "events")],
}


def run_key(shape: str, rate: int, side: str) -> str:
    """The key prefix of one run (``<root>-<key>``), unique per shape, rate and side."""
    return f"{shape[:1]}{rate}-{side[:3]}"


async def run_once(
    args: argparse.Namespace,
    kids: Children,
    root: str,
    tmp: str,
    side: str,
    rate: int,
    shape: str = "smooth",
    profile: str | None = None,
    consumers: int = 1,
) -> dict[str, Any]:
    import redis.asyncio as aioredis

    key = run_key(shape, rate, side)
    prefix = f"{root}-{key}"
    cluster = getattr(args, "cluster_url", None)
    if cluster:  # one hash tag: every key of the run on the node that holds its slot
        prefix = "{" + prefix + "}"
    tag = f"{side[:1]}{shape[:1]}{rate}"
    events, orders, decisions = f"{prefix}:events", f"{prefix}:orders", f"{prefix}:decisions"
    audit_dir = os.path.join(tmp, f"audit-{key}")
    sent_file = os.path.join(tmp, f"sent-{key}.json")
    arrived_file = os.path.join(tmp, f"arrived-{key}.json")
    spans_file = os.path.join(tmp, f"spans-{key}.json") if args.spans and side == "navstream" else None
    common = ["--redis-url", args.redis_url, "--prefix", prefix]
    responders = []
    for n, (worker, role) in enumerate(RESPONDERS[side] * consumers):
        argv = ["--worker", worker, *common]
        if worker == "navstream":
            argv += ["--audit-dir", audit_dir, "--role", role]
            if getattr(args, "nav_eval_ms", None) is not None:
                argv += ["--nav-eval-ms", str(args.nav_eval_ms)]
            if cluster:  # navstream speaks to the cluster; the load and the baseline to the node
                argv[argv.index("--redis-url") + 1] = cluster
                argv.append("--cluster")
            if spans_file:
                argv += ["--spans-file", spans_file]
            if profile and role in ("all", "orders"):  # the consumer that answers the orders
                argv += ["--profile", profile]
        name = (side if role == "all" else f"{side}-{role}") + (f"-{n + 1}" if consumers > 1 else "")
        proc = kids.spawn(f"{name}-{key}", argv)
        await kids.ready(name, proc)
        responders.append((name, proc))
    # The burst shape's events come with its orders, from the sender; the producer then sends
    # only what is due by the clock (source reports, positions).
    burst = shape == "burst"
    producer = kids.spawn(
        f"events-{key}", ["--worker", "events", *common, "--rate", "0" if burst else str(args.event_rate)]
    )
    await kids.ready("events producer", producer)
    reader = kids.spawn(f"decisions-{key}", ["--worker", "decisions", *common, "--out", arrived_file])
    await kids.ready("decisions reader", reader)
    shape_args = ["--burst-events", str(round(args.event_rate * BURST_ORDERS / rate))] if burst else []
    sender = kids.spawn(
        f"orders-{key}",
        [
            "--worker",
            "orders",
            *common,
            "--rate",
            str(rate),
            "--seconds",
            str(args.warmup + args.seconds),
            "--tag",
            tag,
            "--seed",
            str(rate),
            "--out",
            sent_file,
            *shape_args,
        ],
    )
    start = int(await kids.ready("orders sender", sender))
    window = (start + int(args.warmup * 1e9), start + int((args.warmup + args.seconds) * 1e9))
    control = aioredis.Redis.from_url(args.redis_url, decode_responses=False)
    pids = {
        **{name: proc.pid for name, proc in responders},
        "events": producer.pid,
        "orders": sender.pid,
        "decisions": reader.pid,
        "redis": args.redis_pid,
    }
    cpu: list[dict[str, Any]] = []
    try:

        async def at(ns: int) -> tuple[int, int]:
            await asyncio.sleep(max(0, ns - time.perf_counter_ns()) / 1e9)
            length = await control.xlen(events)
            cpu.append({**{name: _cpu_ticks(pid) for name, pid in pids.items()}, "machine": _machine_ticks()})
            return time.perf_counter_ns(), length

        (t0, len0), (t1, len1) = await asyncio.gather(at(window[0]), at(window[1]))
        lag_end = await _lag(control, events)
        sending = await kids.finish("orders sender", sender, timeout=60 + args.seconds, stop=False)
        deadline = time.monotonic() + TAIL_S
        while time.monotonic() < deadline:
            try:
                added = int((await control.xinfo_stream(decisions))["entries-added"])
            except Exception:  # noqa: BLE001 - no decision yet
                added = 0
            if added >= sending["sent"]:
                break
            await asyncio.sleep(0.05)
        reading = await kids.finish("decisions reader", reader)
        pending = {}
        for stream in (events, orders):
            try:
                pending[stream.rsplit(":", 1)[1]] = (await control.xpending(stream, GROUP))["pending"]
            except Exception:  # noqa: BLE001 - informational
                pending[stream.rsplit(":", 1)[1]] = None
        alerts: Any = await control.xrange(f"{prefix}:alerts", count=10_000)
        alert_codes = Counter(f.get(b"code", b"?").decode() for _, f in alerts)
        dlq = await control.xlen(f"{prefix}:dlq")
    finally:
        await control.aclose()
    produced = await kids.finish("events producer", producer)
    answer = merge_reports([await kids.finish(name, proc) for name, proc in responders])
    flow = OrderFlow(tag, sent_file, arrived_file, window)
    latencies = []
    decisions_seen: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    unanswered = 0
    for order_id in flow.window:
        got = flow.arrived.get(order_id)
        if got is None:
            unanswered += 1
            latencies.append(math.inf)
            continue
        latencies.append((got[0] - flow.sent[order_id]) / 1e6)
        decisions_seen[got[1]] += 1
        for code in filter(None, got[2].split(",")):
            reasons[code] += 1
    latencies.sort()
    late = sorted(flow.late[o] / 1e6 for o in flow.window)
    seconds = (t1 - t0) / 1e9
    result = {
        "side": side,
        "shape": shape,
        "rate": rate,
        "target_event_rate": args.event_rate,
        "seconds": seconds,
        "orders": len(flow.window),
        "order_rate": flow.sent_in_window / args.seconds,
        "event_rate": (len1 - len0) / seconds,
        "sender_late_p99_ms": percentile(late, 99),
        "sender_late_max_ms": late[-1] if late else math.nan,
        "producer": produced,
        "sender": sending,
        "reader": reading,
        "events_lag_at_end": lag_end,
        "pending_after": pending,
        "dlq": dlq,
        "cpu": _cpu_share(cpu[0], cpu[1], seconds),
        "alerts": dict(alert_codes),
        "answered": len(flow.window) - unanswered,
        "unanswered": unanswered,
        "decisions": dict(decisions_seen),
        "reasons": dict(reasons),
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else math.nan,
        "mean_ms": statistics.fmean(x for x in latencies if math.isfinite(x)) if decisions_seen else math.nan,
        "responder": answer,
    }
    if spans_file and os.path.exists(spans_file):
        result["spans"] = analyse_spans(spans_file, flow, window)
    return result


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One responder's report, or the sum of a split deployment's (counters added; the plugins,
    decisions and audit of the orders consumer, the one that decides)."""
    if len(reports) == 1:
        return reports[0]
    merged: dict[str, Any] = dict(reports[0])
    for other in reports[1:]:
        for name, value in other.items():
            if isinstance(value, int) and not isinstance(value, bool) and name != "exit":
                merged[name] = merged.get(name, 0) + value
            elif name == "by_type":
                merged[name] = dict(Counter(merged.get(name, {})) + Counter(value))
    merged["roles"] = [r.get("role", "all") for r in reports]
    return merged


def local_redis_pid(url: str) -> int | None:
    """The Redis server's pid when it runs on this machine (for its CPU share), else None."""
    import redis

    host = urlsplit(url).hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    client = redis.Redis.from_url(url)
    try:
        pid = int(client.info("server").get("process_id", 0))
    finally:
        client.close()
    return pid if pid and os.path.exists(f"/proc/{pid}/stat") else None

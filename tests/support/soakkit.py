"""Helpers of the soak test (tests/loop/test_soak.py; the other loop tests on a private server use
them too): a private redis-server, consumer processes and a deterministic, idempotent producer.

Nothing here mocks anything: the redis-server is a real one started on a free loopback port with
its own directory, the consumers are real ``python -m navstream.cli run`` processes, and the
producer writes with plain ``XADD``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: tests/ (the process-level tests load plugins from tests/procplugins/ by dotted path).
TESTS_DIR = Path(__file__).resolve().parents[1]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(pred: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """``pred()`` until it is truthy (returned) or ``timeout`` passes (None). Redis errors while
    polling count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = pred()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --- the private redis-server ---------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own, on a free loopback port, persisting to an AOF
    (``appendfsync always``) in its own directory, so that a kill and a restart (same port, same
    directory) keep every acknowledged write: the streams, the group and its pending lists."""

    def __init__(self, binary: str, workdir: Path, *, persistent: bool = True) -> None:
        self.binary = binary
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistent = persistent
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2, socket_timeout=10, **kw)

    def start(self, timeout: float = 30) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            *persistence,
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.starts += 1
        self.popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        try:

            def ready() -> bool:
                if self.popen is not None and self.popen.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.popen.returncode}:\n{self.log_tail()}")
                # Loading the AOF answers -LOADING: ready only once a write goes through.
                try:
                    return bool(client.ping()) and client.set("soakkit-probe", "1") is not None
                except redis.ResponseError:
                    return False

            if not poll(ready, timeout, 0.05):
                raise RuntimeError(
                    f"redis-server did not answer on port {self.port} within {timeout}s\n{self.log_tail()}"
                )
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (nothing is saved on the way out)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.dir / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no redis.log>"

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- consumer processes ---------------------------------------------------------------------------


def child_env(plugins: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    env["NAVSTREAM_LOG_STREAM"] = "stderr"
    env["NAVSTREAM_PLUGINS"] = plugins
    return env


@dataclass
class ConsumerProc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    #: how this process ended: "killed" (by the test, SIGKILL), "stopped" (SIGTERM) or "" (running)
    ended: str = ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def started(self) -> bool:
        """Whether it logged ``consumer_started`` (connected, set up, signal handlers in place)."""
        return '"event": "consumer_started"' in self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            text = ["<no log>"]
        return "\n".join(
            [f"--- {self.name} pid={self.popen.pid} rc={self.popen.poll()} ({self.ended or 'running'}) ---", *text]
        )


@dataclass
class Fleet:
    """The consumer processes of one soak run; every one ever started is kept, to be killed at
    teardown and to have its log read."""

    url: str
    prefix: str
    group: str
    config: Path
    logdir: Path
    plugins: str
    all: list[ConsumerProc] = field(default_factory=list)
    live: dict[str, ConsumerProc] = field(default_factory=dict)

    def start(self, name: str, *extra: str) -> ConsumerProc:
        n = sum(1 for p in self.all if p.name == name)
        log = self.logdir / f"{name}.{n}.log"
        with log.open("wb") as fh:
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "navstream.cli",
                    "run",
                    "--redis-url",
                    self.url,
                    "--prefix",
                    self.prefix,
                    "--group",
                    self.group,
                    "--consumer",
                    name,
                    "--config",
                    str(self.config),
                    *extra,
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=child_env(self.plugins),
                cwd=self.logdir,
            )
        proc = ConsumerProc(name, popen, log)
        self.all.append(proc)
        self.live[name] = proc
        return proc

    def sigkill(self, name: str) -> ConsumerProc:
        proc = self.live.pop(name)
        proc.ended = "killed"
        if proc.alive():
            proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=10)
        return proc

    def crashed(self) -> list[ConsumerProc]:
        """Processes that ended without being told to."""
        return [p for p in self.all if not p.ended and not p.alive()]

    def stop_all(self, timeout: float) -> dict[str, int | None]:
        """SIGTERM every live process; their exit codes (None: did not exit in time)."""
        procs = list(self.live.values())
        for proc in procs:
            proc.ended = "stopped"
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                codes[proc.name] = proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[proc.name] = None
        self.live.clear()
        return codes

    def kill_everything(self) -> None:
        for proc in self.all:
            if proc.alive():
                proc.popen.kill()
        for proc in self.all:
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - nothing more to do
                pass

    def tails(self, lines: int = 25) -> str:
        return "\n".join(p.tail(lines) for p in self.all)

    def logs_contain(self, text: str) -> list[str]:
        return [p.log.name for p in self.all if text in p.log.read_text(encoding="utf-8", errors="replace")]


# --- the producer ---------------------------------------------------------------------------------

#: (venue, account, kind, assets)
ACCOUNTS = [
    ("binance", "futures-main", "futures", ["USDT", "BTC", "ETH"]),
    ("binance", "spot-main", "spot", ["USDT", "BTC", "USD"]),
    ("okx", "futures-main", "futures", ["USDT", "ETH"]),
]
#: (base, quote, source, mid price): BTC through BTC/USDT (two sources, well inside the
#: divergence limit) and the USDT peg; ETH by a direct ETH/USD price.
PAIRS = [
    ("BTC", "USDT", "binance-spot", Decimal(60000)),
    ("BTC", "USDT", "okx-spot", Decimal(60010)),
    ("ETH", "USD", "coinbase", Decimal(3000)),
]
#: (venue, source, account or None); the price sources report too (a price whose source never
#: sent a source_status is stale).
SOURCES = [
    ("binance", "balances", None),
    ("binance", "positions", "futures-main"),
    ("okx", "balances", None),
    ("binance", "binance-spot", None),
    ("okx", "okx-spot", None),
    ("coinbase", "coinbase", None),
]


@dataclass
class Item:
    """One planned entry: ``fields`` get ``ts`` at send time unless ``fixed_ts``."""

    stream: str  # "events" or "orders"
    kind: str  # "valid", "late" (an older snapshot that must lose), "malformed", "order", "bad_order"
    fields: dict[str, Any]
    #: for "late": the key whose last sent ts it goes below
    late_of: tuple[str, ...] | None = None


def event_key(fields: dict[str, Any]) -> tuple[str, ...]:
    t = fields["type"]
    if t == "balance":
        return ("balance", fields["venue"], fields["account"], fields["asset"])
    if t == "price":
        return ("price", fields["base"], fields["quote"], fields["source"])
    return ("source_status", fields["venue"], fields["source"], fields.get("account", ""))


def plan(seed: int, rounds: int) -> list[Item]:
    """A deterministic list of entries: ``rounds`` rounds of balances, prices and source
    reports (some sources failing for a while), late (older) snapshots that must lose, a few
    orders (some re-sent with the same order_id), malformed entries that must be dead-lettered,
    then a final round that leaves every key with a fresh, healthy value."""
    rng = random.Random(seed)
    items: list[Item] = []

    def valid_round(final: bool) -> list[Item]:
        out: list[Item] = []
        for venue, account, _, assets in ACCOUNTS:
            for asset in assets:
                if asset == "BTC":
                    value = Decimal(rng.randint(0, 400_000)) / Decimal(10_000)
                elif asset == "ETH":
                    value = Decimal(rng.randint(0, 9_000_000)) / Decimal(100_000)
                else:
                    value = Decimal(rng.randint(-50_000, 5_000_000)) / Decimal(100)
                fields = {"type": "balance", "venue": venue, "account": account, "asset": asset, "balance": str(value)}
                if asset == "BTC" and account == "futures-main" and rng.random() < 0.5:
                    fields["unrealized_pnl"] = str(Decimal(rng.randint(-20_000, 20_000)) / Decimal(1000))
                out.append(Item("events", "valid", fields))
        for base, quote, source, mid in PAIRS:
            price = mid * (1 + Decimal(rng.randint(-20, 20)) / Decimal(10_000))  # +-0.2%
            out.append(
                Item(
                    "events",
                    "valid",
                    {
                        "type": "price",
                        "base": base,
                        "quote": quote,
                        "source": source,
                        "price": str(price.quantize(Decimal("0.01"))),
                    },
                )
            )
        for venue, source, account in SOURCES:
            ok = final or rng.random() < 0.8
            fields = {"type": "source_status", "venue": venue, "source": source, "ok": "true" if ok else "false"}
            if account:
                fields["account"] = account
            if not ok:
                fields["error"] = "HTTP 503 from venue"
            out.append(Item("events", "valid", fields))
        rng.shuffle(out)
        return out

    order_ids: list[str] = []
    for r in range(rounds):
        items += valid_round(final=False)
        # A late snapshot: an older ts than the key's newest, with a value that must never show.
        victim = rng.choice([i for i in items if i.kind == "valid"])
        late = dict(victim.fields)
        if late["type"] == "balance":
            late["balance"] = "987654321"
        elif late["type"] == "price":
            late["price"] = "1"
        else:
            late["ok"] = "false"
            late["error"] = "late report"
        items.append(Item("events", "late", late, late_of=event_key(victim.fields)))
        if r % 2 == 1:
            oid = f"o-{len(order_ids):03d}"
            order_ids.append(oid)
            venue, account = rng.choice([("binance", "futures-main"), ("okx", "futures-main")])
            items.append(
                Item(
                    "orders",
                    "order",
                    {
                        "type": "order",
                        "order_id": oid,
                        "venue": venue,
                        "account": account,
                        "symbol": "BTCUSDT",
                        "side": rng.choice(["buy", "sell"]),
                        "qty": str(Decimal(rng.randint(1, 50)) / Decimal(1000)),
                        "price": "60000",
                    },
                )
            )
        if r % 5 == 4 and order_ids:  # a re-send of an earlier order id: the same answer again
            again = rng.choice(order_ids)
            resend = next(i for i in items if i.kind == "order" and i.fields["order_id"] == again)
            items.append(Item("orders", "order", dict(resend.fields)))

    malformed: list[Item] = [
        Item("events", "malformed", {"type": "balance", "venue": "binance", "account": "spot-main", "balance": "1"}),
        Item(
            "events",
            "malformed",
            {"type": "balance", "venue": "binance", "account": "spot-main", "asset": "USDT", "balance": "abc"},
        ),
        Item(
            "events",
            "malformed",
            {"type": "balanse", "venue": "binance", "account": "spot-main", "asset": "USDT", "balance": "1"},
        ),
        Item(
            "events",
            "malformed",
            {
                "type": "balance",
                "venue": "binance",
                "account": "spot-main",
                "asset": "USDT",
                "balance": "1",
                "ts": str(int(time.time())),
            },
        ),  # seconds
        Item("events", "malformed", {"venue": "okx", "account": "futures-main", "asset": "USDT", "balance": "1"}),
        Item(
            "events",
            "malformed",
            {"type": "price", "base": "BTC", "quote": "USDT", "source": "okx-spot", "price": "-5"},
        ),
        Item(
            "events",
            "malformed",
            {
                b"type": b"balance",
                b"venue": b"bin\xffance",
                b"account": b"spot-main",
                b"asset": b"USDT",
                b"balance": b"1",
            },
        ),
        Item(
            "orders",
            "malformed",
            {
                "type": "order",
                "venue": "binance",
                "account": "futures-main",
                "symbol": "BTCUSDT",
                "side": "buy",
                "qty": "1",
            },
        ),  # no order_id
    ]
    # An order that breaks the contract but names its order_id: answered (bad_order), not dead.
    bad_order = Item(
        "orders",
        "bad_order",
        {
            "type": "order",
            "order_id": "o-bad",
            "venue": "binance",
            "account": "futures-main",
            "symbol": "BTCUSDT",
            "side": "buy",
            "qty": "-1",
        },
    )
    for n, item in enumerate([*malformed, bad_order]):
        items.insert(5 + n * (len(items) // (len(malformed) + 2)), item)
    items += valid_round(final=True)
    return items


@dataclass
class Sent:
    stream: str
    entry_id: str
    kind: str
    fields: dict[Any, Any]


class Producer(threading.Thread):
    """Writes the plan at a steady pace over ``duration`` seconds, through a Redis restart.

    Each entry gets an explicit id, increasing per stream, so a retry after a lost reply cannot
    add it twice: Redis refuses an id not above the stream's last, and the producer then checks
    that the entry is there. ``ts`` is set at send time, strictly increasing; a late snapshot
    gets a ts below its key's newest."""

    def __init__(self, server: RedisServer, prefix: str, items: list[Item], duration: float, deadline_s: float) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.server, self.prefix, self.items = server, prefix, items
        self.duration, self.deadline_s = duration, deadline_s
        self.sent: list[Sent] = []
        self.error: BaseException | None = None
        self.retries = 0
        self._last_id: dict[str, tuple[int, int]] = {}
        self._last_ts = 0
        self._key_ts: dict[tuple[str, ...], int] = {}
        self.done_at: float | None = None

    def _next_id(self, stream: str) -> str:
        ms, seq = now_ms(), 0
        last = self._last_id.get(stream)
        if last is not None and ms <= last[0]:
            ms, seq = last[0], last[1] + 1
        self._last_id[stream] = (ms, seq)
        return f"{ms}-{seq}"

    def _next_ts(self) -> int:
        self._last_ts = max(now_ms(), self._last_ts + 1)
        return self._last_ts

    def run(self) -> None:
        # No retries inside redis-py: this loop retries, and counts, every failed send.
        client = self.server.client(retry=Retry(NoBackoff(), 0))
        give_up = time.monotonic() + self.deadline_s
        try:
            start = time.monotonic()
            pace = self.duration / max(1, len(self.items))
            for n, item in enumerate(self.items):
                delay = start + n * pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                fields = dict(item.fields)
                if item.kind == "late":
                    assert item.late_of is not None
                    fields["ts"] = str(self._key_ts[item.late_of] - 1)
                elif not any(k in (b"ts", "ts") for k in fields):
                    if any(isinstance(k, bytes) for k in fields):
                        fields[b"ts"] = str(self._next_ts()).encode()
                    else:
                        fields["ts"] = str(self._next_ts())
                if item.kind == "valid":
                    self._key_ts[event_key(fields)] = int(fields["ts"])
                stream = f"{self.prefix}:{item.stream}"
                entry_id = self._next_id(stream)
                self._xadd_once(client, stream, entry_id, fields, give_up)
                self.sent.append(Sent(item.stream, entry_id, item.kind, fields))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.done_at = time.monotonic()
            client.close()

    def _xadd_once(
        self, client: redis.Redis, stream: str, entry_id: str, fields: dict[Any, Any], give_up: float
    ) -> None:
        while True:
            try:
                client.xadd(stream, fields, id=entry_id)
                return
            except redis.ResponseError as exc:
                if "equal or smaller" in str(exc) and client.xrange(stream, entry_id, entry_id):
                    return  # it went through; the reply was lost with the connection
                if "LOADING" in str(exc) and time.monotonic() < give_up:
                    time.sleep(0.05)
                    continue
                raise
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if time.monotonic() >= give_up:
                    raise
                self.retries += 1
                time.sleep(0.05)

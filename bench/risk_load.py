"""bench_risk's load: the desk, and the processes that load it (an events producer, an order
sender, a decision reader), each its own subprocess writing raw RESP on a socket; and what the
sender and the reader recorded, joined (:class:`OrderFlow`)."""

from __future__ import annotations

import random
import signal
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec
from common import percentile

#: The consumer group of both responders.
GROUP = "navstream"
CHUNK_S = 0.002  # the events producer sends what is due every 2 ms
MAX_CHUNK = 2_000  # and catches up at most this many events per chunk


# --- the desk ---------------------------------------------------------------------------------

ACCOUNTS = [("binance", "main", "spot"), ("binance", "margin", "futures"), ("okx", "main", "spot")]
#: Holdings per account (asset -> amount); a NAV of about 0.76M USD per account.
HOLDINGS = {"USDT": 400_000.0, "BTC": 4.0, "ETH": 40.0}
REF_PRICE = {"BTC": 60_000.0, "ETH": 3_000.0}
PRICE_SOURCES = ["binance-spot", "okx-spot"]
#: (venue, source) reporting every second: each venue's balance fetcher and price feed.
STATUS_SOURCES = [("binance", "balances"), ("okx", "balances"), ("binance", "binance-spot"), ("okx", "okx-spot")]
NAV_CONFIG = {
    # What a desk at 20,000 events/s sets: a changed NAV evaluated at most every 100 ms (a
    # failure or a missing input at once; docs/nav.md). --nav-eval-ms overrides it.
    "eval_interval_ms": 100,
    "quote": "USD",
    "pegs": {"USDT": "1"},
    "routes": {"BTC": "BTC/USDT", "ETH": "ETH/USDT"},
    "accounts": [{"venue": v, "account": a, "kind": k} for v, a, k in ACCOUNTS],
}
#: The default limits, except the per-venue rate: 5,000 orders/s over two venues is 150,000 a
#: minute per venue, and the bench measures latency, not the rate limit.
RISK_CONFIG: dict[str, Any] = {"max_orders_per_minute": 10_000_000}
SYMBOLS = {"BTC": "BTCUSDT", "ETH": "ETHUSDT"}
#: Normal order sizes (base units): at most about 12k USD, under 10% of any account's NAV.
ORDER_QTY = {"BTC": (0.001, 0.2), "ETH": (0.01, 4.0)}
OVERSIZED = 0.01  # share of orders too large for the account (vetoed: order_pct_nav)
#: The engine reports each account's positions this often (its fills land): an approved order
#: stops counting as in flight once a position observed after it arrives. A desk that never
#: reports positions keeps every approval in flight for ``open_order_ttl_s``.
POSITION_EVERY_S = 0.1
#: Positions per account (base units), walked a little with every report.
POSITION_QTY = {"BTC": 2.0, "ETH": 20.0}
#: The burst shape: a strategy sends this many orders at once, with the events of the same
#: moment (``rate / BURST_ORDERS`` bursts a second).
BURST_ORDERS = 10


# --- the events producer (its own subprocess) -------------------------------------------------


def _resp(args: list[bytes]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class EventMix:
    """Valid events per docs/contract.md: 75% price, 25% balance, plus one ``source_status``
    per (venue, source) every second. Prices walk within 0.3% of a reference and balances
    within 0.01% of theirs, so no NAV ever moves enough to trip a drawdown limit."""

    def __init__(self, stream: str, seed: int = 20240601) -> None:
        self.rng = random.Random(seed)
        self.head = [b"XADD", stream.encode(), b"*"]
        self.price = {(b, s): REF_PRICE[b] for b in REF_PRICE for s in PRICE_SOURCES}
        self.position = {(v, a, b): q for v, a, _ in ACCOUNTS for b, q in POSITION_QTY.items()}
        self.last_status = 0.0
        self.last_positions = 0.0

    def _xadd(self, fields: list[tuple[str, str]]) -> bytes:
        return _resp(self.head + [x.encode() for kv in fields for x in kv])

    def price_event(self, base: str, source: str, ts: str) -> bytes:
        p = self.price[(base, source)] * (1 + self.rng.gauss(0, 0.0002))
        ref = REF_PRICE[base]
        p = min(max(p, ref * 0.997), ref * 1.003)
        self.price[(base, source)] = p
        return self._xadd(
            [
                ("type", "price"),
                ("base", base),
                ("quote", "USDT"),
                ("price", f"{p:.2f}"),
                ("source", source),
                ("ts", ts),
            ]
        )

    def balance_event(self, venue: str, account: str, asset: str, ts: str) -> bytes:
        amount = HOLDINGS[asset] * (1 + self.rng.uniform(-1e-4, 1e-4))
        return self._xadd(
            [
                ("type", "balance"),
                ("venue", venue),
                ("account", account),
                ("asset", asset),
                ("balance", f"{amount:.8f}"),
                ("ts", ts),
            ]
        )

    def statuses(self, ts: str) -> list[bytes]:
        return [
            self._xadd([("type", "source_status"), ("venue", v), ("source", s), ("ok", "true"), ("ts", ts)])
            for v, s in STATUS_SOURCES
        ]

    def positions(self, ts: str) -> list[bytes]:
        """Every account's position in each symbol, as the engine reports them after fills."""
        out = []
        for venue, account, base in self.position:
            qty = self.position[(venue, account, base)] * (1 + self.rng.uniform(-0.01, 0.01))
            self.position[(venue, account, base)] = qty
            mark = self.price[(base, PRICE_SOURCES[0])]
            out.append(
                self._xadd(
                    [
                        ("type", "position"),
                        ("venue", venue),
                        ("account", account),
                        ("symbol", SYMBOLS[base]),
                        ("qty", f"{qty:.4f}"),
                        ("entry_price", f"{REF_PRICE[base]:.2f}"),
                        ("mark_price", f"{mark:.2f}"),
                        ("ts", ts),
                    ]
                )
            )
        return out

    def scheduled(self, now: float) -> list[bytes]:
        """What is due by the clock, whatever the event rate: source reports every second,
        positions every ``POSITION_EVERY_S``."""
        ts = str(time.time_ns() // 1_000_000)
        out: list[bytes] = []
        if now - self.last_status >= 1.0:
            self.last_status = now
            out += self.statuses(ts)
        if now - self.last_positions >= POSITION_EVERY_S:
            self.last_positions = now
            out += self.positions(ts)
        return out

    def snapshot(self, ts: str) -> list[bytes]:
        """Every input once: what the producer sends first, so every NAV is ok from the start."""
        out = self.statuses(ts) + self.positions(ts)
        out += [self.price_event(b, s, ts) for b in REF_PRICE for s in PRICE_SOURCES]
        out += [self.balance_event(v, a, asset, ts) for v, a, _ in ACCOUNTS for asset in HOLDINGS]
        return out

    def chunk(self, n: int) -> list[bytes]:
        """``n`` prices and balances (75% / 25%)."""
        ts = str(time.time_ns() // 1_000_000)
        out: list[bytes] = []
        rng = self.rng
        while len(out) < n:
            if rng.random() < 0.75:
                out.append(self.price_event(rng.choice(("BTC", "ETH")), rng.choice(PRICE_SOURCES), ts))
            else:
                venue, account, _ = rng.choice(ACCOUNTS)
                out.append(self.balance_event(venue, account, rng.choice(("USDT", "BTC", "ETH")), ts))
        return out


def _connect_raw(url: str) -> socket.socket:
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise SystemExit("only redis://[user:password@]host:port/db URLs are supported by the load generator")
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    db = (parts.path or "/0").lstrip("/") or "0"
    setup = []
    if parts.password:
        setup.append(
            _resp([b"AUTH"] + ([parts.username.encode()] if parts.username else []) + [parts.password.encode()])
        )
    setup.append(_resp([b"SELECT", db.encode()]))
    sock.sendall(b"".join(setup))
    _replies(sock, len(setup))
    return sock


def _replies(sock: socket.socket, n: int, reader: Any = None) -> None:
    """Read ``n`` replies; raise on an error reply."""
    import hiredis

    reader = reader or hiredis.Reader()
    got = 0
    while got < n:
        reply = reader.gets()
        if reply is False:
            data = sock.recv(1 << 16)
            if not data:
                raise SystemExit("Redis closed the connection")
            reader.feed(data)
            continue
        if isinstance(reply, hiredis.ReplyError):
            raise SystemExit(f"Redis refused a command: {reply}")
        got += 1


def worker_events(url: str, prefix: str, rate: int) -> dict[str, Any]:
    """Pace ``rate`` events/s into ``P:events`` until SIGTERM; report what was sent."""
    import hiredis

    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sock = _connect_raw(url)
    reader = hiredis.Reader()
    mix = EventMix(f"{prefix}:events")
    first = mix.snapshot(str(time.time_ns() // 1_000_000))
    sock.sendall(b"".join(first))
    _replies(sock, len(first), reader)
    print("READY", flush=True)
    start = time.monotonic()
    sent = 0
    chunks = 0
    biggest = 0
    cpu0 = time.process_time()
    while not stop:
        now = time.monotonic()
        due = int((now - start) * rate) - sent
        payload = mix.scheduled(now)
        if due > 0:
            payload += mix.chunk(min(due, MAX_CHUNK))
            sent += min(due, MAX_CHUNK)
        if payload:
            sock.sendall(b"".join(payload))
            _replies(sock, len(payload), reader)
            chunks += 1
            biggest = max(biggest, len(payload))
        time.sleep(CHUNK_S)
    elapsed = time.monotonic() - start
    sock.close()
    return {
        "sent": sent,
        "seconds": elapsed,
        "rate": sent / elapsed if elapsed else 0.0,
        "chunks": chunks,
        "biggest_chunk": biggest,
        "behind_at_stop": max(0, int(elapsed * rate) - sent),
        "cpu_s": time.process_time() - cpu0,
    }


# --- the responders (each in its own subprocess) -------------------------------------------------


# --- the order sender and the decision reader (each its own subprocess) -----------------------


class OrderMix:
    """Orders from the three accounts for BTCUSDT and ETHUSDT; 30% carry a limit price, the
    rest are valued at the last price; about 1% are too large for the account."""

    def __init__(self, stream: str, tag: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.head = [b"XADD", stream.encode(), b"*"]
        self.tag = tag

    def xadd(self, seq: int) -> bytes:
        rng = self.rng
        venue, account, _ = rng.choice(ACCOUNTS)
        base = rng.choice(("BTC", "ETH"))
        low, high = ORDER_QTY[base]
        qty = rng.uniform(low, high)
        if rng.random() < OVERSIZED:
            qty = REF_PRICE["BTC"] / REF_PRICE[base] * 2.0  # about 120k USD: over 10% of the account's NAV
        fields = [
            ("type", "order"),
            ("order_id", f"{self.tag}-{seq}"),
            ("venue", venue),
            ("account", account),
            ("symbol", SYMBOLS[base]),
            ("side", rng.choice(("buy", "sell"))),
            ("qty", f"{qty:.4f}"),
        ]
        if rng.random() < 0.3:
            fields.append(("price", f"{REF_PRICE[base]:.2f}"))
        fields.append(("ts", str(time.time_ns() // 1_000_000)))
        return _resp(self.head + [x.encode() for kv in fields for x in kv])


def _stop_flag() -> list[bool]:
    flag = [False]

    def on_signal(signum: int, frame: Any) -> None:
        flag[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return flag


def worker_orders(
    url: str,
    prefix: str,
    rate: int,
    seconds: float,
    tag: str,
    seed: int,
    out: str,
    burst_events: int = -1,
) -> dict[str, Any]:
    """Send orders at ``rate`` for ``seconds``, each with its own XADD (its own write to the
    socket), ``perf_counter_ns`` taken just before it. Replies are read as they come, not
    waited for before the next order, so the sender's pace does not hang on round trips. An
    order is due at ``start + k / rate``; one that leaves late (the machine was busy) is sent
    at once, so the rate holds, and how late it left is reported. Writes ``[seq, due_ns,
    sent_ns]`` to ``out``.

    ``burst_events >= 0`` is the burst shape: every ``BURST_ORDERS / rate`` seconds, one write
    of ``burst_events`` events (prices and balances, XADDed first) followed by
    ``BURST_ORDERS`` orders, as a strategy reacting to a market move would send them."""
    import hiredis

    stop = _stop_flag()
    sock = _connect_raw(url)
    reader = hiredis.Reader()
    acked = 0
    pending_replies = 0

    def drain(block: bool) -> None:
        nonlocal acked
        while True:
            reply = reader.gets()
            if reply is False:
                try:
                    data = sock.recv(1 << 16, 0 if block else socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return
                if not data:
                    raise SystemExit("orders: Redis closed the connection")
                reader.feed(data)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise SystemExit(f"orders: Redis refused an XADD: {reply}")
            acked += 1
            if block and acked >= pending_replies:
                return

    mix = OrderMix(f"{prefix}:orders", tag, seed)
    events = EventMix(f"{prefix}:events", seed=seed + 1)
    per_write = BURST_ORDERS if burst_events >= 0 else 1
    start = time.perf_counter_ns() + 100_000_000
    print(f"READY {start}", flush=True)
    interval = 1e9 / rate * per_write
    end = start + int(seconds * 1e9)
    records: list[tuple[int, int, int]] = []
    cpu0 = time.process_time()
    k = 0
    while not stop[0]:
        due = start + int(k * interval)
        if due >= end:
            break
        now = time.perf_counter_ns()
        if now < due:
            drain(block=False)
            time.sleep((due - now) / 1e9)
            continue
        first = len(records)  # the burst's orders are numbered first, first + 1, ...
        if per_write == 1:
            payload = mix.xadd(first)
            expected = 1
        else:
            moved = events.chunk(burst_events)
            payload = b"".join(moved + [mix.xadd(first + n) for n in range(per_write)])
            expected = len(moved) + per_write
        sent = time.perf_counter_ns()
        sock.sendall(payload)
        pending_replies += expected
        records.extend([(first + n, due, sent) for n in range(per_write)])
        k += 1
    if acked < pending_replies:
        drain(block=True)
    cpu = time.process_time() - cpu0
    sock.close()
    with open(out, "wb") as f:
        f.write(msgspec.json.encode({"start": start, "records": records}))
    late = sorted((s - d) / 1e6 for _, d, s in records)
    return {
        "sent": len(records),
        "cpu_s": cpu,
        "late_p99_ms": percentile(late, 99),
        "late_max_ms": late[-1] if late else 0.0,
    }


def worker_decisions(url: str, prefix: str, out: str) -> dict[str, Any]:
    """``XREAD BLOCK`` ``P:decisions`` until SIGTERM; note when each order_id's first decision
    arrived (``perf_counter_ns`` once the reply is read). Writes ``{order_id: [ns, decision,
    reasons]}`` to ``out``."""
    import hiredis

    stop = _stop_flag()
    sock = _connect_raw(url)
    key = f"{prefix}:decisions".encode()
    last = b"0-0"
    arrived: dict[str, tuple[int, str, str]] = {}
    print("READY", flush=True)
    cpu0 = time.process_time()
    reads = 0
    final = False
    while not final:
        final = stop[0]  # once stopped, one last read without waiting: what arrived meanwhile counts
        block = [] if final else [b"BLOCK", b"100"]
        sock.sendall(_resp([b"XREAD", b"COUNT", b"100000", *block, b"STREAMS", key, last]))
        reader = hiredis.Reader()
        reply: Any = False
        while reply is False:
            data = sock.recv(1 << 20)
            if not data:
                raise SystemExit("decisions: Redis closed the connection")
            reader.feed(data)
            reply = reader.gets()
        now = time.perf_counter_ns()
        reads += 1
        if isinstance(reply, hiredis.ReplyError):
            raise SystemExit(f"decisions: {reply}")
        for _, items in reply or ():
            for entry_id, flat in items:
                last = entry_id
                fields = dict(zip(flat[::2], flat[1::2]))
                order_id = fields.get(b"order_id", b"").decode()
                if order_id not in arrived:
                    arrived[order_id] = (
                        now,
                        fields.get(b"decision", b"").decode(),
                        fields.get(b"reasons", b"").decode(),
                    )
    cpu = time.process_time() - cpu0
    sock.close()
    with open(out, "wb") as f:
        f.write(msgspec.json.encode(arrived))
    return {"decisions": len(arrived), "reads": reads, "cpu_s": cpu}


class OrderFlow:
    """What the sender and the reader recorded for one run, joined by order_id."""

    def __init__(self, tag: str, sent_file: str, arrived_file: str, window: tuple[int, int]) -> None:
        with open(sent_file, "rb") as f:
            sent = msgspec.json.decode(f.read())
        with open(arrived_file, "rb") as f:
            arrived = msgspec.json.decode(f.read())
        self.sent: dict[str, int] = {}
        self.late: dict[str, int] = {}
        #: The measured orders: those due within the window.
        self.window: list[str] = []
        self.sent_in_window = 0
        for seq, due, at in sent["records"]:
            order_id = f"{tag}-{seq}"
            self.sent[order_id] = at
            self.late[order_id] = at - due
            if window[0] <= due < window[1]:
                self.window.append(order_id)
            if window[0] <= at < window[1]:
                self.sent_in_window += 1
        self.arrived: dict[str, tuple[int, str, str]] = {k: tuple(v) for k, v in arrived.items()}

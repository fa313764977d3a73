"""Process-level tests on a real Redis: real ``navstream run`` subprocesses, real signals.

Each test starts consumers as ``python -m navstream.cli run ...`` with a TOML config that loads
the test plugin ``procplugins.slow_recorder`` (tests/procplugins/) through ``[plugins] modules``.
That plugin records every Balance as ``P:state:rec:<venue>:<account>:<asset>``, sleeps per batch
so signals land mid-batch, and raises on the assets in ``fail_assets``. Outcomes are read back
with a plain ``redis.Redis`` client: state hashes, XPENDING, XINFO GROUPS, ``P:dlq``,
``P:alerts`` and ``P:heartbeat:<consumer>``. Nothing here mocks Redis.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from support import TESTS_DIR

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

GROUP = "g"
PLUGIN = "procplugins.slow_recorder"
VENUE, ACCOUNT = "binance", "main"


# --- helpers ------------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write_config(path: Path, *, consumer: dict[str, Any] | None = None, recorder: dict[str, Any] | None = None) -> Path:
    """A TOML config loading the slow_recorder plugin; values are ints, floats or str lists."""

    def toml(value: Any) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(f'"{v}"' for v in value) + "]"
        return repr(value)

    settings = {"batch_size": 10, "claim_idle_ms": 1500, "block_ms": 200, "tick_ms": 200, **(consumer or {})}
    lines = [
        "[consumer]",
        *(f"{k} = {toml(v)}" for k, v in settings.items()),
        "[plugins]",
        f'modules = ["{PLUGIN}"]',
        "[slow_recorder]",
        *(f"{k} = {toml(v)}" for k, v in (recorder or {}).items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    env["NAVSTREAM_LOG_STREAM"] = "stderr"  # `run` logs to stdout by default; keep logs apart from output
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    #: stderr (JSON log lines) and stdout (command output)
    log: Path
    out: Path

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8")

    def tail(self, lines: int = 40) -> str:
        parts = [f"--- {self.name} (rc={self.popen.poll()}) ---"]
        for path in (self.out, self.log):
            try:
                parts += path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            except OSError:
                parts.append(f"<no {path.name}>")
        return "\n".join(parts)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout}s\n{self.tail()}")


@dataclass
class Cluster:
    """Starts navstream CLI subprocesses against one prefix; kills leftovers at teardown."""

    url: str
    prefix: str
    tmp: Path
    procs: list[Proc] = field(default_factory=list)
    #: Other prefixes a test uses; their keys are deleted after every process is gone.
    extra_prefixes: list[str] = field(default_factory=list)

    def cli(self, *args: str, name: str) -> Proc:
        log, out = self.tmp / f"{name}.log", self.tmp / f"{name}.out"
        with log.open("wb") as err_fh, out.open("wb") as out_fh:  # the child keeps its own copies
            popen = subprocess.Popen(
                [sys.executable, "-m", "navstream.cli", *args],
                stdout=out_fh,
                stderr=err_fh,
                env=child_env(),
                cwd=self.tmp,
            )
        proc = Proc(name, popen, log, out)
        self.procs.append(proc)
        return proc

    def run(self, consumer: str, config: Path, *extra: str, prefix: str | None = None) -> Proc:
        return self.cli(
            "run",
            "--redis-url",
            self.url,
            "--prefix",
            prefix or self.prefix,
            "--group",
            GROUP,
            "--consumer",
            consumer,
            "--config",
            str(config),
            *extra,
            name=f"{prefix or self.prefix}-{consumer}",
        )

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - nothing more we can do
                pass


@pytest.fixture
def r(real_backend: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_backend.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def raw(real_backend: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_backend.url, decode_responses=False)
    yield client
    client.close()


@pytest.fixture
def cluster(real_backend: Any, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(real_backend.url, real_backend.prefix, tmp_path)
    try:
        yield c
    finally:
        c.kill_all()
        if c.extra_prefixes:
            client = redis.Redis.from_url(c.url)
            try:
                for prefix in c.extra_prefixes:
                    stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
                    if stale:
                        client.delete(*stale)
            finally:
                client.close()


def wait_until(pred: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{on_fail()}")


def balance(asset: str, value: str, ts: int, *, venue: str = VENUE, account: str = ACCOUNT) -> dict[str, str]:
    return {"type": "balance", "venue": venue, "account": account, "asset": asset, "balance": value, "ts": str(ts)}


def xadd_all(client: redis.Redis, prefix: str, entries: list[dict[Any, Any]]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(f"{prefix}:events", fields)
    return [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]


def rec_key(prefix: str, asset: str, venue: str = VENUE, account: str = ACCOUNT) -> str:
    return f"{prefix}:state:rec:{venue}:{account}:{asset}"


def recorded(r: redis.Redis, prefix: str) -> dict[str, dict[str, str]]:
    """Every ``P:state:rec:*`` hash, by key without the prefix."""
    keys = sorted(r.scan_iter(match=f"{prefix}:state:rec:*", count=1000))
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return {key[len(prefix) + 1 :]: value for key, value in zip(keys, pipe.execute())}


def count_recorded(r: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in r.scan_iter(match=f"{prefix}:state:rec:*", count=1000))


def group_info(r: redis.Redis, prefix: str) -> dict[str, Any]:
    (info,) = [g for g in r.xinfo_groups(f"{prefix}:events") if g["name"] == GROUP]
    return info


def group_pending(r: redis.Redis, prefix: str) -> int:
    return int(r.xpending(f"{prefix}:events", GROUP)["pending"])


def consumer_pending(r: redis.Redis, prefix: str, consumer: str) -> list[str]:
    rows = r.xpending_range(f"{prefix}:events", GROUP, min="-", max="+", count=10_000, consumername=consumer)
    return [row["message_id"] for row in rows]


def dead_letters(raw: redis.Redis, prefix: str) -> dict[str, dict[bytes, bytes]]:
    """``P:dlq`` entries as bytes, by the original entry id (``dlq_id``)."""
    return {fields[b"dlq_id"].decode(): fields for _, fields in raw.xrange(f"{prefix}:dlq")}


def alerts(r: redis.Redis, prefix: str) -> list[dict[str, str]]:
    return [fields for _, fields in r.xrange(f"{prefix}:alerts")]


def assert_all_recorded(r: redis.Redis, prefix: str, expected: dict[str, str], tails: str = "") -> None:
    """``expected``: asset -> balance; exactly these state hashes exist, with these balances."""
    state = recorded(r, prefix)
    want = {f"state:rec:{VENUE}:{ACCOUNT}:{a}": b for a, b in expected.items()}
    got = {k: v.get("balance") for k, v in state.items()}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if Decimal(got[k]) != Decimal(want[k]))
    assert not (missing or extra or wrong), (
        f"{len(missing)} missing (e.g. {missing[:5]}), {len(extra)} unexpected (e.g. {extra[:5]}), "
        f"{len(wrong)} wrong (e.g. {[(k, got[k], want[k]) for k in wrong[:5]]})\n{tails}"
    )


# --- 1. SIGKILL mid-batch -----------------------------------------------------------------------


def test_sigkill_mid_batch_another_consumer_reclaims_everything(
    cluster: Cluster, r: redis.Redis, raw: redis.Redis, tmp_path: Path
) -> None:
    prefix = cluster.prefix
    base = now_ms() - 60_000
    expected = {f"A{i:03d}": f"{i}.{i % 7}5" for i in range(300)}
    xadd_all(r, prefix, [balance(a, b, base + i) for i, (a, b) in enumerate(expected.items())])
    cfg = write_config(tmp_path / "kill.toml", recorder={"delay_s": 0.05})

    a = cluster.run("A", cfg)
    # Mid-run: some processed, not all, and a batch of A's in flight (read, not acknowledged).
    wait_until(
        lambda: 30 <= count_recorded(r, prefix) < 300 and consumer_pending(r, prefix, "A"),
        15,
        "consumer A to be mid-run with a batch pending",
        cluster.tails,
    )
    a.popen.send_signal(signal.SIGKILL)
    assert a.wait(5) == -signal.SIGKILL
    orphaned = consumer_pending(r, prefix, "A")
    assert orphaned, "SIGKILL must land while A holds unacknowledged entries"
    assert count_recorded(r, prefix) < 300, "A must not have finished before it was killed"

    read_by_a = int(group_info(r, prefix)["entries-read"])

    b = cluster.run("B", cfg, "--until-idle", "3")
    assert b.wait(20) == 0, cluster.tails()

    assert_all_recorded(r, prefix, expected, cluster.tails())
    assert group_pending(r, prefix) == 0, cluster.tails()
    assert consumer_pending(r, prefix, "A") == []
    info = group_info(r, prefix)
    assert info["entries-read"] == 300 and info["lag"] == 0
    assert raw.xlen(f"{prefix}:dlq") == 0, dead_letters(raw, prefix)
    # B did exactly A's orphans (reclaimed with XAUTOCLAIM) plus what A never read: no entry
    # lost, none done twice by B.
    heartbeat = r.hgetall(f"{prefix}:heartbeat:B")
    assert heartbeat["status"] == "stopped"
    assert int(heartbeat["processed"]) == len(orphaned) + (300 - read_by_a), (heartbeat, len(orphaned), read_by_a)
    assert '"event": "reclaimed"' in b.log.read_text(encoding="utf-8"), b.tail()


# --- 2. SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_finishes_the_batch_in_flight_and_leaves_nothing_pending(
    cluster: Cluster, r: redis.Redis, raw: redis.Redis, tmp_path: Path
) -> None:
    prefix = cluster.prefix
    base = now_ms() - 60_000
    expected = {f"T{i:03d}": f"-{i}.5" for i in range(200)}
    xadd_all(r, prefix, [balance(a, b, base + i) for i, (a, b) in enumerate(expected.items())])
    cfg = write_config(tmp_path / "term.toml", recorder={"delay_s": 0.1})

    first = cluster.run("first", cfg)
    wait_until(
        lambda: 20 <= count_recorded(r, prefix) < 200 and consumer_pending(r, prefix, "first"),
        15,
        "the first consumer to be mid-batch",
        cluster.tails,
    )
    first.popen.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert first.wait(5) == 0, cluster.tails()
    assert time.monotonic() - started < 3

    assert consumer_pending(r, prefix, "first") == [], "the batch in flight must be finished and acknowledged"
    assert group_pending(r, prefix) == 0
    heartbeat = r.hgetall(f"{prefix}:heartbeat:first")
    assert heartbeat["status"] == "stopped", heartbeat
    done = count_recorded(r, prefix)
    info = group_info(r, prefix)
    # Everything it read it processed, and it stopped mid-run: the rest is still unread.
    assert int(heartbeat["processed"]) == done == info["entries-read"], (heartbeat, done, info)
    assert 0 < done < 200 and info["lag"] == 200 - done

    second = cluster.run("second", cfg, "--until-idle", "1")
    assert second.wait(20) == 0, cluster.tails()
    assert_all_recorded(r, prefix, expected, cluster.tails())
    assert int(r.hget(f"{prefix}:heartbeat:second", "processed")) == 200 - done
    assert group_pending(r, prefix) == 0
    assert group_info(r, prefix)["lag"] == 0
    assert raw.xlen(f"{prefix}:dlq") == 0


# --- 3. poison and malformed entries ------------------------------------------------------------


def malformed_entries(ts: int) -> dict[str, tuple[dict[Any, Any], str]]:
    """name -> (fields, text the dead letter's error must contain, naming the field)."""
    return {
        "missing_asset": (
            {"type": "balance", "venue": VENUE, "account": ACCOUNT, "balance": "1", "ts": str(ts)},
            "`asset`",
        ),
        "balance_abc": (balance("BAD1", "abc", ts), "`balance`"),
        "unknown_type": ({**balance("BAD2", "1", ts), "type": "balanse"}, "type"),
        "ts_seconds": (balance("BAD3", "1", ts // 1000), "`ts`"),
        "missing_type": ({k: v for k, v in balance("BAD4", "1", ts).items() if k != "type"}, "`type`"),
    }


NON_UTF8 = {b"type": b"balance", b"venue": b"bin\xffance", b"account": b"main", b"asset": b"BAD5", b"balance": b"1"}


def test_poison_and_malformed_entries_reach_the_dlq_while_the_rest_is_processed(
    cluster: Cluster, r: redis.Redis, raw: redis.Redis, tmp_path: Path
) -> None:
    prefix = cluster.prefix
    ts = now_ms() - 60_000
    valid = {f"V{i:02d}": f"{i}.25" for i in range(40)}
    poison_assets = ["P1", "P2", "P3"]
    malformed = malformed_entries(ts)
    plan: list[tuple[str, str, dict[Any, Any]]] = [
        ("valid", a, balance(a, b, ts + i)) for i, (a, b) in enumerate(valid.items())
    ]
    for n, (name, (fields, _)) in enumerate(malformed.items()):
        plan.insert(3 + 7 * n, ("malformed", name, fields))
    plan.insert(20, ("malformed", "non_utf8", {**NON_UTF8, b"ts": str(ts).encode()}))
    for n, asset in enumerate(poison_assets):
        plan.insert(5 + 11 * n, ("poison", asset, balance(asset, "7", ts)))
    ids = xadd_all(raw, prefix, [fields for _, _, fields in plan])
    by_id = {entry_id: item for entry_id, item in zip(ids, plan)}

    cfg = write_config(
        tmp_path / "poison.toml",
        consumer={"max_deliveries": 2, "claim_idle_ms": 600, "block_ms": 100, "tick_ms": 100},
        recorder={"fail_assets": poison_assets},
    )
    started_ms = now_ms()
    proc = cluster.run("c1", cfg, "--until-idle", "2.5")
    assert proc.wait(20) == 0, cluster.tails()

    assert_all_recorded(r, prefix, valid, cluster.tails())
    assert group_pending(r, prefix) == 0
    assert r.hlen(f"{prefix}:state:failures") == 0, "resolved failures must be forgotten"

    dlq = dead_letters(raw, prefix)
    expect_dead = {i: item for i, item in by_id.items() if item[0] != "valid"}
    assert sorted(dlq) == sorted(expect_dead), (sorted(dlq), sorted(expect_dead))
    for entry_id, (kind, name, fields) in expect_dead.items():
        dead = dlq[entry_id]
        original = {k: v for k, v in dead.items() if not k.startswith(b"dlq_")}
        sent = {
            (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
            for k, v in fields.items()
        }
        assert original == sent, (name, original, sent)
        assert dead[b"dlq_stream"] == f"{prefix}:events".encode()
        assert dead[b"dlq_consumer"] == b"c1"
        assert started_ms - 1000 <= int(dead[b"dlq_ts"]) <= now_ms()
        error = dead[b"dlq_error"].decode()
        if kind == "malformed":
            must = "venue" if name == "non_utf8" else malformed[name][1]
            assert dead[b"dlq_deliveries"] == b"1", (name, dead)
            assert must in error, (name, error)
        else:
            assert dead[b"dlq_deliveries"] == b"2", (name, dead)
            assert f"plugin {PLUGIN!r}: RuntimeError: slow_recorder refuses poison asset" in error, error
    assert not any(k.startswith(f"state:rec:{VENUE}:{ACCOUNT}:P") for k in recorded(r, prefix))

    plugin_errors = [a for a in alerts(r, prefix) if a["code"] == "plugin_error"]
    assert plugin_errors and all(a["severity"] == "critical" for a in plugin_errors)
    assert any(PLUGIN in a["message"] and "RuntimeError" in a["message"] for a in plugin_errors), plugin_errors
    heartbeat = r.hgetall(f"{prefix}:heartbeat:c1")
    assert int(heartbeat["dead_lettered"]) == len(expect_dead)
    assert int(heartbeat["processed"]) == len(valid)


def test_each_poison_dead_letter_carries_its_own_error(
    cluster: Cluster, r: redis.Redis, raw: redis.Redis, tmp_path: Path
) -> None:
    prefix = cluster.prefix
    ts = now_ms() - 60_000
    assets = ["P1", "V1", "P2", "V2", "P3"]
    ids = xadd_all(r, prefix, [balance(a, "1", ts) for a in assets])
    cfg = write_config(
        tmp_path / "own.toml", consumer={"max_deliveries": 1}, recorder={"fail_assets": ["P1", "P2", "P3"]}
    )
    assert cluster.run("c1", cfg, "--until-idle", "0.5").wait(15) == 0, cluster.tails()

    assert_all_recorded(r, prefix, {"V1": "1", "V2": "1"}, cluster.tails())
    dlq = dead_letters(raw, prefix)
    errors = {dlq[i][b"asset"].decode(): dlq[i][b"dlq_error"].decode() for i in dlq}
    assert sorted(errors) == ["P1", "P2", "P3"] and sorted(dlq) == sorted(ids[0:5:2])
    for asset, error in errors.items():
        assert error.endswith(f"refuses poison asset(s) {asset}"), (asset, error)


# --- 4. two consumers end in the same state as one ----------------------------------------------


def test_two_consumers_end_in_the_same_state_as_one(cluster: Cluster, r: redis.Redis, tmp_path: Path) -> None:
    prefix_one = cluster.prefix
    prefix_two = f"{cluster.prefix}-two"
    cluster.extra_prefixes.append(prefix_two)
    rng = random.Random(20240611)
    base = now_ms() - 600_000
    events: list[dict[str, str]] = []
    for k in range(25):
        asset = f"K{k:02d}"
        for ts in rng.sample(range(base, base + 500_000), 8):  # distinct ts per key
            events.append(balance(asset, f"{rng.randint(-10_000, 10_000)}.{rng.randint(0, 99):02d}", ts))
    rng.shuffle(events)
    expected: dict[str, tuple[int, str]] = {}
    for e in events:
        if e["asset"] not in expected or int(e["ts"]) > expected[e["asset"]][0]:
            expected[e["asset"]] = (int(e["ts"]), e["balance"])
    # The test is only worth something if newer snapshots often come before older ones.
    last_in_stream = {e["asset"]: e["balance"] for e in events}
    assert sum(last_in_stream[a] != b for a, (_, b) in expected.items()) >= 10

    for prefix in (prefix_one, prefix_two):
        xadd_all(r, prefix, events)
    cfg = write_config(tmp_path / "pair.toml", consumer={"batch_size": 5}, recorder={"delay_s": 0.05})
    procs = [
        cluster.run("solo", cfg, "--until-idle", "1.5", prefix=prefix_one),
        cluster.run("x", cfg, "--until-idle", "1.5", prefix=prefix_two),
        cluster.run("y", cfg, "--until-idle", "1.5", prefix=prefix_two),
    ]
    for proc in procs:
        assert proc.wait(25) == 0, cluster.tails()

    one, two = recorded(r, prefix_one), recorded(r, prefix_two)
    want = {f"state:rec:{VENUE}:{ACCOUNT}:{a}": {"ts": str(ts), "balance": b} for a, (ts, b) in expected.items()}
    assert one == want
    assert two == one
    for prefix in (prefix_one, prefix_two):
        assert group_pending(r, prefix) == 0
        assert group_info(r, prefix)["entries-read"] == len(events)
        assert r.xlen(f"{prefix}:dlq") == 0
    shares = [int(r.hget(f"{prefix_two}:heartbeat:{c}", "processed")) for c in ("x", "y")]
    assert sum(shares) == len(events) and min(shares) > 0, f"both consumers must share the work: {shares}"


# --- 5. --max-events and dlq replay -------------------------------------------------------------


def test_run_max_events_stops_after_n_and_leaves_the_rest_unread(
    cluster: Cluster, r: redis.Redis, tmp_path: Path
) -> None:
    prefix = cluster.prefix
    base = now_ms() - 60_000
    assets = [f"M{i:02d}" for i in range(50)]
    xadd_all(r, prefix, [balance(a, str(i), base + i) for i, a in enumerate(assets)])
    cfg = write_config(tmp_path / "max.toml", consumer={"batch_size": 7})

    proc = cluster.run("m", cfg, "--max-events", "20")
    assert proc.wait(15) == 0, cluster.tails()

    assert_all_recorded(r, prefix, {a: str(i) for i, a in enumerate(assets[:20])}, cluster.tails())
    info = group_info(r, prefix)
    assert info["entries-read"] == 20 and info["lag"] == 30, info
    assert group_pending(r, prefix) == 0
    assert r.hget(f"{prefix}:heartbeat:m", "processed") == "20"


def dlq_by_original(raw: redis.Redis, prefix: str) -> dict[tuple[tuple[bytes, bytes], ...], dict[bytes, bytes]]:
    out = {}
    for _, fields in raw.xrange(f"{prefix}:dlq"):
        original = tuple(sorted((k, v) for k, v in fields.items() if not k.startswith(b"dlq_")))
        out[original] = fields
    return out


def _replay_round_trip(
    cluster: Cluster, r: redis.Redis, raw: redis.Redis, tmp_path: Path, bad: list[dict[Any, Any]]
) -> None:
    prefix = cluster.prefix
    ts = now_ms() - 60_000
    good = {f"G{i}": f"{i}.5" for i in range(5)}
    entries: list[dict[Any, Any]] = [balance(a, b, ts + i) for i, (a, b) in enumerate(good.items())]
    entries[2:2] = bad
    xadd_all(raw, prefix, entries)
    cfg = write_config(tmp_path / "replay.toml")

    assert cluster.run("r1", cfg, "--until-idle", "0.5").wait(15) == 0, cluster.tails()
    first = dlq_by_original(raw, prefix)
    assert len(first) == len(bad), first

    listing = cluster.cli("dlq", "list", "--json", "--redis-url", cluster.url, "--prefix", prefix, name="list")
    assert listing.wait(15) == 0, cluster.tails()
    rows = json.loads(listing.stdout())
    assert sorted(row["dlq_error"] for row in rows) == sorted(d[b"dlq_error"].decode() for d in first.values())

    replay = cluster.cli("dlq", "replay", "--all", "--redis-url", cluster.url, "--prefix", prefix, name="replay")
    assert replay.wait(15) == 0, cluster.tails()
    assert replay.stdout().count("replayed ") == len(bad), cluster.tails()
    assert raw.xlen(f"{prefix}:dlq") == 0
    assert raw.xlen(f"{prefix}:events") == len(entries) + len(bad)
    replayed_ids = {i.decode() for i, _ in raw.xrange(f"{prefix}:events")[len(entries) :]}
    tail = {tuple(sorted(f.items())) for _, f in raw.xrange(f"{prefix}:events")[len(entries) :]}
    assert tail == set(first), "the original fields go back to P:events unchanged"

    assert cluster.run("r2", cfg, "--until-idle", "0.5").wait(15) == 0, cluster.tails()
    second = dlq_by_original(raw, prefix)
    assert set(second) == set(first)
    for original, dead in second.items():
        assert dead[b"dlq_error"] == first[original][b"dlq_error"]
        assert dead[b"dlq_deliveries"] == b"1"
        assert dead[b"dlq_consumer"] == b"r2"
        assert dead[b"dlq_id"].decode() in replayed_ids
    assert_all_recorded(r, prefix, good, cluster.tails())
    assert group_pending(r, prefix) == 0


def test_dlq_replay_all_puts_malformed_entries_back_and_they_fail_again_the_same_way(
    cluster: Cluster, r: redis.Redis, raw: redis.Redis, tmp_path: Path
) -> None:
    ts = now_ms() - 60_000
    _replay_round_trip(cluster, r, raw, tmp_path, [fields for fields, _ in malformed_entries(ts).values()])


def test_dlq_list_and_replay_handle_a_non_utf8_dead_letter_byte_for_byte(
    cluster: Cluster, r: redis.Redis, raw: redis.Redis, tmp_path: Path
) -> None:
    ts = now_ms() - 60_000
    _replay_round_trip(cluster, r, raw, tmp_path, [{**NON_UTF8, b"ts": str(ts).encode()}, balance("BAD1", "abc", ts)])

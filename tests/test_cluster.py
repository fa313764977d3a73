"""navstream on Redis Cluster (issue 8, "Beyond one Redis"): a private 3-node cluster on loopback
ports, started for the session and torn down after it.

With ``[redis] cluster = true`` every key is under the hash tag ``{<prefix>}``, so a deployment
lives in one slot and every script, MULTI and two-stream read of a step stays there; a desk
shards by venue with one prefix per shard (docs/scaling.md). Without redis-server/redis-cli the
tests are skipped, unless CI=true or NAVSTREAM_REQUIRE_REDIS=1, which make them fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from redis.cluster import RedisCluster as SyncRedisCluster
from support import START_MS, run_step

from navstream.app import App, ManualClock, SystemClock
from navstream.cli import main
from navstream.client import RiskClient
from navstream.config import ConfigError, load_settings
from navstream.contract.keys import Keys, hash_tagged
from navstream.ingest.runner import Ingest
from navstream.loop.consumer import Consumer
from navstream.ops.admin import collect_status
from navstream.plugin.manager import build_plugin_manager
from navstream.serve.status import read_consumers

REQUIRED = os.environ.get("CI") == "true" or os.environ.get("NAVSTREAM_REQUIRE_REDIS") == "1"
NODES = 3


# --- keys and settings (no cluster needed) -------------------------------------------------------


def test_keys_are_unchanged_without_cluster_and_hash_tagged_with_it() -> None:
    plain = Keys("navstream")
    assert (plain.prefix, plain.events, plain.state("nav", "latest"), plain.heartbeat("c")) == (
        "navstream",
        "navstream:events",
        "navstream:state:nav:latest",
        "navstream:heartbeat:c",
    )
    tagged = Keys("navstream", cluster=True)
    assert (
        tagged.prefix,
        tagged.events,
        tagged.orders,
        tagged.failures,
        tagged.stream("nav"),
        tagged.state("risk", "trading"),
        tagged.heartbeat("c"),
    ) == (
        "{navstream}",
        "{navstream}:events",
        "{navstream}:orders",
        "{navstream}:state:failures",
        "{navstream}:nav",
        "{navstream}:state:risk:trading",
        "{navstream}:heartbeat:c",
    )
    # a prefix that already holds a hash tag keeps it; an empty tag `{}` is no tag
    assert hash_tagged("{desk}-binance") == "{desk}-binance"
    assert hash_tagged("desk{}") == "{desk{}}"
    assert hash_tagged("a}b{") == "{a}b{}"


def test_the_cluster_setting_from_file_environment_and_its_errors(tmp_path: Path) -> None:
    assert load_settings(env={}).redis.cluster is False
    cfg = tmp_path / "c.toml"
    cfg.write_text('[redis]\nurl = "redis://10.0.0.1:7000"\ncluster = true\n')
    assert load_settings(cfg, env={}).redis.cluster is True
    for word, value in (("1", True), ("true", True), ("Yes", True), ("0", False), ("off", False)):
        assert load_settings(env={"NAVSTREAM_REDIS_CLUSTER": word}).redis.cluster is value
    with pytest.raises(ConfigError, match="NAVSTREAM_REDIS_CLUSTER: 'maybe' is not true or false"):
        load_settings(env={"NAVSTREAM_REDIS_CLUSTER": "maybe"})
    with pytest.raises(ConfigError, match="`cluster` needs a redis:// or rediss://"):
        load_settings(env={"NAVSTREAM_REDIS_CLUSTER": "true", "NAVSTREAM_REDIS_URL": "unix:///tmp/r.sock"})


# --- the cluster ---------------------------------------------------------------------------------


def _free_port() -> int:
    """A loopback port free for the node and for its cluster bus (port + 10000)."""
    for _ in range(200):
        port = random.randint(20_000, 55_000)
        ok = True
        for p in (port, port + 10_000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free loopback port pair")


class Cluster:
    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.url = f"redis://127.0.0.1:{ports[0]}/0"

    def client(self) -> SyncRedisCluster:
        return SyncRedisCluster.from_url(self.url, decode_responses=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server, cli_ = shutil.which("redis-server"), shutil.which("redis-cli")
    if not (server and cli_):
        message = "redis-server and redis-cli are needed for the Redis Cluster tests"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("cluster")
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for _ in range(NODES):
            port = _free_port()
            ports.append(port)
            procs.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--dir",
                        str(workdir),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--logfile",
                        str(workdir / f"{port}.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            _wait(lambda p=port: redis.Redis(port=p, socket_connect_timeout=0.2).ping(), "node up")
        subprocess.run(
            [
                cli_,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        for port in ports:
            _wait(lambda p=port: _cluster_ok(p), "cluster_state:ok")
        yield Cluster(ports)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port, decode_responses=True) as r:
        info = r.execute_command("CLUSTER INFO")
    return (info.get("cluster_state") if isinstance(info, dict) else None) == "ok" or "cluster_state:ok" in str(info)


def _wait(check: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster: timed out waiting for {what}")
        time.sleep(0.05)


SECTIONS = {
    "nav": {
        "max_age_s": 120,
        "publish_every_s": 600,
        "alert_every_s": 300,
        "pegs": {"USDT": "1"},
        "routes": {"BTC": "BTC/USDT"},
    },
}


def _settings(cluster: Cluster, prefix: str, name: str = "c-0", **consumer: Any) -> Any:
    return load_settings(
        env={},
        overrides={
            "redis": {"url": cluster.url, "prefix": prefix, "group": "g", "cluster": True},
            "consumer": {"name": name, **consumer},
        },
    )


@pytest.fixture
async def make_cluster_app(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Any]:
    apps: list[App] = []

    def factory(prefix: str, *, name: str = "c-0", clock: Any = None, **consumer: Any) -> App:
        settings = _settings(cluster, prefix, name, **consumer)
        risk = {
            "max_nav_age_s": 60,
            "max_order_notional": "50000",
            "max_order_pct_nav": 50,
            "max_gross_exposure_x": 3,
            "audit_dir": str(tmp_path / "audit" / prefix),
        }
        settings = msgspec.structs.replace(settings, extra={**SECTIONS, "risk": risk})
        loaded = build_plugin_manager(load_entrypoints=True, env={}, disabled=["source_monitor", "firestore"])
        app = App.create(settings, clock=clock or ManualClock(START_MS), plugins=loaded)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.aclose()
    client = cluster.client()
    try:
        for app in apps:
            for key in client.scan_iter(match=f"{app.keys.prefix}:*", count=1000):
                client.delete(key)
    finally:
        client.close()


def prefix() -> str:
    return f"nsc-{uuid.uuid4().hex[:8]}"


T0 = START_MS - 1_000


def funded(ts: int = T0) -> list[dict[str, str]]:
    return [
        {"type": "balance", "venue": "binance", "account": "main", "asset": "USDT", "balance": "100000", "ts": str(ts)},
        {"type": "price", "base": "BTC", "quote": "USDT", "price": "50000", "source": "binance-spot", "ts": str(ts)},
        # venue-wide, from the prices' source: it vouches for the account and the prices
        {
            "type": "source_status",
            "venue": "binance",
            "source": "binance-spot",
            "ok": "true",
            "error": "",
            "ts": str(ts),
        },
    ]


def order(order_id: str, qty: str = "0.1", ts: int = START_MS) -> dict[str, str]:
    return {
        "type": "order",
        "order_id": order_id,
        "venue": "binance",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": qty,
        "ts": str(ts),
    }


def _slots_of(cluster: Cluster, pattern: str) -> set[int]:
    client = cluster.client()
    try:
        return {client.keyslot(k) for k in client.scan_iter(match=pattern, count=1000)}
    finally:
        client.close()


async def _nothing_pending(app: App) -> None:
    for stream in app.keys.inputs:
        info = await app.redis.xpending(stream, app.group)
        assert info["pending"] == 0, (stream, info)


# --- the loop on the cluster ---------------------------------------------------------------------


async def test_nav_and_risk_run_on_the_cluster_in_one_slot(make_cluster_app: Any, cluster: Cluster) -> None:
    p = prefix()
    app = make_cluster_app(p)
    assert app.keys.events == f"{{{p}}}:events"
    consumer = Consumer(app)
    await consumer.setup()
    alerts = await run_step(app, consumer, *funded())
    assert not [a for a in alerts if a.get("severity") == "critical"], alerts
    for o in (order("o-1"), order("o-2", qty="5")):  # 5 BTC = 250,000 > 50,000: vetoed
        await app.redis.xadd(app.keys.orders, o)
    while await consumer.step(block_ms=1):
        pass
    await consumer.tick()
    decisions = [f for _, f in await app.redis.xrange(app.keys.decisions)]
    assert [(d["order_id"], d["decision"], d["nav"]) for d in decisions] == [
        ("o-1", "approve", "100000"),
        ("o-2", "veto", "100000"),
    ]
    latest = await app.redis.hgetall(app.keys.state("nav", "latest"))
    assert latest and any("100000" in v for v in latest.values())
    assert await app.redis.xlen(app.keys.dlq) == 0
    await _nothing_pending(app)
    # every key the deployment wrote, heartbeat and state included, is in the prefix's one slot
    assert len(_slots_of(cluster, f"{{{p}}}:*")) == 1


async def test_a_dead_consumers_entries_are_reclaimed_on_the_cluster(make_cluster_app: Any) -> None:
    p = prefix()
    app = make_cluster_app(p, name="alive", block_ms=1, claim_idle_ms=50)
    consumer = Consumer(app)
    await consumer.setup()
    for e in funded():
        await app.redis.xadd(app.keys.events, e)
    # a consumer that read them and died
    got = await app.redis.xreadgroup(app.group, "dead", {app.keys.events: ">"}, count=10)
    assert len(got[0][1]) == 3
    assert await consumer.step(block_ms=1) == 0
    await asyncio.sleep(0.1)
    assert await consumer.reclaim() == 3
    while await consumer.step(block_ms=1):
        pass
    await _nothing_pending(app)
    assert await app.redis.hgetall(app.keys.state("nav", "latest"))


async def test_status_and_the_status_page_read_the_cluster(
    make_cluster_app: Any, cluster: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = prefix()
    app = make_cluster_app(p, name="worker-1")
    consumer = Consumer(app)
    await consumer.setup()
    await run_step(app, consumer, *funded())
    status = await collect_status(app)
    assert status["prefix"] == f"{{{p}}}"
    assert [c["consumer"] for c in status["consumers"]] == ["worker-1"]
    assert status["streams"][app.keys.events]["length"] == 3
    assert [c["name"] for c in await read_consumers(app, list(app.keys.inputs))] == ["worker-1"]

    monkeypatch.setenv("NAVSTREAM_REDIS_CLUSTER", "true")
    monkeypatch.setenv("NAVSTREAM_GROUP", "g")
    code = await asyncio.to_thread(main, ["status", "--redis-url", cluster.url, "--prefix", p, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["prefix"] == f"{{{p}}}" and [c["consumer"] for c in data["consumers"]] == ["worker-1"]
    assert data["streams"][f"{{{p}}}:events"]["length"] == 3


async def test_publish_and_ingest_write_under_the_hash_tag(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = prefix()
    monkeypatch.setenv("NAVSTREAM_REDIS_CLUSTER", "1")
    price = {
        "type": "price",
        "base": "ETH",
        "quote": "USDT",
        "price": "3000",
        "source": "x",
        "ts": str(int(time.time() * 1000)),
    }
    code = await asyncio.to_thread(
        main, ["publish", "--redis-url", cluster.url, "--prefix", p, *(f"{k}={v}" for k, v in price.items())]
    )
    assert code == 0, capsys.readouterr().err

    settings = msgspec.structs.replace(
        _settings(cluster, p), extra={"sources": {"cg": {"kind": "fake-prices", "prices": {"BTC": "97000.5"}}}}
    )
    kinds = build_plugin_manager(env={}, load_entrypoints=False, modules=["procplugins.fake_source"]).source_kinds
    from navstream.app import default_connect

    client = default_connect(settings)(True)
    ingest = Ingest(settings, kinds, client, clock=SystemClock())
    try:
        assert await ingest.run_once() == {"cg": True}
    finally:
        await ingest.aclose()
        await client.aclose()
    c = cluster.client()
    try:
        events = [f for _, f in c.xrange(f"{{{p}}}:events")]
        assert [(e["type"], e.get("base")) for e in events] == [
            ("price", "ETH"),
            ("price", "BTC"),
            ("source_status", None),
        ]
        assert not c.exists(f"{p}:events")
        for key in c.scan_iter(match=f"{{{p}}}:*"):
            c.delete(key)
    finally:
        c.close()


async def test_the_risk_client_gets_decisions_from_the_cluster(make_cluster_app: Any, cluster: Cluster) -> None:
    p = prefix()
    app = make_cluster_app(p, clock=SystemClock(), block_ms=10)
    consumer = Consumer(app)
    await consumer.setup()
    await run_step(app, consumer, *funded(ts=int(time.time() * 1000)))
    runner = asyncio.create_task(consumer.run())
    try:
        async with RiskClient.connect(cluster.url, p, cluster=True) as client:
            d = await client.decide(
                order_id="rc-1", venue="binance", account="main", symbol="BTCUSDT", side="buy", qty="0.1", deadline_s=10
            )
        assert (d.decision, d.nav, d.timed_out) == ("approve", "100000", False)
    finally:
        consumer.request_stop()
        await asyncio.wait_for(runner, 15)
    await _nothing_pending(app)


async def test_venues_shard_over_the_nodes_one_prefix_each(make_cluster_app: Any, cluster: Cluster) -> None:
    """One deployment per venue, each its own prefix and slot: the shards land on different
    nodes, and each consumer's keys are all on its shard's node."""
    client = cluster.client()
    try:
        run = uuid.uuid4().hex[:6]
        by_node: dict[str, str] = {}
        for venue in (
            "binance",
            "okx",
            "bybit",
            "kraken",
            "deribit",
            "coinbase",
            "bitget",
            "gate",
            "mexc",
            "htx",
            "kucoin",
            "bitmex",
            "bitstamp",
            "gemini",
            "upbit",
            "bitfinex",
        ):
            p = f"desk-{run}-{venue}"
            node = client.get_node_from_key(Keys(p, cluster=True).events).name
            by_node.setdefault(node, p)
        assert len(by_node) >= 2, by_node
        shards = list(by_node.items())[:2]
        for node, p in shards:
            app = make_cluster_app(p, name=f"consumer-{p}")
            consumer = Consumer(app)
            await consumer.setup()
            await run_step(app, consumer, *funded())
            assert await app.redis.hgetall(app.keys.state("nav", "latest"))
            await _nothing_pending(app)
            host, port = node.rsplit(":", 1)
            direct = redis.Redis(host=host, port=int(port), decode_responses=True)
            try:
                slot = client.keyslot(app.keys.events)
                held = direct.execute_command("CLUSTER COUNTKEYSINSLOT", slot)
                assert held == len([k for k in client.scan_iter(match=f"{{{p}}}:*")]) > 3
            finally:
                direct.close()
        assert shards[0][0] != shards[1][0]
    finally:
        client.close()

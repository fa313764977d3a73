"""Soak test: consumers killed and restarted, Redis crashed and restarted, nothing lost.

On a private ``redis-server`` (a free loopback port, its own directory, AOF with
``appendfsync always``), three ``navstream run`` processes with the ``nav``, ``risk`` and
``source_monitor`` plugins consume what a producer thread writes at a steady pace: balances,
prices and source reports for three accounts (with late, older snapshots that must lose), orders
(some re-sent under the same order_id), and malformed entries. Every few seconds one consumer is
SIGKILLed and the one killed before is started again; halfway through, the redis-server itself is
SIGKILLed and restarted on the same port and directory. Then every consumer runs until the group
has read everything and nothing is pending, and the test checks that:

- every entry written is accounted for: the group read every entry of ``P:events`` and
  ``P:orders`` (lag 0), nothing is pending, and ``P:dlq`` holds exactly the malformed entries,
  once each;
- the stored inputs are exactly the last-``ts``-wins snapshot of what was sent;
- every order_id got an answer, the same every time it was answered, and the stored one;
- the NAV in ``P:state:nav:latest`` is the straight recomputation from that snapshot
  (``valuation.evaluate``, and by hand for the totals): value, status, ``as_of``, ``missing``.

Short by default (``NAVSTREAM_SOAK_SECONDS``, default 15 s of traffic, under a minute in all);
``NAVSTREAM_SOAK_SECONDS=300`` is the long form (docs/operations.md, "Soak test"). Without a
``redis-server`` binary it is skipped locally and fails in CI (``CI=true`` or
``NAVSTREAM_REQUIRE_REDIS=1``).
"""

from __future__ import annotations

import os
import shutil
import time
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from support.soakkit import ACCOUNTS, PAIRS, SOURCES, Fleet, Producer, RedisServer, event_key, now_ms, plan, poll

from navstream.plugins.nav.config import NavConfig
from navstream.plugins.nav.state import LATEST, decode_snapshot
from navstream.plugins.nav.valuation import Holding, Market, Quote, SourceState, evaluate

SECONDS = float(os.environ.get("NAVSTREAM_SOAK_SECONDS", "15"))
#: A consumer is killed (and the one killed before restarted) this often.
CHAOS_EVERY_S = float(os.environ.get("NAVSTREAM_SOAK_CHAOS_S", "2.5"))
#: Seconds to wait for the group to drain once the producer is done (slow CI machines).
DRAIN_S = 60.0
PREFIX, GROUP = "soak", "g"
CONSUMERS = ["c1", "c2", "c3"]
PLUGINS = "nav,risk,source_monitor"
STRICT = os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("NAVSTREAM_REQUIRE_REDIS") == "1"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(SECONDS * 3 + DRAIN_S + 90))]


def write_config(path: Path, audit_dir: Path) -> Path:
    accounts = "\n".join(f'[[nav.accounts]]\nvenue = "{v}"\naccount = "{a}"\nkind = "{k}"\n' for v, a, k, _ in ACCOUNTS)
    path.write_text(
        f"""
[consumer]
batch_size = 20
block_ms = 200
tick_ms = 250
claim_idle_ms = 2000
max_deliveries = 10
reconnect_max_ms = 500

[nav]
quote = "USD"
max_age_s = 900
publish_every_s = 5
pegs = {{ USDT = "1" }}
routes = {{ BTC = "BTC/USDT" }}

{accounts}
[risk]
audit_dir = "{audit_dir}"
max_nav_age_s = 900

[source_monitor]
max_silence_s = 900
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if STRICT:
            pytest.fail("the soak test needs a redis-server binary on PATH (CI)")
        pytest.skip("no redis-server binary on PATH")
    return binary


@pytest.fixture
def server(redis_binary: str, tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(redis_binary, tmp_path / "redis")
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def group_state(r: redis.Redis, stream: str) -> dict[str, Any]:
    groups = [g for g in r.xinfo_groups(stream) if g["name"] in (GROUP, GROUP.encode())]
    if not groups:
        return {"missing": True}
    g = groups[0]
    return {"entries-read": g["entries-read"], "lag": g["lag"], "pending": g["pending"], "xlen": r.xlen(stream)}


def held_by(r: redis.Redis, consumer: str) -> list[Any]:
    """Entries of both streams pending for ``consumer`` (read, not acknowledged)."""
    try:
        return [
            row
            for name in ("events", "orders")
            for row in r.xpending_range(f"{PREFIX}:{name}", GROUP, min="-", max="+", count=1000, consumername=consumer)
        ]
    except redis.ResponseError:  # NOGROUP: no consumer has created the group yet
        return []


def drained(r: redis.Redis) -> bool:
    for name in ("events", "orders"):
        st = group_state(r, f"{PREFIX}:{name}")
        if st.get("missing") or st["lag"] != 0 or st["pending"] != 0 or st["entries-read"] != st["xlen"]:
            return False
    return True


def expected_inputs(sent: list[Any]) -> dict[tuple[str, ...], tuple[int, dict[str, str]]]:
    """Last ts wins per key, over every valid and late event sent."""
    latest: dict[tuple[str, ...], tuple[int, dict[str, str]]] = {}
    for s in sent:
        if s.stream != "events" or s.kind not in ("valid", "late"):
            continue
        key, ts = event_key(s.fields), int(s.fields["ts"])
        if key not in latest or ts >= latest[key][0]:
            latest[key] = (ts, s.fields)
    return latest


def recompute(cfg: NavConfig, latest: dict[tuple[str, ...], tuple[int, dict[str, str]]], now: int) -> dict[str, Any]:
    balances: dict[tuple[str, str], dict[str, Holding]] = defaultdict(dict)
    quotes, sources = [], []
    for key, (ts, f) in latest.items():
        if key[0] == "balance":
            balances[(f["venue"], f["account"])][f["asset"]] = Holding(
                Decimal(f["balance"]), Decimal(f.get("unrealized_pnl", "0")), ts
            )
        elif key[0] == "price":
            quotes.append(Quote(f["base"], f["quote"], f["source"], Decimal(f["price"]), ts))
        else:
            sources.append(
                SourceState(
                    f["venue"], f["source"], f.get("account") or None, f["ok"] == "true", f.get("error", ""), ts
                )
            )
    snaps = evaluate(cfg, balances, Market(cfg, quotes, sources, now), details=False)
    return {s.scope_id: s for s in snaps}


def by_hand(latest: dict[tuple[str, ...], tuple[int, dict[str, str]]]) -> dict[str, Decimal]:
    """Account and total NAV the simple way: USD 1, USDT 1, BTC at the newest BTC/USDT quote,
    ETH at the newest ETH/USD quote (all fresh, all within the divergence limit)."""
    newest: dict[str, tuple[int, Decimal]] = {}
    for key, (ts, f) in latest.items():
        if key[0] == "price" and (f["base"] not in newest or ts > newest[f["base"]][0]):
            newest[f["base"]] = (ts, Decimal(f["price"]))
    unit = {"USD": Decimal(1), "USDT": Decimal(1), "BTC": newest["BTC"][1], "ETH": newest["ETH"][1]}
    out: dict[str, Decimal] = defaultdict(Decimal)
    for key, (_, f) in latest.items():
        if key[0] == "balance":
            value = (Decimal(f["balance"]) + Decimal(f.get("unrealized_pnl", "0"))) * unit[f["asset"]]
            out[f"account:{f['venue']}/{f['account']}"] += value
            out["total"] += value
    return out


def stored_latest(r: redis.Redis) -> dict[str, Any]:
    raw = r.hgetall(f"{PREFIX}:state:{':'.join(LATEST)}")
    return {k.decode(): decode_snapshot(k.decode(), v.decode()) for k, v in raw.items()}


def nav_mismatches(
    cfg: NavConfig, latest: dict[tuple[str, ...], tuple[int, dict[str, str]]], r: redis.Redis
) -> list[str]:
    stored = stored_latest(r)
    problems = []
    now = max((s.computed_at for s in stored.values()), default=now_ms())
    want = recompute(cfg, latest, now)
    for sid in want:
        got = stored.get(sid)
        if got is None:
            problems.append(f"{sid}: not stored")
            continue
        mine = recompute(cfg, latest, got.computed_at)[sid]  # judged at the same instant
        for attr in ("nav", "status", "as_of", "missing", "stale_sources"):
            if getattr(got, attr) != getattr(mine, attr):
                problems.append(f"{sid}.{attr}: stored {getattr(got, attr)!r} != recomputed {getattr(mine, attr)!r}")
    extra = sorted(set(stored) - set(want))
    if extra:
        problems.append(f"scopes stored but not expected: {extra}")
    return problems


def test_soak_consumers_and_redis_restarts_lose_nothing(server: RedisServer, tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "soak.toml", tmp_path / "audit")
    nav_cfg = msgspec.convert(tomllib.loads(cfg_path.read_text())["nav"], NavConfig, strict=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(server.url, PREFIX, GROUP, cfg_path, logs, PLUGINS)
    rounds = max(6, int(SECONDS * 3))  # ~3 rounds (~30 entries) a second
    items = plan(seed=20261125, rounds=rounds)
    producer = Producer(server, PREFIX, items, duration=SECONDS, deadline_s=SECONDS + DRAIN_S)
    r = server.client()
    kills = restarts = orphaned = 0
    redis_restarted = False
    try:
        for name in CONSUMERS:
            fleet.start(name)
        producer.start()

        # --- chaos while the producer writes -------------------------------------------------
        started = time.monotonic()
        next_chaos = started + CHAOS_EVERY_S
        redis_at = started + SECONDS / 2
        down: str | None = None
        victim_n = 0
        while producer.is_alive():
            assert not fleet.crashed(), "a consumer died on its own\n" + fleet.tails()
            now = time.monotonic()
            if not redis_restarted and now >= redis_at:
                server.kill()
                time.sleep(1.0)  # an outage every consumer and the producer notice
                server.start()
                redis_restarted = True
            if now >= next_chaos:
                next_chaos = now + CHAOS_EVERY_S
                # Round robin over the names, skipping the one that is down.
                while CONSUMERS[victim_n % len(CONSUMERS)] == down:
                    victim_n += 1
                victim = CONSUMERS[victim_n % len(CONSUMERS)]
                victim_n += 1
                # Aim for a kill mid-batch (entries read, not acknowledged), within reason.
                poll(lambda v=victim: held_by(r, v), 1.0, 0.005)
                fleet.sigkill(victim)
                kills += 1
                orphaned += len(held_by(r, victim))
                if down is not None:
                    fleet.start(down)
                    restarts += 1
                down = victim
            time.sleep(0.05)
        producer.join()
        assert producer.error is None, f"producer failed: {producer.error!r}\n{fleet.tails()}"
        assert redis_restarted and kills >= 2, (redis_restarted, kills)
        assert producer.retries > 0, "the producer must have met the Redis outage"
        if down is not None:
            fleet.start(down)
            restarts += 1
        assert not fleet.crashed(), "a consumer died on its own\n" + fleet.tails()

        # --- drain ----------------------------------------------------------------------------
        def summary() -> str:
            states = {n: group_state(r, f"{PREFIX}:{n}") for n in ("events", "orders")}
            return f"groups: {states}\n{fleet.tails()}"

        if not poll(lambda: drained(r), DRAIN_S, 0.2):
            pytest.fail(f"the group did not drain within {DRAIN_S}s after the producer finished\n{summary()}")
        drained_at = now_ms()
        latest = expected_inputs(producer.sent)
        # Every consumer's tick re-evaluates every scope from Redis; wait for evaluations made
        # after the drain, equal to the recomputation.
        poll(
            lambda: (
                all(s.computed_at > drained_at + 500 for s in stored_latest(r).values())
                and not nav_mismatches(nav_cfg, latest, r)
            ),
            30,
            0.25,
        )
        assert not fleet.crashed(), "a consumer died on its own\n" + fleet.tails()
        # A SIGTERM before a process has installed its handlers (still importing) kills it
        # outright: stop only consumers that are up.
        assert poll(lambda: all(p.started() for p in fleet.live.values()), 60, 0.1), fleet.tails()
        codes = fleet.stop_all(30)
        assert all(c == 0 for c in codes.values()), f"graceful stop failed: {codes}\n{fleet.tails()}"

        # --- every entry accounted for ----------------------------------------------------------
        sent_ids = {(s.stream, s.entry_id) for s in producer.sent}
        assert len(producer.sent) == len(items) and len(sent_ids) == len(items)
        for name in ("events", "orders"):
            stream = f"{PREFIX}:{name}"
            in_stream = [i.decode() for i, _ in r.xrange(stream)]
            mine = [s.entry_id for s in producer.sent if s.stream == name]
            assert in_stream == mine, f"{stream}: {len(in_stream)} entries in Redis, {len(mine)} sent"
            st = group_state(r, stream)
            assert st == {"entries-read": len(mine), "lag": 0, "pending": 0, "xlen": len(mine)}, st
        malformed = {(f"{PREFIX}:{s.stream}", s.entry_id): s for s in producer.sent if s.kind == "malformed"}
        dlq = [((f[b"dlq_stream"].decode(), f[b"dlq_id"].decode()), f) for _, f in r.xrange(f"{PREFIX}:dlq")]
        assert sorted(i for i, _ in dlq) == sorted(malformed), (
            f"P:dlq must hold exactly the {len(malformed)} malformed entries, once each: "
            f"{[(i, f.get(b'dlq_error')) for i, f in dlq]}"
        )
        for where, fields in dlq:
            original = {k: v for k, v in fields.items() if not k.startswith(b"dlq_")}
            sent_fields = {
                (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
                for k, v in malformed[where].fields.items()
            }
            assert original == sent_fields, where

        # --- state: the last-ts-wins snapshot of what was sent ---------------------------------
        stored_balances: dict[tuple[str, str, str], tuple[int, str]] = {}
        for venue, account, _, _ in ACCOUNTS:
            for asset, raw in r.hgetall(f"{PREFIX}:state:nav:balances:{venue}:{account}").items():
                ts, _, payload = raw.decode().partition(" ")
                stored_balances[(venue, account, asset.decode())] = (int(ts), msgspec.json.decode(payload)[0])
        want_balances = {(k[1], k[2], k[3]): (ts, f["balance"]) for k, (ts, f) in latest.items() if k[0] == "balance"}
        assert {k: (ts, Decimal(b)) for k, (ts, b) in stored_balances.items()} == {
            k: (ts, Decimal(b)) for k, (ts, b) in want_balances.items()
        }
        stored_prices = {
            k.decode(): v.decode().partition(" ")[0] for k, v in r.hgetall(f"{PREFIX}:state:nav:prices").items()
        }
        assert sorted(map(int, stored_prices.values())) == sorted(
            ts for k, (ts, _) in latest.items() if k[0] == "price"
        )
        assert len(stored_prices) == len(PAIRS)
        assert sum(1 for k in latest if k[0] == "source_status") == len(SOURCES)

        # --- every order answered, the same answer every time ----------------------------------
        orders_sent: dict[str, int] = defaultdict(int)
        for s in producer.sent:
            if s.kind in ("order", "bad_order"):
                orders_sent[s.fields["order_id"]] += 1
        answers: dict[str, list[dict[bytes, bytes]]] = defaultdict(list)
        for _, f in r.xrange(f"{PREFIX}:decisions"):
            answers[f[b"order_id"].decode()].append(f)
        assert set(answers) == set(orders_sent), (sorted(orders_sent), sorted(answers))
        stored_decisions = r.hgetall(f"{PREFIX}:state:risk:decisions")
        for oid, sent_n in orders_sent.items():
            got = answers[oid]
            assert len(got) >= sent_n, f"{oid}: sent {sent_n} times, answered {len(got)} times"
            assert all(a == got[0] for a in got), f"{oid}: different answers {got}"
            assert oid.encode() in stored_decisions
        assert answers["o-bad"][0][b"decision"] == b"veto" and b"bad_order" in answers["o-bad"][0][b"reasons"]

        # --- NAV equals the straight recomputation -----------------------------------------------
        problems = nav_mismatches(nav_cfg, latest, r)
        assert not problems, "\n".join(problems)
        stored = stored_latest(r)
        for sid, value in by_hand(latest).items():
            assert stored[sid].nav == value, (sid, stored[sid].nav, value)
            assert stored[sid].status == "ok", (sid, stored[sid].status, stored[sid].reasons)
        assert stored["total"].status == "ok"

        # --- the chaos happened, and was survived the way the docs say --------------------------
        alerts = [f for _, f in r.xrange(f"{PREFIX}:alerts")]
        codes_seen = {a[b"code"].decode() for a in alerts}
        assert "group_recreated" not in codes_seen, "the AOF restart must keep the group"
        assert "entries_lost" not in codes_seen
        assert "redis_reconnected" in codes_seen, sorted(codes_seen)
        if orphaned:  # drained() proved them processed; by a reclaim, as the docs say
            assert fleet.logs_contain('"event": "reclaimed"'), "orphaned entries must be reclaimed\n" + fleet.tails()
        print(
            f"\nsoak: {SECONDS:g}s, {len(items)} entries ({len(malformed)} malformed, "
            f"{sum(orders_sent.values())} orders), {kills} kills ({orphaned} entries orphaned), {restarts} restarts, "
            f"1 redis restart, "
            f"{producer.retries} producer retries; NAV total {stored['total'].nav} {stored['total'].status}"
        )
    finally:
        fleet.kill_everything()
        r.close()


def test_redis_restarted_without_persistence_consumers_recreate_the_group_and_carry_on(
    tmp_path: Path, redis_binary: str
) -> None:
    """The other restart: a redis-server without persistence comes back empty. The consumers
    survive it, recreate the group (``group_recreated``), and what is written afterwards is
    processed in full: the NAV is the recomputation from the new inputs alone."""
    bare = RedisServer(redis_binary, tmp_path / "bare", persistent=False)
    bare.start()
    cfg_path = write_config(tmp_path / "bare.toml", tmp_path / "audit")
    nav_cfg = msgspec.convert(tomllib.loads(cfg_path.read_text())["nav"], NavConfig, strict=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(bare.url, PREFIX, GROUP, cfg_path, logs, PLUGINS)
    r = bare.client()
    try:
        for name in CONSUMERS[:2]:
            fleet.start(name)
        before = Producer(bare, PREFIX, plan(seed=1, rounds=3), duration=1.0, deadline_s=DRAIN_S)
        before.run()
        assert before.error is None, before.error
        assert poll(lambda: drained(r), DRAIN_S, 0.2), fleet.tails()

        bare.kill()
        time.sleep(2.5)  # longer than the clients' own retries ride out (about 0.4 s): the loop sees the outage
        bare.start()
        # Restarted empty: nothing sent before survived (the consumers may already be back, their
        # groups recreated on empty streams, their heartbeats written).
        assert r.xlen(f"{PREFIX}:events") == 0 and r.xlen(f"{PREFIX}:orders") == 0, "restarted empty"
        after = Producer(bare, PREFIX, plan(seed=2, rounds=3), duration=1.0, deadline_s=DRAIN_S)
        after.run()
        assert after.error is None, after.error
        assert poll(lambda: drained(r), DRAIN_S, 0.2), fleet.tails()
        latest = expected_inputs(after.sent)
        poll(lambda: not nav_mismatches(nav_cfg, latest, r), 30, 0.25)
        assert not fleet.crashed(), fleet.tails()
        assert poll(lambda: all(p.started() for p in fleet.live.values()), 60, 0.1), fleet.tails()
        codes = fleet.stop_all(30)
        assert all(c == 0 for c in codes.values()), f"{codes}\n{fleet.tails()}"

        for name in ("events", "orders"):
            mine = [s for s in after.sent if s.stream == name]
            assert group_state(r, f"{PREFIX}:{name}") == {
                "entries-read": len(mine),
                "lag": 0,
                "pending": 0,
                "xlen": len(mine),
            }
        malformed = sorted((f"{PREFIX}:{s.stream}", s.entry_id) for s in after.sent if s.kind == "malformed")
        assert (
            sorted((f[b"dlq_stream"].decode(), f[b"dlq_id"].decode()) for _, f in r.xrange(f"{PREFIX}:dlq"))
            == malformed
        )
        problems = nav_mismatches(nav_cfg, latest, r)
        assert not problems, "\n".join(problems)
        codes_seen = {f[b"code"].decode() for _, f in r.xrange(f"{PREFIX}:alerts")}
        assert "group_recreated" in codes_seen, sorted(codes_seen)
        # A consumer that saw Redis go away owes `redis_reconnected`, and it must have been
        # written. One that was not talking to Redis during those 2.5 s (a busy machine can
        # starve it) finds it back at its next command, its client's retry reconnecting in
        # place: it saw no outage, and says none.
        saw_outage = any("redis_unreachable" in log.read_text(errors="replace") for log in logs.iterdir())
        assert saw_outage <= ("redis_reconnected" in codes_seen), sorted(codes_seen)
    finally:
        fleet.kill_everything()
        r.close()
        bare.cleanup()

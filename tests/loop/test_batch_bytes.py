"""A batch is bounded in bytes as well as in entries: reads ask for fewer entries when recent
ones were large (``max_batch_bytes``), and an entry above ``max_entry_bytes`` is dead-lettered
with its size, not decoded, its dead letter small (what identifies it, never the payload).
Scaled down: 20 kB entries under a 64 kB batch and an 8 kB entry limit."""

from __future__ import annotations

import asyncio
from typing import Any

from support import START_MS, Recorder

from navstream.loop.batch import Entry, entry_bytes
from navstream.loop.consumer import Consumer

LIMITS = {"max_batch_bytes": 65_536, "max_entry_bytes": 8_192}
BIG = 20_000


def big(i: int) -> dict[str, str]:
    """A producer's mistake: a balance carrying a 20 kB blob (invalid, and far too large)."""
    return {
        "type": "balance",
        "venue": "binance",
        "account": "spot",
        "asset": f"B{i}",
        "balance": "1",
        "ts": str(START_MS - 1000),
        "blob": "x" * BIG,
    }


def bal(asset: str) -> dict[str, str]:
    return {
        "type": "balance",
        "venue": "binance",
        "account": "spot",
        "asset": asset,
        "balance": "1",
        "ts": str(START_MS - 1000),
    }


def spy(consumer: Consumer) -> list[tuple[int, int]]:
    """(entries, bytes) of every batch the consumer handles."""
    batches: list[tuple[int, int]] = []
    handle = consumer.handler.handle

    async def recording(entries: list[Entry]) -> None:
        batches.append((len(entries), sum(entry_bytes(e.fields) for e in entries)))
        await handle(entries)

    consumer.handler.handle = recording  # type: ignore[method-assign]
    return batches


async def check_dead_letters(app: Any, n: int) -> None:
    dead = await app.raw.xrange(app.keys.dlq)
    assert len(dead) == n
    for _, fields in dead:
        assert sum(len(k) + len(v) for k, v in fields.items()) < 1_500, fields  # small: no payload
        assert b"blob" not in fields and b"balance" not in fields
        assert fields[b"type"] == b"balance"  # short: kept, to identify it
        assert int(fields[b"dlq_size"]) > BIG
        assert b"blob=20000" in fields[b"dlq_fields"] and b"asset=" in fields[b"dlq_fields"]
        assert b"max_entry_bytes (8192)" in fields[b"dlq_error"] and b"not decoded" in fields[b"dlq_error"]
        assert fields[b"dlq_stream"] == app.keys.events.encode() and fields[b"dlq_id"]


async def test_large_entries_are_dead_lettered_small_and_reads_shrink(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], consumer=LIMITS)
    consumer = Consumer(app)
    await consumer.setup()
    for i in range(60):
        await app.redis.xadd(app.keys.events, big(i))
    await app.redis.xadd(app.keys.events, bal("OK"))
    batches = spy(consumer)
    while await consumer.step(block_ms=1):
        pass
    assert sum(n for n, _ in batches) == 61
    # The first read knows no sizes yet (entries of up to max_entry_bytes fit); then each read
    # asks for what fits in max_batch_bytes.
    assert batches[0][0] <= LIMITS["max_batch_bytes"] // LIMITS["max_entry_bytes"]
    assert all(size <= LIMITS["max_batch_bytes"] for _, size in batches[1:]), batches
    assert rec.seen == ["OK"]
    await check_dead_letters(app, 60)
    assert app.stats.dead_lettered == 60 and app.stats.processed == 1
    assert (await app.redis.xpending(app.keys.events, app.group))["pending"] == 0
    # Small entries again: reads grow back towards batch_size.
    for i in range(200):
        await app.redis.xadd(app.keys.events, bal(f"S{i}"))
    for _ in range(30):
        await consumer.step(block_ms=1)
    assert consumer.handler.read_count(500) > 20


async def test_reclaimed_entries_are_bounded_the_same_way(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], consumer={**LIMITS, "claim_idle_ms": 50, "block_ms": 10})
    consumer = Consumer(app)
    await consumer.setup()
    for i in range(30):
        await app.redis.xadd(app.keys.events, big(i))
    await app.raw.xreadgroup(app.group, "crashed", {app.keys.events: ">"})  # read, then it died
    await asyncio.sleep(0.06)
    batches = spy(consumer)
    for _ in range(40):
        await consumer.reclaim()
        if sum(n for n, _ in batches) >= 30:
            break
        await asyncio.sleep(0.06)
    assert sum(n for n, _ in batches) == 30
    assert all(size <= LIMITS["max_batch_bytes"] for _, size in batches[1:]), batches
    await check_dead_letters(app, 30)
    assert (await app.redis.xpending(app.keys.events, app.group))["pending"] == 0

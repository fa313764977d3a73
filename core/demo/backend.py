"""The Redis the demo runs on (in-process fakeredis, or a real one) and the keys under its prefix."""

from __future__ import annotations

from dataclasses import dataclass

import fakeredis
import redis.asyncio as aioredis

from navstream.app import Connect, default_connect
from navstream.config import Settings, redact_url
from navstream.ops.admin import AdminError


@dataclass
class Backend:
    label: str
    connect: Connect
    real: bool


def make_backend(settings: Settings, redis_url: str | None) -> Backend:
    if redis_url is None:
        server = fakeredis.FakeServer()
        return Backend(
            "in-process Redis (fakeredis)",
            lambda decode: fakeredis.FakeAsyncRedis(server=server, decode_responses=decode),
            real=False,
        )
    return Backend(f"Redis at {redact_url(redis_url)}", default_connect(settings), real=True)


async def _keys_under(client: aioredis.Redis, prefix: str) -> list[str]:
    # Prefix characters are limited to [A-Za-z0-9_.-{}] by config, so no glob escaping needed.
    return [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]


async def ensure_prefix_unused(client: aioredis.Redis, prefix: str, label: str) -> None:
    """The demo deletes every key under its prefix at the end, so it must own them all.

    :raises AdminError: keys under the prefix exist already (a deployment, or a demo that was
        killed before cleaning up).
    """
    found = await _keys_under(client, prefix)
    if found:
        raise AdminError(
            f"{label} already has {len(found)} key(s) under {prefix}:* (e.g. {sorted(found)[0]}); "
            "the demo deletes its keys when it ends, so it only runs on an unused prefix. Pick "
            "another --prefix, or delete those keys if they are left over from a demo."
        )


async def delete_prefix(client: aioredis.Redis, prefix: str) -> int:
    keys = await _keys_under(client, prefix)
    if keys:
        await client.delete(*keys)
    return len(keys)

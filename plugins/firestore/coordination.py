"""What the consumers of a group share in Redis, so that several replicas act as one sink.

- ``P:state:firestore:leader``: a string, the consumer that writes the shared documents (NAV,
  risk, history), held with a TTL and renewed on every tick (``SET NX PX``); when its holder
  stops renewing (stopped, hung, cut off), another consumer takes it once it lapses. A
  consumer stopping gracefully hands it over at once.
- ``P:state:firestore:writes:<YYYY-MM-DD>``: the group's Firestore writes that UTC day
  (``INCRBY`` per committed batch), expiring after a few days: the shared budget.
- ``P:state:firestore:history:<scope>``: sorted set, history document id -> interval start
  (ms), to keep ``history_keep`` documents per scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from navstream import AppProtocol

LEADER = "firestore:leader"
WRITES = "firestore:writes"
#: Days a daily write count is kept (for `navstream status` and post-mortems).
WRITES_KEEP_S = 3 * 86_400

# KEYS[1] the lease, KEYS[2] today's write count; ARGV: me, TTL ms. Takes or renews the lease;
# returns {1 if held by me, the holder, today's writes}.
LEASE_LUA = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not held then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  held = ARGV[1]
end
return {held == ARGV[1] and 1 or 0, held, redis.call('GET', KEYS[2]) or '0'}
"""

# KEYS[1] the lease; ARGV[1] me. Deletes it only if I hold it.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def writes_key(day: str) -> str:
    return f"{WRITES}:{day}"


class Coordination:
    """The lease and the ledger of one consumer."""

    def __init__(self, app: AppProtocol) -> None:
        self.app = app
        self._lease = app.redis.register_script(LEASE_LUA)
        self._release = app.redis.register_script(RELEASE_LUA)

    async def renew(self, day: str, ttl_ms: int) -> tuple[bool, str, int]:
        """Take or renew the lease: (held by me, the holder, the group's writes on ``day``)."""
        keys = self.app.keys
        mine, holder, used = await self._lease(
            keys=[keys.state(LEADER), keys.state(writes_key(day))], args=[self.app.consumer_name, ttl_ms]
        )
        return bool(int(mine)), str(holder or ""), int(used)

    async def release(self) -> bool:
        return bool(int(await self._release(keys=[self.app.keys.state(LEADER)], args=[self.app.consumer_name])))

    async def record(self, day: str, count: int, indexes: Sequence[tuple[str, str, int]]) -> int:
        """Add ``count`` to the group's writes on ``day`` and update the history index; returns
        the day's total."""
        keys = self.app.keys
        pipe = self.app.redis.pipeline(transaction=True)
        pipe.incrby(keys.state(writes_key(day)), count)
        pipe.expire(keys.state(writes_key(day)), WRITES_KEEP_S)
        for key, member, score in indexes:
            if score >= 0:
                pipe.zadd(keys.state(key), {member: score})
            else:
                pipe.zrem(keys.state(key), member)
        replies: list[Any] = await pipe.execute()
        return int(replies[0])

    async def used(self, day: str) -> int:
        return int(await self.app.redis.get(self.app.keys.state(writes_key(day))) or 0)

    async def holder(self) -> str:
        return str(await self.app.redis.get(self.app.keys.state(LEADER)) or "")

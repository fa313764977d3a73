"""Creating and checking the loop's consumer groups.

Apart from the loop because the rules are their own: ``ENTRIESREAD 0`` where the server knows it
(Redis 7) and not where it does not (6.2), and, while Redis refuses writes, a group that exists
is good enough. The consumer creates its groups at startup and again when Redis lost them
(:mod:`navstream.loop.outages`).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.exceptions import ResponseError

from navstream.app import App
from navstream.store.writer import Writer, is_missing_group, refusal


class GroupsMixin:
    """The consumer's group creation; :class:`~navstream.loop.consumer.Consumer` holds the state."""

    app: App
    writer: Writer
    #: The server knows no ``XGROUP CREATE ... ENTRIESREAD`` (Redis before 7).
    _no_entries_read: bool

    async def ensure_groups(self, streams: Sequence[str]) -> list[str]:
        """Create the group on each stream (``MKSTREAM``, id ``0``); return those created.

        ``ENTRIESREAD 0`` makes Redis count exactly what the group reads from the start, so
        entries trimmed before it read them stay visible as lag (docs/operations.md). While
        Redis refuses writes, a group that exists is good enough; one that is missing is not
        (the refusal is raised, and the caller retries with backoff)."""
        created = []
        for stream in streams:
            try:
                try:
                    await self.app.raw.xgroup_create(
                        stream, self.app.group, id="0", mkstream=True, entries_read=None if self._no_entries_read else 0
                    )
                except ResponseError as exc:
                    text = str(exc).lower()
                    if self._no_entries_read or not ("syntax" in text or "wrong number of arguments" in text):
                        raise
                    self._no_entries_read = True  # Redis 6.2: no ENTRIESREAD (nor the counters)
                    await self.app.raw.xgroup_create(stream, self.app.group, id="0", mkstream=True)
                created.append(stream)
            except ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    continue
                reason = refusal(exc)
                if reason is None:
                    raise
                self.writer.note_refused(reason, "ensure_groups")
                if not await self._group_exists(stream):
                    raise
        return created

    async def _group_exists(self, stream: str) -> bool:
        try:
            groups = await self.app.redis.xinfo_groups(stream)
        except ResponseError as exc:
            if is_missing_group(exc):
                return False
            raise
        return any(g.get("name") == self.app.group for g in groups)

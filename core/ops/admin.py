"""Operations on a running deployment: status, safe trimming, and the dead-letter stream.

Everything here is what the CLI calls; it is kept apart so tests and ops scripts can call it
too. Nothing here ever acknowledges, deletes or trims an entry a group has not finished.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import ResponseError, WatchError
from redis.typing import EncodableT, FieldT

from navstream.app import App
from navstream.contract.keys import next_id, parse_id
from navstream.plugin import calls
from navstream.store.writer import is_missing_group

# XRANGE's reply on each client; redis-py types both as bytes or str, and maybe None.
_Entries = list[tuple[str, dict[str, str]]]
_RawEntries = list[tuple[bytes, dict[bytes, bytes]]]


class AdminError(RuntimeError):
    """An operation refused, with the reason."""


class InvalidIdError(ValueError):
    """An id that is not a stream id (``<ms>-<seq>``): bad input, and nothing was done."""


_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_ID_PART = 2**64 - 1


def check_ids(ids: list[str]) -> None:
    """Every id a full stream id, as ``dlq list`` shows them, checked before Redis is asked
    (which would refuse ``abc`` only as a failed operation, and read ``123`` as a range).

    :raises InvalidIdError: naming the first id that is not one.
    """
    for entry_id in ids:
        match = _STREAM_ID.fullmatch(entry_id)
        if match is None or any(int(part) > _MAX_ID_PART for part in match.groups()):
            raise InvalidIdError(
                f"{entry_id!r} is not a dead-letter id: ids look like 1795000000000-0 "
                "(`navstream dlq list` shows them); nothing done"
            )


async def _groups(app: App, stream: str) -> list[dict[str, Any]]:
    try:
        return list(await app.redis.xinfo_groups(stream))
    except ResponseError as exc:
        if is_missing_group(exc):
            return []
        raise


# --- trim -------------------------------------------------------------------------------------


async def safe_trim_point(app: App, stream: str) -> tuple[str, list[dict[str, str]]]:
    """The lowest id some group still needs on ``stream``: its oldest pending entry, else the
    first entry after what it was last delivered. Entries below it are done for every group.

    :raises AdminError: the stream has no consumer group, so nothing proves anything was done.
    """
    groups = await _groups(app, stream)
    if not groups:
        raise AdminError(
            f"{stream} has no consumer group: nothing proves any entry was processed, so nothing is trimmed"
        )
    bounds = []
    for group in groups:
        summary = await app.redis.xpending(stream, group["name"])
        if summary and int(summary.get("pending") or 0) > 0:
            bound, why = summary["min"], "oldest pending"
        else:
            bound, why = next_id(group["last-delivered-id"]), "first undelivered"
        bounds.append({"group": group["name"], "bound": bound, "why": why})
    lowest = min(bounds, key=lambda b: parse_id(b["bound"]))
    return lowest["bound"], bounds


async def trim_input(app: App, stream: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Trim ``stream`` (exact ``MINID``) up to what every group has acknowledged."""
    bound, groups = await safe_trim_point(app, stream)
    before = await app.redis.xlen(stream)
    removed = 0 if dry_run else int(await app.redis.xtrim(stream, minid=bound, approximate=False))
    return {
        "stream": stream,
        "minid": bound,
        "length_before": before,
        "removed": removed,
        "dry_run": dry_run,
        "groups": groups,
    }


# --- dead letters -----------------------------------------------------------------------------


async def dlq_list(app: App, *, limit: int = 50, start: str = "-") -> list[dict[str, Any]]:
    rows = cast(_Entries, await app.redis.xrange(app.keys.dlq, min=start, max="+", count=limit))
    return [{"id": entry_id, **fields} for entry_id, fields in rows]


async def _move_back(app: App, entry_id: str, target: str, original: dict[bytes, bytes]) -> str | None:
    """XADD to ``target`` and XDEL from the DLQ in one MULTI, under WATCH of both keys.

    WATCH makes it safe against a second operator (the entry is moved once) and a concurrent
    purge (nothing is added for a deleted entry); checking the target's type under WATCH means
    the XADD cannot fail inside the transaction, where the XDEL would still run and lose it.
    Returns the new id, or None when the entry was gone already.
    """
    for _ in range(50):
        async with app.raw.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(app.keys.dlq, target)
                if not await pipe.xrange(app.keys.dlq, min=entry_id, max=entry_id):
                    return None
                kind = cast(bytes, await pipe.type(target))
                if kind not in (b"stream", b"none"):
                    raise AdminError(
                        f"{target} holds a {kind.decode()}, not a stream; dead letter {entry_id} stays in the DLQ"
                    )
                pipe.multi()
                pipe.xadd(target, cast("dict[FieldT, EncodableT]", original))  # redis-py's dict type is invariant
                pipe.xdel(app.keys.dlq, entry_id)
                new_id, _ = await pipe.execute()
                return str(new_id.decode())
            except WatchError:
                continue  # the DLQ or the target changed meanwhile: look again
    raise AdminError(f"dead letter {entry_id}: the DLQ kept changing; nothing moved, try again")


@dataclass
class Replayed:
    """What :func:`dlq_replay` did: ``(dlq id, stream, new id)`` for each dead letter moved, and
    the ids of those gone from the DLQ between being read and being moved (another operator
    purged or replayed them meanwhile)."""

    moved: list[tuple[str, str, str]] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


async def dlq_replay(app: App, ids: list[str] | None) -> Replayed:
    """Put dead letters back on the stream they came from (all when ``ids`` is None).

    Each move is one MULTI/EXEC under WATCH (XADD to the source, XDEL from the DLQ), so an entry
    is never lost and never doubled. An entry gone meanwhile (a concurrent purge or replay) is
    not an error here: it is listed in :attr:`Replayed.gone`, and the others are still moved.

    :raises InvalidIdError: an id that is not a stream id; nothing is read.
    :raises AdminError: an unknown id, or an entry whose source is not an input stream.
    """
    if ids is not None:
        check_ids(ids)
        ids = list(dict.fromkeys(ids))  # the same id twice is one replay
    entries = await _select(app, ids)
    allowed = set(app.keys.inputs)
    result = Replayed()
    plan = []
    for entry_id, fields in entries:  # check them all before moving any
        target = fields.get("dlq_stream", "")
        if target not in allowed:
            raise AdminError(
                f"dead letter {entry_id} came from {target!r}, not one of {sorted(allowed)}; nothing replayed"
            )
        # Byte for byte: a producer's non-UTF-8 value goes back exactly as it came.
        rows = cast(_RawEntries, await app.raw.xrange(app.keys.dlq, min=entry_id, max=entry_id))
        if not rows:  # purged or replayed since _select read it
            result.gone.append(entry_id)
            continue
        original = {k: v for k, v in rows[0][1].items() if not k.startswith(b"dlq_")}
        if not original:
            raise AdminError(f"dead letter {entry_id} has no original fields; nothing replayed")
        plan.append((entry_id, target, original))
    for entry_id, target, original in plan:
        new_id = await _move_back(app, entry_id, target, original)
        if new_id is None:  # another operator moved or purged it meanwhile
            result.gone.append(entry_id)
        else:
            result.moved.append((entry_id, target, new_id))
    return result


async def dlq_purge(app: App, ids: list[str] | None) -> int:
    """Delete dead letters for good (all when ``ids`` is None); returns how many.

    :raises InvalidIdError: an id that is not a stream id; nothing is deleted.
    :raises AdminError: an unknown id; nothing is deleted.
    """
    if ids is None:
        pipe = app.redis.pipeline(transaction=True)  # count exactly what is deleted
        pipe.xlen(app.keys.dlq)
        pipe.delete(app.keys.dlq)
        count, _ = await pipe.execute()
        return int(count)
    check_ids(ids)
    await _select(app, ids)  # every id must exist: a typo must not pass as done
    return int(await app.redis.xdel(app.keys.dlq, *ids))


async def _select(app: App, ids: list[str] | None) -> list[tuple[str, dict[str, str]]]:
    if ids is None:
        return list(cast(_Entries, await app.redis.xrange(app.keys.dlq)))
    out = []
    for entry_id in ids:
        rows = cast(_Entries, await app.redis.xrange(app.keys.dlq, min=entry_id, max=entry_id))
        if not rows:
            raise AdminError(f"no dead letter with id {entry_id}")
        out.append(rows[0])
    return out


# --- status -----------------------------------------------------------------------------------


async def collect_status(app: App, *, alerts: int = 10) -> dict[str, Any]:
    """Streams, groups, consumers, lag, pending, DLQ, heartbeats, alerts and plugin sections."""
    keys = app.keys
    status: dict[str, Any] = {"prefix": keys.prefix, "group": app.group, "streams": {}}
    for stream in keys.inputs:
        groups = await _groups(app, stream)
        ours = next((g for g in groups if g["name"] == app.group), None)
        consumers = []
        if ours is not None:
            for info in await app.redis.xinfo_consumers(stream, app.group):
                consumers.append({"name": info["name"], "pending": int(info["pending"]), "idle_ms": int(info["idle"])})
        status["streams"][stream] = {
            "length": await app.redis.xlen(stream),
            "groups": [
                {
                    "name": g["name"],
                    "pending": int(g["pending"]),
                    "lag": g.get("lag"),
                    "last_delivered_id": g["last-delivered-id"],
                    "consumers": int(g["consumers"]),
                }
                for g in groups
            ],
            "consumers": consumers,
        }
    status["dlq"] = {"length": await app.redis.xlen(keys.dlq)}
    heartbeats = []
    async for key in app.scan_keys(match=keys.heartbeat("*"), count=500):
        data = await app.redis.hgetall(key)
        if data:
            data["ttl_ms"] = str(await app.redis.pttl(key))
            heartbeats.append(data)
    status["consumers"] = sorted(heartbeats, key=lambda h: h.get("consumer", ""))
    recent = cast(_Entries, await app.redis.xrevrange(keys.alerts, count=alerts))
    status["alerts"] = [{"id": i, **f} for i, f in recent]
    status["plugins"] = {}
    for answer in await calls.collect(app.pm, "navstream_status", {"app": app}):
        # one plugin must not hide the rest: a failure is shown as its section
        section = answer.value if answer.exc is None else {"error": f"{type(answer.exc).__name__}: {answer.exc}"}
        if section is not None:
            status["plugins"][answer.plugin] = section
    return status

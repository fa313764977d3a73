"""The write ops of the batch write, as commands: how each is encoded, and its Python pre-check.

A batch's writes are a list of commands, each ``(name, key, args...)``: a Redis command (XADD,
HSET, ZADD, XACK, HDEL) or one of the ops below, whose effect is written once, in Lua
(``lua/<op>.lua``, see :mod:`navstream.store.scripts`), and run by the batch script or, for a
batch too large for one script call, by the op's own script inside MULTI/EXEC:

- ``PUTLATEST <key> <ts> <field value...>``: HSET unless the hash holds a newer ``ts``;
- ``PUTFIELDS <key> <stamp> <seen> <field value...>``: each value ``"<ts> <payload>"``, set
  unless the field holds a newer ts (not compared while ``<stamp>`` holds ``<seen>``);
- ``STAMP <key> <seen> <mine>``: SET ``mine`` if the key holds ``seen``, else ``"!" + mine``;
- ``XADDFIRST <stream> <hash> <field> <json> <xadd options...>``: store the entry unless one
  is stored, then XADD the stored one;
- ``XADDONCE <stream> <marker> <version> <ttl> <now> <xadd args...>``: XADD unless the marker
  holds that version and runs, then set the marker.

Before writing, every command's keys are checked, so that a write Redis would refuse is found
before anything is written: by the batch script in Lua, and here in Python for the pipelined
path. The two checks agree (tests/store/test_store_ops.py holds them to it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from navstream.contract.records import encode_field, encode_first, parse_first
from navstream.store.errors import WriteError

#: (name, key, args...) of one write or acknowledgement. Not typed per position: mypy cannot
#: index or slice a variadic tuple past its fixed items.
Command = tuple[Any, ...]

#: The key type each command writes (``TYPE``); the Lua twin is ``wants`` in lua/batch.lua.
WANTS = {
    "XADD": "stream",
    "XACK": "stream",
    "HSET": "hash",
    "HDEL": "hash",
    "ZADD": "zset",
    "PUTLATEST": "hash",
    "PUTFIELDS": "hash",
    "XADDONCE": "stream",
    "STAMP": "string",
    "XADDFIRST": "stream",
}

#: Per op: how many of the command's arguments after its name are its script's KEYS, and where
#: its script's ARGV starts (PUTFIELDS's stamp guard is the batch script's alone: on its own,
#: every member is compared).
SCRIPT_ARGS = {"PUTLATEST": (1, 2), "PUTFIELDS": (1, 4), "STAMP": (1, 2), "XADDFIRST": (2, 3), "XADDONCE": (2, 3)}

#: What the Lua put_fields.lua held_ts() accepts as a field written by PUTFIELDS.
_HELD_TS = re.compile(rb"-?\d+ ")
#: What the Lua latest_ts_ok() accepts as a PUTLATEST hash's `ts`.
_TS = re.compile(rb"-?\d+")


def flat(fields: Mapping[Any, Any], skip: str | None = None) -> list[Any]:
    out: list[Any] = []
    for k, v in fields.items():
        if k != skip:
            out.extend((k, v))
    return out


def put_latest(key: str, ts: int, fields: Mapping[str, str]) -> Command:
    return ("PUTLATEST", key, ts, *flat(fields, skip="ts"))


def put_fields(key: str, guard: str, seen: str, members: Mapping[str, tuple[int, str]], chunk: int) -> list[Command]:
    """PUTFIELDS commands of at most ``chunk`` members each (no command outgrows one call)."""
    args: list[str] = []
    for name, (ts, payload) in members.items():
        args += (name, encode_field(ts, payload))
    return [
        ("PUTFIELDS", key, guard, seen, *args[start : start + 2 * chunk]) for start in range(0, len(args), 2 * chunk)
    ]


def stamp(key: str, seen: str, mine: str) -> Command:
    return ("STAMP", key, seen, mine)


def xadd_first(stream: str, hash_key: str, field: str, fields: Mapping[str, str], trim: tuple[Any, ...]) -> Command:
    return ("XADDFIRST", stream, hash_key, field, encode_first(fields), *trim)


def xadd_once(
    stream: str, marker: str, version: str, ttl_ms: int, now_ms: int, trim: tuple[Any, ...], fields: Mapping[str, str]
) -> Command:
    return ("XADDONCE", stream, marker, version, ttl_ms, now_ms, *trim, *flat(fields))


def latest_ts_ok(held: bytes | None) -> bool:
    """Whether a PUTLATEST hash's ``ts`` as held (None: none) is one it can compare with."""
    return held is None or _TS.fullmatch(held) is not None


def held_ts_ok(held: bytes | None) -> bool:
    """Whether a field as held (None: none) is one PUTFIELDS can compare with."""
    return held is None or _HELD_TS.match(held) is not None


def first_ok(stored: bytes | None) -> bool:
    """Whether a value as held (None: none) is an entry XADDFIRST can emit."""
    return stored is None or parse_first(stored) is not None


async def precheck(raw: Any, writes: list[Command], acks: list[Command]) -> None:
    """Refuse (raise :class:`WriteError`) the commands if one would fail on what Redis holds,
    as the batch script does before writing (the same checks, one round trip)."""
    check = raw.pipeline(transaction=False)
    for command in writes + acks:
        check.type(command[1])
    latest = [c for c in writes if c[0] == "PUTLATEST"]
    for command in latest:
        check.hget(command[1], "ts")
    members = [(c[1], name) for c in writes if c[0] == "PUTFIELDS" for name in c[4::2]]
    for key, name in members:
        check.hget(key, name)
    markers = [c[2] for c in writes if c[0] == "XADDONCE"]
    for marker in markers:
        check.type(marker)
    firsts = [c for c in writes if c[0] == "XADDFIRST"]
    for command in firsts:
        check.type(command[2])
        check.hget(command[2], command[3])
    replies = await check.execute()
    for command, kind in zip(writes + acks, replies, strict=False):
        if kind not in (b"none", WANTS[str(command[0])].encode()):
            raise WriteError(f"WRONGTYPE {command[0]} {command[1]!r} holds a {kind.decode()}; nothing written")
    replies = replies[len(writes) + len(acks) :]
    for command, held in zip(latest, replies, strict=False):
        if not latest_ts_ok(held):
            raise WriteError(f"BADSTATE {command[1]!r} has a non-numeric ts; nothing written")
    replies = replies[len(latest) :]
    for (key, name), held in zip(members, replies, strict=False):
        if not held_ts_ok(held):
            raise WriteError(f"BADSTATE {key!r} field {name!r} has no ts; nothing written")
    replies = replies[len(members) :]
    for marker, kind in zip(markers, replies, strict=False):
        if kind not in (b"none", b"string"):
            raise WriteError(f"WRONGTYPE XADDONCE marker {marker!r} holds a {kind.decode()}; nothing written")
    replies = replies[len(markers) :]
    for command, kind, stored in zip(firsts, replies[::2], replies[1::2], strict=False):
        if kind not in (b"none", b"hash"):
            raise WriteError(f"WRONGTYPE XADDFIRST {command[2]!r} holds a {kind.decode()}; nothing written")
        if not first_ok(stored):
            raise WriteError(f"BADSTATE {command[2]!r} field {command[3]!r} is no stored entry; nothing written")


async def queue(pipe: Pipeline, command: Command, scripts: Mapping[str, AsyncScript]) -> bool:
    """Queue ``command`` on ``pipe``, an op as its own script; True when it is an op."""
    op = str(command[0])
    if op not in SCRIPT_ARGS:
        pipe.execute_command(*command)
        return False
    keys, args_from = SCRIPT_ARGS[op]
    await scripts[op](keys=list(command[1 : 1 + keys]), args=list(command[args_from:]), client=pipe)
    return True

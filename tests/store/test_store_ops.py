"""Each write op is written once in Lua (``core/store/lua/<op>.lua``), run by the batch script
or by the op's own script on the pipelined path; what the pipelined path checks in Python
before writing (``navstream.store.ops``) must agree with what the batch script checks in Lua.

Differential properties, on a real Redis: the Python checks against their Lua twins on the same
values, and the two write paths against each other on the same batch over the same state.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import types
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from navstream.contract.records import encode_field, encode_first, parse_field, parse_first
from navstream.store import ops
from navstream.store.scripts import OP_FILES, batch_script, lua, op_script
from navstream.store.writer import WriteError, Writer

pytestmark = pytest.mark.real_redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

#: Values a held field or ``ts`` may be: well formed, or not.
held_values = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.builds(lambda ts, p: f"{ts} {p}", st.integers(-(10**6), 10**6), st.text(max_size=8)),
    st.text(max_size=12),
    st.from_regex(r"-?[0-9]{1,5}[ x]?[a-z]{0,3}", fullmatch=True),
    st.sampled_from(["", "-", " ", "1 ", "-1 x", "+1 x", "1.5 x", "0x1 y", "٣ arabic digit", "1\n", "12"]),
)
#: Values a stored XADDFIRST entry may be: JSON of every shape, or none.
stored_entries = st.one_of(
    st.lists(st.text(max_size=6), max_size=6).map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=4),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=8,
    ).map(json.dumps),
    st.text(max_size=16),
    st.sampled_from(
        [
            "[]",
            '["a"]',
            '["a","b"]',
            '["a",1]',
            '{"1":"a","2":"b"}',
            "[NaN,NaN]",
            '["a","b"] x',
            ' ["a", "b"] ',
            '["a","b",["c"]]',
            "null",
            '"ab"',
        ]
    ),
)


@pytest.fixture(scope="module")
def r() -> Any:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def lua_says(r: Any, op_file: str, expression: str, value: str) -> bool:
    """Whether ``expression`` (of ``v``) holds in Lua, after ``lua/<op_file>.lua``."""
    script = lua(op_file) + f"local v = ARGV[1]\nif {expression} then return 1 else return 0 end\n"
    return r.eval(script, 0, value) == 1


@PROPERTY
@given(held_values)
def test_putlatest_ts_check_agrees_with_lua(r: Any, value: str) -> None:
    assert ops.latest_ts_ok(value.encode()) == lua_says(r, "put_latest", "latest_ts_ok(v)", value)


@PROPERTY
@given(held_values)
def test_putfields_held_ts_check_agrees_with_lua(r: Any, value: str) -> None:
    assert ops.held_ts_ok(value.encode()) == lua_says(r, "put_fields", "held_ts(v)", value)


@PROPERTY
@given(stored_entries)
def test_xaddfirst_stored_entry_check_agrees_with_lua(r: Any, value: str) -> None:
    assert ops.first_ok(value.encode()) == lua_says(r, "xadd_first", "first_fields(v)", value)
    fields = parse_first(value)
    if fields is not None:  # and both read the same fields
        script = lua("xadd_first") + "return first_fields(ARGV[1])\n"
        assert [x.decode() for x in r.eval(script, 0, value)] == json.loads(value)


def test_none_held_passes_every_check(r: Any) -> None:
    assert ops.latest_ts_ok(None) and ops.held_ts_ok(None) and ops.first_ok(None)
    for op_file, expression in (("put_latest", "latest_ts_ok(v)"), ("put_fields", "not held_ts(v)")):
        assert r.eval(lua(op_file) + f"local v = nil\nif {expression} then return 1 else return 0 end\n", 0) == 1


def test_the_key_types_each_command_wants_agree_with_lua() -> None:
    table = re.search(r"local wants = \{(.*?)\}", lua("batch"), re.S)
    assert table is not None
    assert dict(re.findall(r"(\w+) = '(\w+)'", table.group(1))) == ops.WANTS


def test_every_op_is_written_once() -> None:
    """An op's Lua function is defined in its own file only; the scripts are made of the files."""
    for op, name in OP_FILES.items():
        defined = [other for other in OP_FILES.values() if f"local function {name}(" in lua(other)]
        assert defined == [name], op
        assert batch_script().count(f"local function {name}(") == 1
        assert op_script(op).startswith(lua(name))
    assert set(ops.SCRIPT_ARGS) == set(OP_FILES)


@given(st.integers(-(10**15), 10**15), st.text(max_size=20))
def test_field_codec_round_trips(ts: int, payload: str) -> None:
    assert parse_field(encode_field(ts, payload)) == (ts, payload)


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), min_size=1, max_size=5))
def test_first_entry_codec_round_trips(fields: dict[str, str]) -> None:
    assert parse_first(encode_first(fields)) == fields


# --- the two write paths, on the same batch over the same state ----------------------------------

NOW = 1_700_000_000_000
TRIM = ("MAXLEN", "~", 1000, "*")
LATEST_KEYS, FIELD_KEYS, HSET_KEYS = ("l1", "l2"), ("f1", "f2"), ("h1",)
STREAMS, MARKERS, STAMPS, FIRSTS = ("s1", "s2"), ("m1", "m2"), ("st1",), ("fh",)

small_fields = st.dictionaries(st.sampled_from(["a", "b", "ts"]), st.sampled_from(["1", "2", "x"]), min_size=1)

#: What a key holds before the batch: (kind, value), by the key's role.
holdings = {
    "latest": st.one_of(
        st.none(),
        st.just(("string", "x")),
        st.builds(
            lambda ts, a: ("hash", {"ts": ts, "a": a}),
            st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["", "x", "1.5"])),
            st.sampled_from(["0", "9"]),
        ),
    ),
    "fields": st.one_of(
        st.none(),
        st.just(("string", "x")),
        st.dictionaries(
            st.sampled_from(["a", "b", "c"]),
            st.one_of(st.integers(-3, 3).map(lambda ts: f"{ts} held"), held_values),
            min_size=1,
        ).map(lambda d: ("hash", d)),
    ),
    "hash": st.one_of(st.none(), st.just(("string", "x")), st.just(("hash", {"a": "0"}))),
    "stream": st.one_of(st.none(), st.just(("string", "x")), st.just(("stream", {"old": "1"}))),
    "marker": st.one_of(
        st.none(),
        st.just(("hash", {"a": "1"})),
        st.sampled_from([f"{NOW + 500} 1", f"{NOW + 500} 2", f"{NOW - 1} 1", "junk", "x 1"]).map(
            lambda v: ("string", v)
        ),
    ),
    "stamp": st.one_of(
        st.none(), st.just(("hash", {"a": "1"})), st.sampled_from(["", "seen", "!seen"]).map(lambda v: ("string", v))
    ),
    "first": st.one_of(
        st.none(),
        st.just(("string", "x")),
        st.dictionaries(st.sampled_from(["o1", "o2"]), stored_entries, min_size=1).map(lambda d: ("hash", d)),
    ),
}
ROLES = {
    **{k: "latest" for k in LATEST_KEYS},
    **{k: "fields" for k in FIELD_KEYS},
    **{k: "hash" for k in HSET_KEYS},
    **{k: "stream" for k in STREAMS},
    **{k: "marker" for k in MARKERS},
    **{k: "stamp" for k in STAMPS},
    **{k: "first" for k in FIRSTS},
}
state = st.fixed_dictionaries({key: holdings[role] for key, role in ROLES.items()})


def commands(draw: Any) -> list[tuple[Any, ...]]:
    """Symbolic commands (keys unprefixed), as Writer makes them: a hash's members in one
    PUTFIELDS command (or its chunks), and no op's hash written by another op."""
    out: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["PUTLATEST", "STAMP", "XADDFIRST", "XADDONCE", "XADD", "HSET"]))
        if kind == "PUTLATEST":
            out.append(("PUTLATEST", draw(st.sampled_from(LATEST_KEYS)), draw(st.integers(-4, 4)), draw(small_fields)))
        elif kind == "STAMP":
            out.append(("STAMP", draw(st.sampled_from(STAMPS)), draw(st.sampled_from(["", "seen"])), "mine"))
        elif kind == "XADDFIRST":
            out.append(
                (
                    "XADDFIRST",
                    draw(st.sampled_from(STREAMS)),
                    "fh",
                    draw(st.sampled_from(["o1", "o2"])),
                    draw(small_fields),
                )
            )
        elif kind == "XADDONCE":
            out.append(
                (
                    "XADDONCE",
                    draw(st.sampled_from(STREAMS)),
                    draw(st.sampled_from(MARKERS)),
                    draw(st.sampled_from(["1", "2"])),
                    draw(small_fields),
                )
            )
        elif kind == "XADD":
            out.append(("XADD", draw(st.sampled_from(STREAMS)), draw(small_fields)))
        else:
            out.append(("HSET", draw(st.sampled_from(HSET_KEYS)), draw(small_fields)))
    for key in draw(st.lists(st.sampled_from(FIELD_KEYS), unique=True, max_size=2)):
        members = draw(
            st.dictionaries(
                st.sampled_from(["a", "b", "c", "d"]), st.tuples(st.integers(-4, 4), st.text(max_size=3)), min_size=1
            )
        )
        out.insert(draw(st.integers(0, len(out))), ("PUTFIELDS", key, members))
    return out


def encoded(symbolic: list[tuple[Any, ...]], at: str) -> list[tuple[Any, ...]]:
    """The commands under key prefix ``at``, encoded by navstream.store.ops."""
    out: list[tuple[Any, ...]] = []
    for c in symbolic:
        if c[0] == "PUTLATEST":
            out.append(ops.put_latest(at + c[1], c[2], c[3]))
        elif c[0] == "PUTFIELDS":
            out.extend(ops.put_fields(at + c[1], "", "", c[2], chunk=2))
        elif c[0] == "STAMP":
            out.append(ops.stamp(at + c[1], c[2], c[3]))
        elif c[0] == "XADDFIRST":
            out.append(ops.xadd_first(at + c[1], at + c[2], c[3], c[4], TRIM))
        elif c[0] == "XADDONCE":
            out.append(ops.xadd_once(at + c[1], at + c[2], c[3], 1000, NOW, TRIM, c[4]))
        elif c[0] == "XADD":
            out.append(("XADD", at + c[1], *TRIM, *ops.flat(c[2])))
        else:
            out.append(("HSET", at + c[1], *ops.flat(c[2])))
    return out


async def seed(client: Any, at: str, held: dict[str, Any]) -> None:
    for key, holding in held.items():
        if holding is None:
            continue
        kind, value = holding
        if kind == "string":
            await client.set(at + key, value)
        elif kind == "hash":
            await client.hset(at + key, mapping=value)
        else:
            await client.xadd(at + key, value)


async def dump(client: Any, at: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ROLES:
        kind = (await client.type(at + key)).decode()
        if kind == "string":
            out[key] = (kind, await client.get(at + key), await client.pttl(at + key) > 0)
        elif kind == "hash":
            out[key] = (kind, await client.hgetall(at + key))
        elif kind == "stream":
            out[key] = (kind, [fields for _, fields in await client.xrange(at + key)])
    return out


async def run_both(held: dict[str, Any], symbolic: list[tuple[Any, ...]]) -> list[Any]:
    """(outcome, state after) of the batch script, then of the pipelined path."""
    client = aioredis.Redis.from_url(REDIS_URL)
    writer = Writer(types.SimpleNamespace(raw=client))  # type: ignore[arg-type]
    base = f"{{nstest-store-{uuid.uuid4().hex[:10]}}}"
    results = []
    try:
        for path in ("script", "pipeline"):
            at = f"{base}:{path}:"
            await seed(client, at, held)
            before = await dump(client, at)
            writes = encoded(symbolic, at)
            try:
                if path == "script":
                    outcome: Any = await writer._scripted(writes)
                else:
                    outcome = await writer._pipelined(writes, [])
            except (WriteError, redis.exceptions.ResponseError) as exc:
                assert "WRONGTYPE" in str(exc) or "BADSTATE" in str(exc), exc  # refused by the check,
                assert await dump(client, at) == before  # before anything was written
                outcome = "refused"  # (when two writes would fail, each path may name another first)
            results.append((outcome, await dump(client, at)))
        return results
    finally:
        keys = [k async for k in client.scan_iter(match=f"{base}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(state, st.data())
def test_the_two_write_paths_agree(held: dict[str, Any], data: st.DataObject) -> None:
    """The same batch over the same state: both paths refuse it (and write nothing), or both
    write the same state and report the same once-marks."""
    symbolic = commands(data.draw)
    (scripted, after_script), (pipelined, after_pipeline) = asyncio.run(run_both(held, symbolic))
    assert after_script == after_pipeline
    assert scripted == pipelined

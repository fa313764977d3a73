"""``navstream publish``: validate entries against the contract, then XADD them all or none.

Amounts are checked by the decoder itself (the number grammar of ``navstream.contract.numbers``), so
``publish`` refuses exactly what a consumer would dead-letter, with the same reason.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from navstream.app import App
from navstream.contract import numbers
from navstream.contract.events import DecodeError, InvalidOrder, decode_event, decode_order

# JSON numbers are read as Decimal from their text, never through float.
_json = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)


#: No contract entry comes near this; a larger one is a producer bug (and too wide for one script).
MAX_FIELDS = 1000


class PublishError(ValueError):
    """Entries that break the contract; nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Prepared:
    stream: str
    fields: dict[str, str]


def _text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal) and not numbers.decimal_refusal(value):
        # Plain, as written: 0.00000001 stays "0.00000001", where str() gives "1E-8". A number
        # out of bounds keeps str(), for the decoder to refuse it naming the field.
        return format(value, "f")
    if isinstance(value, (str, int, Decimal)):
        return str(value)
    raise ValueError(f"field `{key}` must be a string, number or boolean, not {type(value).__name__}")


def parse_kv(args: Iterable[str]) -> dict[str, str]:
    """``["type=price", "base=BTC"]`` -> a field map; a malformed pair is an error."""
    fields: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise PublishError([f"argument {arg!r} is not key=value"])
        fields[key] = value
    return fields


def decode_text(data: bytes, origin: str) -> list[str]:
    """``data`` (a file's bytes) as its lines; bytes that are not UTF-8 are an error naming
    where they are, so nothing is published from a file that is not what it seems.

    :raises PublishError: ``origin``, the byte offset and the line of the first bad byte.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PublishError(
            [f"{origin}: not UTF-8 at byte {exc.start} (line {line}): {exc.reason} {data[exc.start : exc.end]!r}"]
        ) from None
    return list(io.StringIO(text, newline=None))  # lines split as reading a text file splits them


def parse_json_lines(lines: Iterable[str], origin: str = "<stdin>") -> list[dict[str, str]]:
    out, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = _json.decode(line)
            out.append({k: _text(k, v) for k, v in data.items() if v is not None})
        except (msgspec.DecodeError, ValueError) as exc:
            problems.append(f"{origin}:{number}: {exc}")
    if problems:
        raise PublishError(problems)
    return out


def _stamp_hint(reason: str, fields: dict[str, str], stamp: bool) -> str:
    if stamp or "ts" in fields:
        return ""
    if "`ts`" in reason:
        return " (--stamp sets a missing ts to now)"
    return " (ts is missing too: --stamp sets it to now)"


def prepare(app: App, entries: list[dict[str, str]], *, stamp: bool = False) -> list[Prepared]:
    """Validate every entry and route it (orders to ``P:orders``, the rest to ``P:events``).

    :param stamp: fill a missing ``ts`` with the current time.
    :raises PublishError: listing every invalid entry; nothing is written then.
    """
    now = app.clock.now_ms()
    limit = now + app.settings.consumer.max_future_ms
    prepared, problems = [], []
    for number, fields in enumerate(entries, 1):
        if len(fields) > MAX_FIELDS:
            problems.append(f"entry {number}: {len(fields)} fields, more than {MAX_FIELDS}")
            continue
        if stamp and "ts" not in fields:
            fields = {**fields, "ts": str(now)}
        try:
            if fields.get("type") == "order":
                order = decode_order(fields)
                if isinstance(order, InvalidOrder):
                    raise DecodeError(order.reason)
                ts, stream = order.ts, app.keys.orders
            else:
                ts, stream = decode_event(fields).ts, app.keys.events
            if ts > limit:
                raise DecodeError(f"field `ts`: {ts} is {ts - now} ms in the future")
        except DecodeError as exc:
            problems.append(f"entry {number}: {exc.reason}{_stamp_hint(exc.reason, fields, stamp)}")
            continue
        prepared.append(Prepared(stream, fields))
    if problems:
        raise PublishError(problems)
    return prepared


# All or nothing: MULTI/EXEC does not roll back when one XADD fails (say, WRONGTYPE), so check
# every target first and only then add, atomically, in one script.
# KEYS: the target stream of each entry; ARGV: per entry, its field count x 2, then the pairs.
PUBLISH_LUA = """
for _, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key)
  if type(t) == 'table' then t = t['ok'] end
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a stream; nothing published')
  end
end
local ids, pos = {}, 1
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[pos])
  ids[i] = redis.call('XADD', key, '*', unpack(ARGV, pos + 1, pos + n))
  pos = pos + n + 1
end
return ids
"""


async def publish(app: App, prepared: list[Prepared]) -> list[str]:
    """XADD every prepared entry, all or none, atomically; returns the new ids."""
    keys: list[str] = []
    args: list[str] = []
    for item in prepared:
        keys.append(item.stream)
        args.append(str(2 * len(item.fields)))
        for k, v in item.fields.items():
            args.extend((k, v))
    return list(await app.redis.eval(PUBLISH_LUA, len(keys), *keys, *args))

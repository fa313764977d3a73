"""How the values the batch write stores are encoded, and read back.

- A member of a hash written by :meth:`Outputs.put_latest_field` (op PUTFIELDS):
  ``"<ts> <payload>"``.
- An entry stored by :meth:`Outputs.emit_first` (op XADDFIRST): a JSON array of its fields and
  values, ``["field", "value", ...]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

_first_entry = msgspec.json.Decoder(list[str])
_json = msgspec.json.Encoder().encode


def encode_field(ts: int, payload: str) -> str:
    """A member as :meth:`Outputs.put_latest_field` writes it; read by :func:`parse_field`."""
    return f"{ts} {payload}"


def parse_field(raw: str) -> tuple[int, str]:
    """A field written by :meth:`Outputs.put_latest_field`: ``"<ts> <payload>"``."""
    ts, sep, payload = raw.partition(" ")
    if not sep:
        raise ValueError(f"not a '<ts> <payload>' state field: {raw[:80]!r}")
    return int(ts), payload


def encode_first(fields: Mapping[str, str]) -> bytes:
    """An entry as :meth:`Outputs.emit_first` stores it; read by :func:`parse_first`."""
    return _json([x for item in fields.items() for x in item])


def parse_first(raw: str | bytes) -> dict[str, str] | None:
    """The fields of an entry :meth:`Outputs.emit_first` stored (a JSON array of fields and
    values, as the batch script's ``first_fields()`` reads it); None when ``raw`` is not one."""
    try:
        values = _first_entry.decode(raw)
    except msgspec.DecodeError:
        return None
    return dict(zip(values[::2], values[1::2], strict=False)) if values and len(values) % 2 == 0 else None

"""An entry as the loop reads it, and the small helpers every part of the loop shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis.typing import EncodableT, FieldT

from navstream.contract.events import Fields, as_str

#: What redis-py's ``hset(mapping=)`` takes: its key type is invariant, so a ``dict[str, str]`` is cast.
HashMapping = Mapping[FieldT, EncodableT]

__all__ = ["Entry", "HashMapping", "ReadReply", "as_str", "entry_bytes", "read_entries"]

#: XREADGROUP's reply on the raw client (RESP2); redis-py types it as any protocol's shape.
ReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None


@dataclass(slots=True)
class Entry:
    stream: str
    id: str
    fields: Fields
    deliveries: int = 1

    @property
    def ref(self) -> str:
        return f"{self.stream}/{self.id}"


def entry_bytes(fields: Fields) -> int:
    """An entry's size as navstream bounds it: its field names and values."""
    return sum(map(len, fields)) + sum(map(len, fields.values()))


def read_entries(response: ReadReply) -> list[Entry]:
    """The entries of an XREADGROUP reply, in the order read (an entry deleted while pending
    comes back without fields: ``{}``)."""
    return [
        Entry(as_str(stream), entry_id.decode(), fields or {})
        for stream, items in response or []
        for entry_id, fields in items
    ]

"""The content of an order intent as one hash: how an ``order_id`` sent again is told apart from
the same id reused for another order.

The gate answers an ``order_id`` once and repeats that answer, but only to the same order: a
re-send whose content differs must never get the first answer (docs/contract.md). The hash
covers what the order asks for, not when it was sent (``ts``) or the id itself, so a retry of
the same intent is recognised. Every field is written in one canonical form, so that any
client can compute it (docs/risk-client.md):

- ``venue``, ``account``, ``symbol``, ``side``: as sent;
- ``qty`` and ``price``: the shortest plain decimal (``0.10`` -> ``0.1``, ``1E+2`` -> ``100``),
  ``price`` empty for a market order;
- ``reduce_only``: ``true`` or ``false``.

Each is UTF-8 encoded as a netstring (``<byte length>:<bytes>,``), so no value can run into the
next, and the concatenation is hashed with SHA-256 (lowercase hex).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from decimal import Decimal

__all__ = ["canonical_decimal", "order_hash", "raw_order_hash"]

#: The order fields the hash covers, in this order.
FIELDS = ("venue", "account", "symbol", "side", "qty", "price", "reduce_only")


def canonical_decimal(value: Decimal) -> str:
    """The shortest plain form: no exponent, no trailing fractional zeros, no leading zeros."""
    if not value:
        return "0"
    return format(value.normalize(), "f")


def _netstrings(values: Iterable[str]) -> bytes:
    out = bytearray()
    for value in values:
        data = value.encode("utf-8", "surrogatepass")
        out += b"%d:%s," % (len(data), data)
    return bytes(out)


def order_hash(
    *, venue: str, account: str, symbol: str, side: str, qty: Decimal, price: Decimal | None, reduce_only: bool
) -> str:
    """The hash of a decoded order's content (see the module docstring)."""
    values = (
        venue,
        account,
        symbol,
        side,
        canonical_decimal(qty),
        "" if price is None else canonical_decimal(price),
        "true" if reduce_only else "false",
    )
    return hashlib.sha256(_netstrings(values)).hexdigest()


def raw_order_hash(fields: Mapping[str, str]) -> str:
    """The hash of an order entry that could not be decoded: its fields as received (a missing
    one empty), under a prefix of its own, so a broken order is never "the same" as a good one
    sent under its id (the safe side)."""
    return hashlib.sha256(b"raw:" + _netstrings(fields.get(name, "") for name in FIELDS)).hexdigest()

"""The order entry and the decision as a trading engine's client writes and reads them
(docs/contract.md, docs/risk-client.md): encoding an order intent exactly as the gate decodes
it, the ``order_hash`` its decision must carry, and reading a decision back, from the stream or
from the gate's store (``P:state:risk:decisions``), failing closed. Split off
:mod:`navstream.client`, which re-exports what it always offered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from navstream.contract.events import ORDER_DECODER
from navstream.contract.fingerprint import order_hash
from navstream.contract.numbers import NumberError, parse, plain
from navstream.contract.outputs import parse_first

log = logging.getLogger("navstream.client")

DEADLINE = "deadline"
CLIENT_ERROR = "client_error"


class SendError(RuntimeError):
    """The order was not confirmed written to ``P:orders``: treat it as not approved.

    It may still have reached the gate (a connection lost after the write); sending the same
    ``order_id`` again is safe and returns the decision the gate gave it, if any.
    """


@dataclass(frozen=True, slots=True)
class ClientDecision:
    """A ``P:decisions`` entry as the engine sees it, or the veto that stands in for one.

    ``timed_out`` is true when no decision was seen before the deadline; ``reasons`` then says
    why (``deadline``, or ``client_error`` when Redis failed while waiting), ``nav`` is empty
    and ``nav_status`` and ``trading_state`` are ``unknown``.
    """

    order_id: str
    decision: Literal["approve", "veto"]
    reasons: list[str]
    trading_state: str
    nav: str
    nav_status: str
    nav_age_ms: int
    ts: int
    timed_out: bool = False

    @property
    def approved(self) -> bool:
        """The one answer that allows trading."""
        return self.decision == "approve" and not self.timed_out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> ClientDecision:
        """Parse a decision entry (contract fields).

        :raises ValueError: a field is missing or unparsable; the caller vetoes.
        """
        try:
            decision: Literal["approve", "veto"]
            if fields["decision"] == "approve":
                decision = "approve"
            elif fields["decision"] == "veto":
                decision = "veto"
            else:
                raise ValueError(f"`decision` is {fields['decision']!r}")
            return cls(
                fields["order_id"],
                decision,
                [r for r in fields.get("reasons", "").split(",") if r],
                fields.get("trading_state", ""),
                fields.get("nav", ""),
                fields.get("nav_status", ""),
                int(fields.get("nav_age_ms") or 0),
                int(fields["ts"]),
            )
        except KeyError as exc:
            raise ValueError(f"decision entry lacks field {exc}") from exc

    @classmethod
    def vetoed(cls, order_id: str, reason: str, *, timed_out: bool = True) -> ClientDecision:
        """The veto given in place of a decision that was not seen."""
        return cls(order_id, "veto", [reason], "unknown", "", "unknown", 0, now_ms(), timed_out)


def order_fields(
    *,
    order_id: str,
    venue: str,
    account: str,
    symbol: str,
    side: str,
    qty: Decimal | str,
    price: Decimal | str | None,
    reduce_only: bool,
    ts: int,
) -> dict[str, str]:
    """The ``P:orders`` entry of an order intent, checked by the decoder the gate itself uses,
    so the client never sends what the gate would veto as ``bad_order``.

    :raises TypeError: a float amount, or a value of the wrong type.
    :raises ValueError: anything the contract refuses (an empty id, a side other than
        buy/sell, a non-positive or non-finite amount), naming the field.
    """
    for name, value in (
        ("order_id", order_id),
        ("venue", venue),
        ("account", account),
        ("symbol", symbol),
        ("side", side),
    ):
        if not isinstance(value, str):
            raise TypeError(f"`{name}` must be a str, got {type(value).__name__}")
    if not isinstance(reduce_only, bool):
        raise TypeError(f"`reduce_only` must be a bool, got {type(reduce_only).__name__}")
    fields = {
        "type": "order",
        "order_id": order_id,
        "venue": venue,
        "account": account,
        "symbol": symbol,
        "side": side,
        "qty": decimal_text("qty", qty),
        "reduce_only": "true" if reduce_only else "false",
        "ts": str(ts),
    }
    if price is not None:
        fields["price"] = decimal_text("price", price)
    ORDER_DECODER.decode(fields)  # raises DecodeError (a ValueError) naming the field
    return fields


def fields_hash(fields: Mapping[str, str]) -> str:
    """The ``order_hash`` the gate gives the decision of an order entry the client built."""
    order = ORDER_DECODER.decode(fields)
    return order_hash(
        venue=order.venue,
        account=order.account,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        price=order.price,
        reduce_only=order.reduce_only,
    )


def decimal_text(name: str, value: Decimal | str) -> str:
    """``value`` as an exact, plain decimal string (``"0.00000001"``, never ``"1E-8"``)."""
    if isinstance(value, float):
        raise TypeError(
            f"`{name}` must be a Decimal or str, not a float (binary floats are not exact): "
            f"pass Decimal({str(value)!r}) or {str(value)!r}"
        )
    if not isinstance(value, (str, Decimal)):
        raise TypeError(f"`{name}` must be a Decimal or str, got {type(value).__name__}")
    try:  # the wire's own grammar and bounds (navstream.contract.numbers): " 1" and "１２" are no amounts
        return plain(parse(value) if isinstance(value, str) else value)
    except NumberError as exc:
        raise ValueError(f"`{name}`: {exc}") from None


def stored_decision(raw: str | bytes) -> dict[str, str] | None:
    """A decision as the gate stores it (``Outputs.emit_first``); None when it is not one."""
    return parse_first(raw)


def read_decision(order_id: str, fields: Mapping[str, str] | None) -> ClientDecision:
    """The decision in ``fields``, or a veto (``client_error``) when it cannot be read: an
    answer nobody can read must not let an order through."""
    try:
        if fields is None:
            raise ValueError("not a JSON array of fields and values")
        decision = ClientDecision.from_fields(fields)
        if decision.order_id != order_id:
            raise ValueError(f"answers order_id {decision.order_id!r}")
    except ValueError as exc:
        log.error(
            "unreadable decision, vetoed", extra={"event": "client_error", "order_id": order_id, "error": str(exc)}
        )
        return ClientDecision.vetoed(order_id, CLIENT_ERROR, timed_out=False)
    return decision


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def now_ms() -> int:
    return time.time_ns() // 1_000_000

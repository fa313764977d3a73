"""Typed input events of the wire contract (docs/contract.md) and their decoder.

Entries arrive as flat maps of strings. Decoding is strict about meaning (a missing field, an
amount outside the number grammar of ``navstream.contract.numbers``, or a timestamp in seconds is an
error that names the field) and lenient about shape (unknown fields are ignored, for forward
compatibility).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeAlias, TypeGuard, TypeVar, get_args

import msgspec

from navstream.contract import numbers

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT  # types only: the contract does not load redis

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
#: The most characters a name may have (``NonEmpty``'s bound).
MAX_NAME = 256

#: An entry's fields as a client returns them: ``str`` when it decodes responses, else ``bytes``.
Fields: TypeAlias = Mapping[str, str] | Mapping[bytes, bytes] | Mapping[str | bytes, str | bytes]

#: Timestamps before this (2001-09-09) are almost certainly epoch *seconds* sent by mistake.
MIN_TS_MS = 1_000_000_000_000
#: Timestamps after this (year 2286) cannot be epoch milliseconds of anything real.
MAX_TS_MS = 9_999_999_999_999


class DecodeError(ValueError):
    """An entry that cannot become an event; the message names the field at fault."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


#: Bounds of ``Decimal.adjusted()`` that every accepted amount keeps (numbers.py).
_LOWEST, _HIGHEST = -numbers.MAX_FRACTION_DIGITS, numbers.MAX_INTEGER_DIGITS - 1


def _check_amount(name: str, value: Decimal | None) -> None:
    """The backstop for amounts built in code (decoded ones passed the grammar already): finite
    and of a bounded exponent, so none can overflow later. Two C calls, no digit count: the
    full bounds are checked where amounts come in (the decoder, the sources)."""
    if value is not None and not (value.is_finite() and _LOWEST <= value.adjusted() <= _HIGHEST):
        raise ValueError(f"field `{name}`: {numbers.show(value)} is {numbers.decimal_refusal(value)}")


def _check_name(name: str, value: str) -> None:
    """A name shown to a person: 1 to :data:`MAX_NAME` characters, all printable (no control
    character, line break, bidi override or zero-width one). Checked here too because msgspec's
    ``Meta`` bounds hold only for decoded events, not for those built in code."""
    if not 0 < len(value) <= MAX_NAME:
        raise ValueError(f"field `{name}`: must be 1 to {MAX_NAME} characters, got {len(value)}")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ValueError(f"field `{name}`: unprintable character U+{ord(bad):04X} in {value[:40]!a}")


class _Base(msgspec.Struct, frozen=True, tag_field="type"):
    ts: int

    def __post_init__(self) -> None:
        if self.ts < MIN_TS_MS:
            raise ValueError(f"`ts` {self.ts} is not epoch milliseconds (seconds sent by mistake?)")
        if self.ts > MAX_TS_MS:
            raise ValueError(f"`ts` {self.ts} is out of range for epoch milliseconds")


class Balance(_Base, frozen=True, tag="balance"):
    """Absolute holding of one asset in one account."""

    venue: NonEmpty
    account: NonEmpty
    asset: NonEmpty
    balance: Decimal
    unrealized_pnl: Decimal = Decimal(0)
    #: The venue's own code for ``asset`` when the source renamed it (Kraken's ``XXBT`` sent as
    #: ``BTC``); None when the venue calls it ``asset`` too. Shown beside ``asset``, never keyed on.
    venue_asset: NonEmpty | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_amount("balance", self.balance)
        _check_amount("unrealized_pnl", self.unrealized_pnl)
        if self.venue_asset is not None:
            _check_name("venue_asset", self.venue_asset)


class Position(_Base, frozen=True, tag="position"):
    """Signed position size in one symbol; ``qty == 0`` closes it."""

    venue: NonEmpty
    account: NonEmpty
    symbol: NonEmpty
    qty: Decimal
    entry_price: Decimal
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_amount("qty", self.qty)
        _check_amount("entry_price", self.entry_price)
        _check_amount("mark_price", self.mark_price)
        _check_amount("unrealized_pnl", self.unrealized_pnl)


class Price(_Base, frozen=True, tag="price"):
    """One quote of ``base`` in ``quote`` units from ``source``."""

    base: NonEmpty
    quote: NonEmpty
    price: Decimal
    source: NonEmpty

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_amount("price", self.price)
        if self.price <= 0:
            raise ValueError(f"`price` must be positive, got {self.price}")


class SourceStatus(_Base, frozen=True, tag="source_status"):
    """The heartbeat of one source: sent after every fetch attempt, success or failure."""

    venue: NonEmpty
    source: NonEmpty
    ok: bool
    account: NonEmpty | None = None
    error: str | None = None


class Order(_Base, frozen=True, tag="order"):
    """An order intent from the trading engine, to be approved or vetoed."""

    order_id: NonEmpty
    venue: NonEmpty
    account: NonEmpty
    symbol: NonEmpty
    side: Literal["buy", "sell"]
    qty: Decimal
    price: Decimal | None = None
    reduce_only: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_amount("qty", self.qty)
        _check_amount("price", self.price)
        if self.qty <= 0:
            raise ValueError(f"`qty` must be positive, got {self.qty}")
        if self.price is not None and self.price <= 0:
            raise ValueError(f"`price` must be positive, got {self.price}")


class InvalidOrder(msgspec.Struct, frozen=True):
    """An order entry that failed to decode but carries a usable ``order_id``.

    It is handed to order plugins (so the risk gate can veto it with a reason) instead of being
    dead-lettered, because the trading engine is waiting for an answer to that id.
    """

    order_id: str
    reason: str
    fields: dict[str, str]


Event: TypeAlias = Balance | Position | Price | SourceStatus


def type_tag(cls: type[msgspec.Struct]) -> str:
    """The ``type`` field a struct of the wire contract is tagged with."""
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__} has no str tag")
    return tag


EVENT_TYPES: dict[str, type[Event]] = {type_tag(cls): cls for cls in (Balance, Position, Price, SourceStatus)}


def _reason(err: msgspec.ValidationError) -> tuple[str, str | None]:
    """Turn msgspec's message into one that names the field, e.g. ``balance: Invalid decimal``."""
    text = str(err)
    field = None
    if " - at `$." in text:
        text, _, path = text.rpartition(" - at `$.")
        field = path.rstrip("`")
        return f"field `{field}`: {text}", field
    if "missing required field `" in text or text.startswith(("`", "field `")):
        # msgspec's own message, or one of our __post_init__ checks, which start with the field
        field = text.split("`")[1]
    return text, field


def amount_fields(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of ``cls`` typed ``Decimal`` or ``Decimal | None``: the ones the grammar checks."""
    return tuple(f.name for f in msgspec.structs.fields(cls) if f.type is Decimal or Decimal in get_args(f.type))


def as_str(value: bytes | str) -> str:
    """One reply of a client, as text (a ``str`` client's replies pass through unchanged)."""
    return value.decode() if isinstance(value, bytes) else value


def as_str_list(values: Iterable[bytes | str]) -> list[str]:
    """Replies of a client (members, keys, ids), as text."""
    return [value.decode() if isinstance(value, bytes) else value for value in values]


def stream_fields(fields: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    """``fields`` as redis-py's ``xadd`` types its argument (a ``dict`` of an invariant key type)."""
    return dict(fields.items())


def as_str_map(fields: Fields) -> dict[str, str]:
    """A hash or an entry of a client, as text; :class:`DecodeError` names a field that is not UTF-8."""
    items: Mapping[Any, Any] = fields  # mypy does not narrow on ``__class__ is``
    try:  # the hot path: one comprehension, no per-field checks
        return {
            (k.decode() if k.__class__ is bytes else k): (v.decode() if v.__class__ is bytes else v)
            for k, v in items.items()
        }
    except (UnicodeDecodeError, AttributeError):
        pass
    for key, value in fields.items():  # find the culprit, to name it
        for part in (key, value):
            if isinstance(part, bytes):
                try:
                    part.decode()
                except UnicodeDecodeError as exc:
                    raise DecodeError(f"field {key!r} is not valid UTF-8", None) from exc
            elif not isinstance(part, str):
                raise DecodeError(f"field {key!r} is not a string", None)
    raise DecodeError("entry is not a map of strings", None)  # pragma: no cover - unreachable


_S = TypeVar("_S", bound=msgspec.Struct)


class Decoder(Generic[_S]):
    """Decodes entries of one stream; built once and reused (msgspec's advice for speed)."""

    def __init__(self, types: Mapping[str, type[_S]]) -> None:
        self._types = dict(types)
        self._known = ", ".join(sorted(types))
        self._amounts = {kind: amount_fields(cls) for kind, cls in types.items()}

    def decode(self, fields: Fields) -> _S:
        """Return the event, or raise :class:`DecodeError` naming what is wrong."""
        data = fields if _all_str(fields) else as_str_map(fields)
        kind = data.get("type")
        if kind is None:
            raise DecodeError("missing field `type`", "type")
        if kind not in self._types:
            raise DecodeError(f"unknown type {kind!r} (expected one of: {self._known})", "type")
        # msgspec reads an amount with Decimal(text), which takes " 1", "+5", "1_000", "１２"
        # and "5e999994": the one grammar (navstream.contract.numbers) goes first. A plain amount costs
        # one regex match; an exponent form or a long one takes the slow path.
        for name in self._amounts[kind]:
            text = data.get(name)
            if text is not None and (_plain(text) is None or len(text) > _SHORT):
                _refuse_amount(name, text)
        try:
            # The concrete class, not the tagged union: msgspec caches type info on Struct
            # classes only, so converting to a union costs ~4x more per entry.
            return msgspec.convert(data, self._types[kind], strict=False)
        except msgspec.ValidationError as exc:
            reason, field = _reason(exc)
            raise DecodeError(reason, field) from exc


_plain, _SHORT = numbers.PLAIN.fullmatch, numbers.SHORT


def _refuse_amount(name: str, text: str) -> None:
    """The slow path of the amount check: an exponent form, a long text, or a refused one."""
    if not numbers.accepts(text):
        raise DecodeError(f"field `{name}`: {numbers.reason(text)}", name)


def _all_str(fields: Fields) -> TypeGuard[Mapping[str, str]]:
    # Fast path: redis clients with decode_responses=True already hand us str.
    for key, value in fields.items():
        if type(key) is not str or type(value) is not str:
            return False
    return True


EVENT_DECODER: Decoder[Event] = Decoder(EVENT_TYPES)
ORDER_DECODER: Decoder[Order] = Decoder({"order": Order})


def decode_event(fields: Fields) -> Event:
    """Decode one ``P:events`` entry."""
    return EVENT_DECODER.decode(fields)


def decode_order(fields: Fields) -> Order | InvalidOrder:
    """Decode one ``P:orders`` entry; a broken order with an ``order_id`` becomes InvalidOrder.

    :raises DecodeError: when there is no usable ``order_id`` to answer to.
    """
    try:
        return ORDER_DECODER.decode(fields)
    except DecodeError as exc:
        data = as_str_map(fields)
        order_id = data.get("order_id", "")
        if not order_id or len(order_id) > 256:
            raise DecodeError(f"{exc.reason}; no usable `order_id` to answer", exc.field) from exc
        return InvalidOrder(order_id=order_id, reason=exc.reason, fields=data)


def encode_fields(event: msgspec.Struct) -> dict[str, str]:
    """The flat string map of an event, as a producer would XADD it."""
    out: dict[str, str] = {"type": type_tag(type(event))}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, Decimal):
            out[name] = format(value, "f")  # plain decimal, never 1E-8 (the contract's own form)
        else:
            out[name] = str(value)
    return out

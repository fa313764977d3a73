"""How old a NAV the plugins that read it accept: limits they declare, shown beside each NAV.

A NAV can be ``ok`` by its own ``[nav] max_age_s`` while a reader already refuses it: the risk
gate vetoes a NAV older than ``min([nav] max_age_s, [risk] max_nav_age_s)``. So that the
status page and ``navstream nav`` tell one story, a reader declares its limit
(:func:`declare_reader_limit`, through :mod:`~navstream.plugins.nav.api`) and nav shows it per
scope, and says when an ``ok`` NAV is past it. nav never imports its readers: they declare.

Declarations live in Redis (``P:state:nav:readers``: hash, reader -> JSON), not only in the
declaring process, because ``navstream nav`` runs in a process of its own where no reader
starts. A declaration counts while it is fresh (refreshed within the consumer heartbeat TTL,
``[consumer]``): a reader that no consumer runs any more is not shown, never invented. Consumers
running one reader with different limits (a rolling config change) overwrite each other: the
last declared is shown until they agree again.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Annotated

import msgspec

from navstream import AppProtocol, as_str_map

from .valuation import Snapshot

#: Hash ``P:state:nav:readers``: reader -> :class:`ReaderLimit` as JSON.
READERS = ("nav", "readers")
SCOPES = ("account", "venue", "exchange", "total")
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ReaderLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One reader's declared limit.

    :ivar reader: who reads (``risk gate``), as a person should read it.
    :ivar max_age_ms: the reader refuses a NAV once ``now - min(as_of, computed_at)`` exceeds this.
    :ivar scopes: the scopes it reads (``account``, ...).
    :ivar consumer: the consumer that declared it last; ``at``: when (epoch ms).
    """

    reader: Name
    max_age_ms: Annotated[int, msgspec.Meta(gt=0)]
    scopes: list[str]
    consumer: str = ""
    at: int = 0

    def reads(self, snap: Snapshot) -> bool:
        return snap.scope in self.scopes

    def age_ms(self, snap: Snapshot, now_ms: int) -> int:
        """The age the reader judges: of the NAV's oldest input or of its evaluation, the older."""
        return now_ms - min(snap.as_of, snap.computed_at)

    def refuses(self, snap: Snapshot, now_ms: int) -> bool:
        return self.reads(snap) and self.age_ms(snap, now_ms) > self.max_age_ms

    def refused_from(self, snap: Snapshot) -> int:
        """The first epoch ms at which the reader refuses ``snap`` for its age."""
        return min(snap.as_of, snap.computed_at) + self.max_age_ms + 1


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ReaderLimit).decode
#: What each app (consumer) declared last, so a declaration made every tick writes only when it
#: changed or is due to be refreshed.
_declared: weakref.WeakKeyDictionary[AppProtocol, dict[str, ReaderLimit]] = weakref.WeakKeyDictionary()


def valid_ms(app: AppProtocol) -> int:
    """How long a declaration counts without being refreshed."""
    return app.settings.consumer.heartbeat_ttl_ms


async def declare_reader_limit(app: AppProtocol, reader: str, max_age_ms: int, scopes: Iterable[str] = SCOPES) -> None:
    """Declare that ``reader`` refuses a NAV of ``scopes`` older than ``max_age_ms`` (judged on
    ``now - min(as_of, computed_at)``). Call it at startup and on every tick: it writes when the
    limit changed or a quarter of its validity passed, else does nothing.

    :raises ValueError: an empty or over-long ``reader``, a ``max_age_ms`` not above 0, an
        unknown scope.
    """
    chosen = sorted(set(scopes))
    if not reader.strip() or len(reader) > 64:
        raise ValueError(f"a reader's name must be 1 to 64 characters, got {reader!r}")
    if max_age_ms <= 0:
        raise ValueError(f"a reader's max_age_ms must be above 0, got {max_age_ms}")
    if not chosen or not set(chosen) <= set(SCOPES):
        raise ValueError(f"a reader's scopes must be some of {', '.join(SCOPES)}, got {chosen}")
    now = app.clock.now_ms()
    try:
        held = _declared.setdefault(app, {})
    except TypeError:  # an app that cannot be weakly referenced: write every time
        held = {}
    last = held.get(reader)
    if (
        last is not None
        and (last.max_age_ms, last.scopes) == (max_age_ms, chosen)
        and 0 <= now - last.at < valid_ms(app) // 4
    ):
        return
    limit = ReaderLimit(reader, max_age_ms, chosen, app.consumer_name, now)
    await app.redis.hset(app.keys.state(*READERS), reader, _encode(limit).decode())
    held[reader] = limit


async def read_reader_limits(app: AppProtocol, now_ms: int) -> tuple[list[ReaderLimit], list[str]]:
    """The readers' limits that count at ``now_ms`` (by reader name), and what could not be read."""
    raw = as_str_map(await app.redis.hgetall(app.keys.state(*READERS)))
    limits: list[ReaderLimit] = []
    problems: list[str] = []
    for member, value in sorted(raw.items()):
        try:
            limit = _decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            problems.append(f"{member}: {exc}"[:300])
            continue
        if now_ms - limit.at <= valid_ms(app):
            limits.append(limit)
    return limits, problems


def seconds(ms: int) -> str:
    """``60000`` -> ``60s``, ``1500`` -> ``1.5s``: a limit as a person reads it."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000:g}s"

"""What a source is: the API that built-in and third-party ingestors implement.

A plugin contributes source *kinds* through ``navstream_sources(register)``; the config names
*instances* (``[sources.<name>]``, with ``kind`` defaulting to the name), each decoded with its
kind's settings type. ``navstream ingest`` builds every configured instance once, at startup
(a missing credential fails there), then calls ``fetch`` on each one's interval.

A fetch returns absolute events (``Price``, ``Balance``, ``Position``) stamped with when the
*venue* observed the value, or raises: the ingest process turns each attempt into a
``source_status`` event either way. Problems that do not fail the whole fetch (an id missing
from an answer) are returned as ``problems``: they become alerts, and the values concerned are
simply not published, never replaced by 0. An event whose amount breaks the wire's bounds
(``navstream.contract.numbers``) is one of those problems, whichever source built it: ``Fetched`` takes it
out, so no source publishes what every consumer would dead-letter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec

from navstream.contract import numbers
from navstream.contract.events import Balance, Position, Price, amount_fields
from navstream.ingest.errors import SourceError as SourceError  # re-exported: the source API

if TYPE_CHECKING:
    from navstream.clock import Clock
    from navstream.ingest.httppool import HttpPool
    from navstream.ingest.pricecache import PriceCache

#: What a source may publish.
SourceEvent = Price | Balance | Position


class SourceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Settings every source has; a kind's settings type subclasses this and adds its own."""

    #: The kind registered by a plugin; empty: the instance's name.
    kind: str = ""
    #: Seconds between the starts of two fetches (a slow fetch delays the next, never doubles up).
    interval_s: Annotated[float, msgspec.Meta(ge=0.1, le=86_400)] = 30.0
    #: Budget of one whole fetch (every request, retry and wait in it).
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 20.0
    #: Off without deleting its section.
    enabled: bool = True


# Error texts quote URLs, and they end up in events, alerts and logs: one scrubber for all.
from navstream.logs import clip as clip  # noqa: E402  (redact, then cut: sources quote answers with it)
from navstream.logs import redact as redact  # noqa: E402  (re-exported: sources import it from here)
from navstream.logs import register_secret as register_secret  # noqa: E402


class SourceConfigError(ValueError):
    """A source that cannot be built from its config (a missing credential, a bad value)."""


@dataclass(frozen=True)
class Fetched:
    """The result of one successful fetch: an event with an amount out of bounds is moved to
    ``problems`` on the way in (the built-in sources read venue numbers with the same rules, so
    this catches what a plugin's own arithmetic or parsing let through)."""

    events: list[SourceEvent] = field(default_factory=list)
    #: Things that did not fail the fetch but leave values unpublished, in words.
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # problems quote the venue's answer, which may echo a credential: masked like errors
        object.__setattr__(self, "problems", [redact(p) for p in self.problems])
        refused = [(event, why) for event in self.events if (why := _amount_problem(event))]
        if refused:
            out = {id(e) for e, _ in refused}
            object.__setattr__(self, "events", [e for e in self.events if id(e) not in out])
            object.__setattr__(
                self, "problems", [*self.problems, *(f"{_subject(e)}: {why}; not published" for e, why in refused)]
            )


_AMOUNTS = {cls: amount_fields(cls) for cls in (Price, Balance, Position)}


def _amount_problem(event: SourceEvent) -> str:
    """``field `x`: <value> is out of bounds: ...`` for the first amount out of bounds, or ``""``."""
    for name in _AMOUNTS.get(type(event), ()):
        value = getattr(event, name)
        why = numbers.decimal_refusal(value) if value is not None else ""
        if why:
            return f"field `{name}`: {numbers.show(value)} is {why}"
    return ""


def _subject(event: SourceEvent) -> str:
    if isinstance(event, Price):
        return f"price {event.base}/{event.quote}"
    if isinstance(event, Balance):
        return f"balance {event.venue}/{event.account}/{event.asset}"
    return f"position {event.venue}/{event.account}/{event.symbol}"


class Source(Protocol):
    """One configured source instance."""

    #: The instance's name (its config section), also ``source_status.source``.
    name: str
    #: ``source_status.venue`` and, for account sources, ``source_status.account``.
    venue: str
    account: str | None
    settings: SourceSettings

    async def fetch(self) -> Fetched:
        """One round: ask the venue, return what it said (or raise)."""
        ...

    async def aclose(self) -> None:
        """Release what the source holds (the shared HTTP pool is closed by the host)."""
        ...


@dataclass
class SourceContext:
    """What the host gives a source when it builds one."""

    http: HttpPool
    cache: PriceCache
    clock: Clock
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def secret(self, source: str, setting: str, env_name: str) -> str:
        """The credential in environment variable ``env_name``, or a startup error naming the
        source and the setting (never the value). The value is registered with the log redactor
        (:func:`navstream.logs.register_secret`), so an answer that echoes it (an error body, a
        URL) never puts it into a log line, a ``source_status.error`` or a problem: read every
        credential through here."""
        if not env_name:
            raise SourceConfigError(f"[sources.{source}] {setting}: no environment variable named")
        value = self.env.get(env_name, "")
        if not value:
            raise SourceConfigError(
                f"[sources.{source}] {setting}: environment variable {env_name} is not set "
                "(credentials come only from the environment)"
            )
        register_secret(value)  # masked from now on in every log record and error text (navstream.logs)
        return value


#: ``factory(name, settings, context) -> Source``.
SourceFactory = Callable[[str, Any, SourceContext], Source]


@dataclass(frozen=True)
class SourceKind:
    kind: str
    settings: type[SourceSettings]
    factory: SourceFactory
    plugin: str = ""

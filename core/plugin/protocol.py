"""What a hook's ``app`` argument offers a plugin: the one interface plugins are typed against.

:class:`navstream.app.App` implements it; a plugin's own tests may pass anything that does. It
names only what plugins need, so core can change the rest of ``App`` without breaking them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from navstream.clock import Clock
    from navstream.config import Settings
    from navstream.contract.keys import Keys
    from navstream.stats import Stats

_Config = TypeVar("_Config")


class AppProtocol(Protocol):
    """The running application, as a hook receives it.

    :ivar redis: a client returning ``str``.
    :ivar raw: a client returning ``bytes`` (streams whose entries may hold invalid UTF-8).
    :ivar keys: every stream and key of this deployment, under its prefix.
    :ivar clock: epoch milliseconds; simulated in the demo and in tests.
    :ivar settings: the validated core settings (``[redis]``, ``[consumer]``, ...).
    :ivar stats: this consumer's counters, as its heartbeat publishes them (read them only).
    """

    redis: aioredis.Redis
    raw: aioredis.Redis
    keys: Keys
    clock: Clock
    settings: Settings
    stats: Stats
    group: str
    consumer_name: str

    @overload
    def plugin_config(self, section: str) -> Any: ...

    @overload
    def plugin_config(self, section: str, kind: type[_Config]) -> _Config: ...

    def plugin_config(self, section: str, kind: type[Any] | None = None) -> Any:
        """The decoded ``[section]`` a plugin declared (defaults applied); with ``kind``, checked
        to be an instance of it (``TypeError`` otherwise) and typed as one."""
        ...

    def scan_keys(self, *, match: str, count: int = 500) -> AsyncIterator[str]:
        """Every key matching ``match`` (under the prefix), on one node or a cluster."""
        ...

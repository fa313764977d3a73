"""How Redis refuses a batch's writes, and what navstream raises then."""

from __future__ import annotations

from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

# What Redis (and fakeredis) answer when a stream or its group has vanished under us.
_MISSING_MARKERS = ("NOGROUP", "no longer exists", "requires the key to exist", "no such key")


def is_missing_group(exc: ResponseError) -> bool:
    text = str(exc).lower()
    return any(marker.lower() in text for marker in _MISSING_MARKERS)


class WriteError(RuntimeError):
    """Redis refused part of a batch's writes; the batch stays pending."""


class WritesRefused(WriteError):
    """Redis refuses every write for now (out of memory under ``noeviction``, a read-only
    replica after a failover, a failed RDB save with ``stop-writes-on-bgsave-error``): not the
    batch's fault, so it is held and retried as it is, with backoff, until writes work again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: What Redis answers when it refuses writes as a whole, not one write in particular, as the
#: marker that starts its reason. redis-py strips the error code of the first two (and gives
#: them their own classes, kept through pipelines), so their text is matched too.
_REFUSALS = (
    ("OOM ", "command not allowed when used memory", OutOfMemoryError),
    ("READONLY ", "You can't write against a read only replica", ReadOnlyError),
    ("", "MISCONF", None),
)


def refusal(exc: BaseException) -> str | None:
    """Why Redis refuses writes (``OOM ...``, ``READONLY ...``, ``MISCONF ...``), or None when
    ``exc`` is not Redis refusing writes as a whole. Found inside a pipeline's or a script's
    error text too (``Command # 3 (HSET ...) of pipeline caused error: ...``)."""
    if isinstance(exc, WritesRefused):
        return exc.reason
    if not isinstance(exc, (ResponseError, WriteError)):
        return None
    text = str(exc)
    for code, marker, cls in _REFUSALS:
        at = text.find(marker)
        if at < 0 and not (cls is not None and isinstance(exc, cls)):
            continue
        reason = text[at:] if at >= 0 else text
        if code and not reason.startswith(code):
            reason = code + reason
        return reason if len(reason) <= 200 else reason[:197] + "..."
    return None

"""Each consumer's heartbeat document: what it processed, how far behind it is, how its sink
and the desk's sources are doing, and a ``status`` of ``ok`` or ``degraded`` with the reason.

``ok`` means: this consumer's last Firestore commit before the document was built succeeded,
nothing is held back by the budget or shed, and the consumer's own health (every plugin's
report, as its Redis heartbeat says) is ``ok``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from navstream import AppProtocol, as_str_list, as_str_map

from .config import Target
from .documents import Doc, consumer_doc_id

if TYPE_CHECKING:
    from .sink import Sink

#: The desk's sources listed in a heartbeat at most (a document must stay well under 1 MiB).
MAX_SOURCES = 200
#: ``P:state:sources``: the registry the source_monitor plugin keeps of every source's hash.
SOURCE_REGISTRY = "sources"


def _short(stream: str, prefix: str) -> str:
    return stream[len(prefix) + 1 :] if stream.startswith(prefix + ":") else stream


def heartbeat_document(
    app: AppProtocol,
    target: Target,
    sink: Sink,
    now_ms: int,
    consumer_status: str,
    problems: Sequence[tuple[str, str]],
    sources: list[dict[str, Any]],
) -> Doc:
    stats = app.stats
    prefix = app.keys.prefix
    s = sink.stats
    data: dict[str, Any] = {
        "consumer": app.consumer_name,
        "group": app.group,
        "env": target.env,
        "ts": now_ms,
        "consumer_status": consumer_status,
        "status": "degraded" if problems else "ok",
        "reason": "; ".join(reason for _, reason in problems),
        "started_ms": stats.started_ms,
        "last_batch_ms": stats.last_batch_ms,
        "last_batch_size": stats.last_batch_size,
        "last_batch_duration_ms": round(stats.last_batch_duration_ms, 3),
        "lag": {_short(k, prefix): v for k, v in stats.lag.items()},
        "pending": {_short(k, prefix): v for k, v in stats.pending.items()},
        "counters": {
            "processed": stats.processed,
            "failed": stats.failed,
            "dead_lettered": stats.dead_lettered,
            "lost": stats.lost,
            "plugin_errors": stats.plugin_errors,
            "write_failures": stats.write_failures,
            "reconnects": stats.reconnects,
            "batches": stats.batches,
            "dlq_length": stats.dlq_length,
        },
        "last_error": stats.last_error,
        "sink": {
            "name": "firestore",
            "leader": sink.leader,
            "dry_run": sink.store.dry_run,
            "writes": s.writes,
            "failures": s.failures,
            "pending": len(sink.pending),
            "deferred": s.deferred,
            "shed": s.shed,
            "last_success_ms": s.last_success_ms,
            "last_failure_ms": s.last_failure_ms,
            "last_failure": s.last_failure,
            "writes_today": sink.used_now(now_ms),
            "max_writes_per_day": sink.cfg.max_writes_per_day,
        },
        "sources": sources,
    }
    return Doc(
        f"heartbeats/{consumer_doc_id(app.consumer_name)}", data, "heartbeat", "always", shared=False, content=""
    )


async def read_consumer_health(app: AppProtocol) -> tuple[str, str]:
    """This consumer's health as its last Redis heartbeat has it (every plugin's report), but
    for this plugin's own (the document says that itself): ``ok``, or ``degraded`` and why."""
    fields = as_str_map(await app.redis.hgetall(app.keys.heartbeat(app.consumer_name)))
    reasons = []
    for key, value in sorted(fields.items()):
        plugin, _, name = key.rpartition(".")
        if name == "status" and plugin and plugin != "firestore" and value != "ok":
            reasons.append(f"{plugin}: {fields.get(f'{plugin}.reason') or value}")
    return ("degraded" if reasons else "ok"), "; ".join(reasons)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


async def read_sources(app: AppProtocol) -> list[dict[str, Any]]:
    """Every source's latest report, last success and last failure (the source_monitor
    plugin's state), at most :data:`MAX_SOURCES`."""
    keys = sorted(as_str_list(await app.redis.hkeys(app.keys.state(SOURCE_REGISTRY))))[:MAX_SOURCES]
    if not keys:
        return []
    pipe = app.redis.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(app.keys.state(key))
    out = []
    for data in await pipe.execute():
        if not data or "ts" not in data:
            continue
        out.append(
            {
                "venue": data.get("venue", ""),
                "source": data.get("source", ""),
                "account": data.get("account", ""),
                "ok": data.get("ok") == "true",
                "silent": data.get("silent") == "true",
                "error": data.get("error", ""),
                "ts": _int(data.get("ts")),
                "last_ok_ts": _int(data.get("last_ok_ts")),
                "last_error_ts": _int(data.get("last_error_ts")),
            }
        )
    return out

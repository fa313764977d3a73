"""One consumer's counters: kept by the loop, published in its heartbeat, read by /metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Counters of one consumer, published in its heartbeat."""

    started_ms: int = 0
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    lost: int = 0
    plugin_errors: int = 0
    write_failures: int = 0
    reconnects: int = 0
    groups_recreated: int = 0
    batches: int = 0
    last_batch_ms: int = 0
    last_batch_size: int = 0
    last_batch_duration_ms: float = 0.0
    by_type: Counter[str] = field(default_factory=Counter)
    lag: dict[str, int | None] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    dlq_length: int = 0
    #: Writes Redis refused (OOM, READONLY, MISCONF), every attempt counted.
    writes_refused: int = 0
    #: Epoch ms of the first refused write of the current episode; None while writes work.
    #: ``/readyz`` and the heartbeat's ``health`` read it.
    writes_refused_since: int | None = None

    def heartbeat_fields(self) -> dict[str, str]:
        """The heartbeat hash's fields (Redis keeps text)."""
        return {k: str(v) for k, v in self.heartbeat_values().items()}

    def heartbeat_values(self) -> dict[str, int | float | str]:
        """The heartbeat's fields as they are: numbers as numbers (for a log record)."""
        out: dict[str, int | float | str] = {
            "started_ms": self.started_ms,
            "processed": self.processed,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "lost": self.lost,
            "plugin_errors": self.plugin_errors,
            "write_failures": self.write_failures,
            "reconnects": self.reconnects,
            "batches": self.batches,
            "last_batch_ms": self.last_batch_ms,
            "last_batch_size": self.last_batch_size,
            "last_batch_duration_ms": round(self.last_batch_duration_ms, 3),
            "last_error": self.last_error,
            "dlq_length": self.dlq_length,
            "writes_refused": self.writes_refused,
            "writes_refused_since": self.writes_refused_since or 0,
        }
        for stream, lag in self.lag.items():
            out[f"lag:{stream}"] = "unknown" if lag is None else lag
        for stream, pending in self.pending.items():
            out[f"pending:{stream}"] = pending
        return out

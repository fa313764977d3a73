"""The risk gate's per-consumer state, its config and its audit records.

Shared by the hooks (:mod:`navstream.plugins.risk`), the tick work (:mod:`.ticks`) and the
``navstream risk`` commands (:mod:`.ops`), which is why it is a module of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from navstream import AppProtocol, Order
from navstream.plugins.nav.api import NavConfig, escape

from .audit import AuditLog
from .config import RiskConfig
from .decide import Decision
from .inputs import DecisionInputs, canonical
from .state import InFlightCache, forget_inflight
from .trading import TradingRecord

SECTION = "risk"

log = logging.getLogger("navstream.risk")


def config(app: AppProtocol) -> RiskConfig:
    return app.plugin_config(SECTION, RiskConfig)


def nav_config(app: AppProtocol) -> NavConfig:
    try:
        return app.plugin_config("nav", NavConfig)
    except KeyError:
        raise RuntimeError(
            "the risk gate judges orders by the nav plugin's NAV and prices, and the nav "
            "plugin is not loaded (is it in [plugins] disabled?)"
        ) from None


class AuditRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of the audit log."""

    ts: int
    consumer: str
    order_id: str
    decision: Decision
    #: The order as decoded, and what it was judged against (absent for a bad order).
    order: Order | None = None
    inputs: DecisionInputs | None = None
    input_hash: str = ""
    #: For an order vetoed whatever the rules (bad, reused id, unreadable state): why, and its
    #: fields as received.
    invalid: str = ""
    fields: dict[str, str] = {}
    #: The rules version it was decided under (:data:`.inputs.RULES`); 1 for older records.
    rules: int = 1


_encode_line = msgspec.json.Encoder(decimal_format="string").encode


def audit_line(record: AuditRecord) -> bytes:
    """One line of the log, made in the audit writer's thread (the hash costs the loop
    nothing). The order and its inputs are encoded once, canonically: the hash is taken over
    those very bytes (as :func:`.inputs.input_hash` takes it over ``[order, inputs]``), and the
    line carries them as they are, so what is hashed is what is written."""
    if record.order is None or record.inputs is None:
        return _encode_line(record)
    order, inputs = canonical(record.order), canonical(record.inputs)
    digest = hashlib.sha256(b"[" + order + b"," + inputs + b"]").hexdigest()
    rest = _encode_line(msgspec.structs.replace(record, order=None, inputs=None, input_hash=digest))
    return rest[:-1] + b',"order":' + order + b',"inputs":' + inputs + b"}"


@dataclass
class Gate:
    """This consumer's audit log and what it has told about it."""

    audit: AuditLog
    #: Shortfall (dropped + failed) already alerted, and when it last grew (monotonic).
    reported: int = 0
    short_at: float | None = None
    decided: Counter[str] = field(default_factory=Counter)
    #: The trading records as this consumer last read them: one that vanishes from Redis (data
    #: lost, a flush) is written back, never read as "active".
    records: dict[str, TradingRecord] = field(default_factory=dict)
    #: The orders in flight as last decoded, by batches and ticks.
    inflight: InFlightCache = field(default_factory=InFlightCache)
    #: A batch forgetting the orders in flight no decision counts any more, behind the batch's
    #: write (one at a time: while it runs, later batches leave theirs to the next, or the tick).
    forgetting: asyncio.Task[int] | None = None
    #: Orders in flight forgotten by batches so far.
    forgotten: int = 0

    def forget_later(self, app: AppProtocol, done: Mapping[str, Mapping[str, str]]) -> None:
        """Delete ``done`` (:func:`.state.forget_inflight`) without holding up the batch: what no
        decision counts never counts again, so it may go at any time, or with the next tick."""
        if self.forgetting is None or self.forgetting.done():
            self.forgetting = asyncio.get_running_loop().create_task(self._forget(app, done))

    async def _forget(self, app: AppProtocol, done: Mapping[str, Mapping[str, str]]) -> int:
        try:
            deleted = await forget_inflight(app, done)
        except Exception as exc:  # noqa: BLE001 - the tick prunes what this could not
            log.warning(
                "orders in flight not forgotten (the tick prunes them)",
                extra={"event": "inflight_forget_failed", "error": f"{type(exc).__name__}: {exc}"[:500]},
            )
            return 0
        self.forgotten += deleted
        return deleted

    async def settle(self) -> None:
        """Wait for the forgetting under way, if any (tests; shutdown)."""
        if self.forgetting is not None:
            await asyncio.shield(self.forgetting)


def audit_path(app: AppProtocol, cfg: RiskConfig) -> Path:
    base = Path(cfg.audit_dir) if cfg.audit_dir else default_audit_dir()
    return base / f"risk-{escape(app.consumer_name).replace('%', '_')}.jsonl"


def default_audit_dir() -> Path:
    """``$NAVSTREAM_STATE_DIR/audit`` when that variable is set (the container image sets it to
    its volume ``/var/lib/navstream``: the root filesystem is read-only and HOME is
    ``/nonexistent``), else ``$XDG_STATE_HOME/navstream/audit``
    (``~/.local/state/navstream/audit``): the user's state directory, never the working
    directory."""
    state_dir = os.environ.get("NAVSTREAM_STATE_DIR")
    if state_dir:
        return Path(state_dir) / "audit"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "navstream" / "audit"


def open_gate(app: AppProtocol) -> Gate:
    """This consumer's gate, its audit log opened (a directory it cannot write raises)."""
    cfg = config(app)
    audit = AuditLog(
        audit_path(app, cfg),
        max_bytes=cfg.audit_max_mb << 20,
        backups=cfg.audit_backups,
        queue_size=cfg.audit_queue,
        encode=audit_line,
    )
    return Gate(audit)


def health_report(app: AppProtocol, gate: Gate) -> Mapping[str, Any]:
    """The gate's ``navstream_health``: degraded while its audit log cannot keep every decision."""
    stats = gate.audit.stats
    short = stats.dropped + stats.failed
    # Degraded while the log cannot keep every decision: its writer is gone, or a shortfall
    # happened within the last alert period (a past one stays counted in audit_missing).
    recent = gate.short_at is not None and time.monotonic() - gate.short_at < config(app).alert_every_s
    report: dict[str, Any] = {
        "status": "ok",
        "approved": gate.decided["approve"],
        "vetoed": gate.decided["veto"],
        "repeated": gate.decided["repeated"],
        "audit_written": stats.written,
        "audit_missing": short,
    }
    if not gate.audit.alive:
        report.update(
            status="degraded",
            reason=f"audit writer stopped ({stats.last_error or 'unknown'}); decisions are not being logged",
        )
    elif recent:
        report.update(
            status="degraded",
            reason=(
                f"audit log missing {short} decisions ({stats.dropped} dropped, {stats.failed} refused: "
                f"{stats.last_error or 'queue full'})"
            ),
        )
    return report

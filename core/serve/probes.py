"""The rules behind ``/healthz`` (is this process worth keeping?) and ``/readyz`` (can this
process do its work right now?), as pure functions of what the consumer knows and one
:class:`~navstream.serve.status.DeskView`.

Liveness is deliberately narrow: a consumer waiting out a Redis outage is alive (restarting it
would not bring Redis back); only a loop that stopped making progress, or a process shutting
down, is not. Readiness is about this process: Redis answering and accepting its writes, its
consumer group, its plugins' own health and their readiness reasons (``navstream_readiness``).
The desk's data being stale is not (every replica would turn not-ready at once, and a rollout
that may fix the outage would stall): it is in the metrics and the alerts, unless ``[http]
ready_on_stale_data = false`` asks plugins for the old rule.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from navstream.serve.status import DeskView

#: At most this many reasons of one kind (one plugin's readiness reasons, degraded plugins); the rest
#: are counted.
MAX_REASONS_PER_KIND = 5


@dataclass(frozen=True)
class LoopState:
    """The consumer loop as the probes see it.

    :ivar phase: ``starting`` (setup: creating groups, plugins' startup), ``running``,
        ``stopping`` or ``stopped``.
    :ivar idle_s: seconds since the loop last made progress (an iteration, a reconnect attempt).
    :ivar stall_limit_s: idle longer than this while running is a stalled loop: the heartbeat
        TTL, which already allows for a batch that runs into hook timeouts.
    :ivar reconnecting_s: seconds since the loop lost Redis, None while connected.
    :ivar writes_refused_since_ms: epoch ms of the first write Redis refused in the current
        episode (OOM, READONLY, MISCONF); None or 0 while writes work.
    :ivar writes_refused_reason: what Redis said, when known.
    """

    phase: str
    idle_s: float
    stall_limit_s: float
    reconnecting_s: float | None = None
    writes_refused_since_ms: int | None = None
    writes_refused_reason: str = ""


def liveness(state: LoopState) -> tuple[bool, str]:
    """``(alive, why)``."""
    if state.phase in ("stopping", "stopped"):
        return False, f"{state.phase}: the consumer is shutting down"
    if state.phase == "running" and state.idle_s > state.stall_limit_s:
        return False, (
            f"loop stalled: no progress for {state.idle_s:.0f}s (limit {state.stall_limit_s:.0f}s, the heartbeat TTL)"
        )
    return True, state.phase


def _capped(reasons: list[str]) -> list[str]:
    if len(reasons) <= MAX_REASONS_PER_KIND:
        return reasons
    return reasons[:MAX_REASONS_PER_KIND] + [f"... and {len(reasons) - MAX_REASONS_PER_KIND} more like these"]


def plugin_problems(health: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(plugin, status, reason)`` of each plugin whose ``navstream_health`` status is not
    ``ok``, from :meth:`Upkeep.health`'s ``<plugin>.status`` and ``<plugin>.reason`` fields."""
    problems = []
    for key, status in sorted(health.items()):
        if not key.endswith(".status") or status == "ok":
            continue
        plugin = key[: -len(".status")]
        problems.append((plugin, status, health.get(f"{plugin}.reason") or "no reason given"))
    return problems


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def readiness(
    state: LoopState,
    view: DeskView,
    *,
    streams: Sequence[str],
    group: str,
    health: Mapping[str, str],
    plugin_reasons: Sequence[tuple[str, Sequence[str]]] = (),
) -> list[str]:
    """Why this consumer is not ready; empty when it is.

    - the loop is starting or stopping;
    - Redis does not answer (a ``PING`` within the read timeout), or the loop is reconnecting;
    - Redis refuses this process's writes (OOM, READONLY, MISCONF): it cannot acknowledge anything;
    - the consumer group is missing on a stream this consumer reads;
    - a plugin says why not (``navstream_readiness``: ``plugin_reasons``, ``(plugin, reasons)``;
      the desk's data being stale, say, where ``[http] ready_on_stale_data = false``);
    - a plugin (a sink, the risk gate's audit log, ...) reports itself degraded.
    """
    reasons: list[str] = []
    if state.phase == "starting":
        reasons.append("starting: waiting for Redis, the consumer groups and the plugins' startup")
    elif state.phase != "running":
        reasons.append(f"{state.phase}: the consumer is shutting down")
    if view.redis_error:
        reasons.append(f"redis unreachable: {view.redis_error}")
    elif state.reconnecting_s is not None:
        reasons.append(f"redis connection lost {state.reconnecting_s:.0f}s ago; the loop is reconnecting")
    since = state.writes_refused_since_ms
    if since:
        refused = f"Redis refuses writes since {_utc(since)} ({max(0, view.read_ms - since) / 1000:.0f}s)"
        reasons.append(
            refused
            + (f": {state.writes_refused_reason}" if state.writes_refused_reason else "")
            + "; nothing is acknowledged until it takes them again"
        )
    if not view.redis_error and state.phase == "running":
        for stream in streams:
            if view.groups.get(stream) is None:
                reasons.append(f"consumer group {group!r} is missing on {stream} (the loop recreates it)")
    for _, given in plugin_reasons:
        reasons += _capped(list(given))
    reasons += _capped([f"plugin {plugin} is {status}: {reason}" for plugin, status, reason in plugin_problems(health)])
    return reasons

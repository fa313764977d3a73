"""What a plugin derives from a batch, buffered until navstream writes it in one atomic step.

Buffering is what keeps the loop fast and correct: state writes are coalesced per key (the
latest ``ts`` wins in memory, then once more in Redis), and nothing is written before the whole
batch was handled, so an entry is acknowledged only after everything it caused is written.
"""

from __future__ import annotations

from typing import Literal, Mapping

import msgspec

Severity = Literal["info", "warning", "critical"]
SEVERITIES = ("info", "warning", "critical")

# KEYS[1] = hash, ARGV[1] = ts, ARGV[2..] = field, value pairs. Applies the snapshot unless the
# hash already holds a newer `ts` (contract: an older entry for the same key is ignored), so
# consumers racing in one group converge on the same state as a single consumer.
PUT_LATEST_LUA = """
local current = redis.call('HGET', KEYS[1], 'ts')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'ts', ARGV[1], unpack(ARGV, 2))
return 1
"""


class Alert(msgspec.Struct, frozen=True, omit_defaults=True):
    """An entry of ``P:alerts``."""

    code: str
    severity: Severity
    message: str
    ts: int
    venue: str | None = None
    account: str | None = None
    asset: str | None = None
    source: str | None = None

    def fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in msgspec.structs.asdict(self).items() if v is not None}


class Outputs:
    """One plugin's outputs for one batch or tick.

    :param now_ms: the clock when the batch was handled; stamps alerts.
    """

    __slots__ = ("now_ms", "streams", "latest", "hashes", "alerts")

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.streams: dict[str, list[dict[str, str]]] = {}
        self.latest: dict[str, tuple[int, dict[str, str]]] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.alerts: list[Alert] = []

    def emit(self, stream: str, fields: Mapping[str, str]) -> None:
        """Append an entry to output stream ``P:<stream>`` (``"nav"``, ``"decisions"``, ...).

        Output streams are trimmed with ``MAXLEN ~ [consumer] output_maxlen``.
        """
        if not fields:
            raise ValueError("an output entry needs at least one field")
        self.streams.setdefault(stream, []).append(dict(fields))

    def alert(
        self,
        code: str,
        severity: Severity,
        message: str,
        *,
        venue: str | None = None,
        account: str | None = None,
        asset: str | None = None,
        source: str | None = None,
    ) -> None:
        """Raise an alert on ``P:alerts`` (and in the logs, and in the counters)."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        self.alerts.append(
            Alert(code, severity, message, self.now_ms, venue, account, asset, source)
        )

    def put_latest(self, key: str, ts: int, fields: Mapping[str, str]) -> None:
        """Set state hash ``P:state:<key>`` to ``fields`` unless it holds a newer ``ts``.

        Coalesced per batch: only the newest snapshot per key reaches Redis.
        """
        held = self.latest.get(key)
        if held is None or ts >= held[0]:
            self.latest[key] = (ts, dict(fields))

    def hset(self, key: str, fields: Mapping[str, str]) -> None:
        """Merge ``fields`` into state hash ``P:state:<key>``, the last write per field winning."""
        self.hashes.setdefault(key, {}).update(fields)

    def merge(self, other: Outputs) -> None:
        """Fold another buffer into this one, keeping the coalescing rules."""
        for stream, entries in other.streams.items():
            self.streams.setdefault(stream, []).extend(entries)
        for key, (ts, fields) in other.latest.items():
            self.put_latest(key, ts, fields)
        for key, fields in other.hashes.items():
            self.hset(key, fields)
        self.alerts.extend(other.alerts)

    def __bool__(self) -> bool:
        return bool(self.streams or self.latest or self.hashes or self.alerts)

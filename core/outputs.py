"""What a plugin derives from a batch, buffered until navstream writes it in one step.

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


RESERVED_STREAMS = ("events", "orders", "dlq", "alerts")
MAX_FIELDS = 1000


def _checked(what: str, fields: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``fields`` once every key and value is a ``str``.

    Checked here, inside the plugin's own call, so a plugin's mistake (a ``Decimal`` where a
    string belongs) fails that plugin alone instead of the batch write for everyone.
    """
    if not fields:
        raise ValueError(f"{what}: needs at least one field")
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"{what}: {len(fields)} fields, more than {MAX_FIELDS}")
    for key, value in fields.items():
        if type(key) is not str or type(value) is not str or not key:
            raise TypeError(
                f"{what}: field {key!r} = {value!r}: keys and values must be non-empty str keys "
                "and str values (write money as str(Decimal))")
    return dict(fields)


def _name(what: str, name: str) -> str:
    if type(name) is not str or not name or any(c in name for c in " \t\r\n"):
        raise ValueError(f"{what}: invalid name {name!r}")
    return name


class Outputs:
    """One plugin's outputs for one batch or tick.

    Every method checks its arguments at once, so a plugin's mistake raises in that plugin's
    own call (and is isolated like any plugin error), never later in the shared batch write.

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
        _name("emit", stream)
        if ":" in stream or stream in RESERVED_STREAMS:
            raise ValueError(f"emit: {stream!r} is not a plugin output stream")
        self.streams.setdefault(stream, []).append(_checked(f"emit to {stream!r}", fields))

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
        for name, value in (("code", code), ("message", message), ("venue", venue),
                            ("account", account), ("asset", asset), ("source", source)):
            if value is not None and type(value) is not str:
                raise TypeError(f"alert: `{name}` must be a str, got {type(value).__name__}")
        _name("alert code", code)
        self.alerts.append(
            Alert(code, severity, message, self.now_ms, venue, account, asset, source)
        )

    def put_latest(self, key: str, ts: int, fields: Mapping[str, str]) -> None:
        """Set state hash ``P:state:<key>`` to ``fields`` unless it holds a newer ``ts``.

        Coalesced per batch: only the newest snapshot per key reaches Redis.
        """
        _name("put_latest", key)
        if type(ts) is not int:
            raise TypeError(f"put_latest {key!r}: ts must be an int (epoch ms), got {type(ts).__name__}")
        checked = _checked(f"put_latest {key!r}", fields)
        held = self.latest.get(key)
        if held is None or ts >= held[0]:
            self.latest[key] = (ts, checked)

    def hset(self, key: str, fields: Mapping[str, str]) -> None:
        """Merge ``fields`` into state hash ``P:state:<key>``, the last write per field winning."""
        _name("hset", key)
        self.hashes.setdefault(key, {}).update(_checked(f"hset {key!r}", fields))

    def merge(self, other: Outputs) -> None:
        """Fold another (already checked) buffer into this one, keeping the coalescing rules."""
        for stream, entries in other.streams.items():
            self.streams.setdefault(stream, []).extend(entries)
        for key, (ts, fields) in other.latest.items():
            held = self.latest.get(key)
            if held is None or ts >= held[0]:
                self.latest[key] = (ts, fields)
        for key, fields in other.hashes.items():
            self.hashes.setdefault(key, {}).update(fields)
        self.alerts.extend(other.alerts)

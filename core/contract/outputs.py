"""What a plugin derives from a batch, buffered until navstream writes it in one step.

Buffering is what keeps the loop fast and correct: state writes are coalesced per key (the
latest ``ts`` wins in memory, then once more in Redis), and nothing is written before the whole
batch was handled, so an entry is acknowledged only after everything it caused is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from navstream.contract.alerts import (
    MAX_EVERY_S,
    SEVERITIES,
    Alert,
    Once,
    Severity,
    alert_marker_prefix,
    default_subject,
    once_spec,
)
from navstream.contract.records import parse_field, parse_first

__all__ = [
    "MAX_EVERY_S",
    "MAX_FIELDS",
    "RESERVED_STREAMS",
    "SEVERITIES",
    "Alert",
    "Once",
    "Outputs",
    "Severity",
    "parse_field",
    "parse_first",
]

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
                "and str values (write money as str(Decimal))"
            )
    return dict(fields)


def _put_member(members: dict[str, tuple[int, str]], name: str, value: tuple[int, str]) -> None:
    """PUTFIELDS coalesced in memory: the newest ``ts`` per member wins (a tie: the later)."""
    held = members.get(name)
    if held is None or value[0] >= held[0]:
        members[name] = value


#: Names already found valid: a batch names the same few keys and streams again and again.
#: Bounded, since some names carry ids from entries; past the bound names are checked each time.
_VALID_NAMES: set[str] = set()
VALID_NAMES_MAX = 4096
_BLANK = re.compile(r"[ \t\r\n]")


def _name(what: str, name: str) -> str:
    if type(name) is str and name in _VALID_NAMES:
        return name
    if type(name) is not str or not name or _BLANK.search(name):
        raise ValueError(f"{what}: invalid name {name!r}")
    if len(_VALID_NAMES) < VALID_NAMES_MAX:
        _VALID_NAMES.add(name)
    return name


class Outputs:
    """One plugin's outputs for one batch or tick.

    Every method checks its arguments at once, so a plugin's mistake raises in that plugin's
    own call (and is isolated like any plugin error), never later in the shared batch write.

    :param now_ms: the clock when the batch was handled; stamps alerts.
    """

    __slots__ = (
        "now_ms",
        "streams",
        "streams_once",
        "streams_first",
        "latest",
        "fields",
        "hashes",
        "stamps",
        "alerts",
        "indexes",
        "_once_alerts",
        "_once_entries",
    )

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.streams: dict[str, list[dict[str, str]]] = {}
        #: (stream, fields, once) of entries written at most once per version and period.
        self.streams_once: list[tuple[str, dict[str, str], Once]] = []
        #: once key -> index in ``streams_once``.
        self._once_entries: dict[str, int] = {}
        #: (stream, state key, field, fields) of entries whose first version is stored and repeated.
        self.streams_first: list[tuple[str, str, str, dict[str, str]]] = []
        self.latest: dict[str, tuple[int, dict[str, str]]] = {}
        self.fields: dict[str, dict[str, tuple[int, str]]] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        #: key -> member -> score, added to sorted sets unless already there (:meth:`index`).
        self.indexes: dict[str, dict[str, int]] = {}
        #: key -> (the stamp this plugin read, its own, the hashes it covers): :meth:`stamp`.
        self.stamps: dict[str, tuple[str, str, frozenset[str]]] = {}
        self.alerts: list[Alert] = []
        #: once key -> index in ``alerts`` of the alert raised for it in this buffer.
        self._once_alerts: dict[str, int] = {}

    def emit(
        self,
        stream: str,
        fields: Mapping[str, str],
        *,
        subject: str | None = None,
        version: str = "",
        every_s: float | None = None,
    ) -> None:
        """Append an entry to output stream ``P:<stream>`` (``"nav"``, ``"decisions"``, ...).

        Output streams are trimmed with ``MAXLEN ~ [consumer] output_maxlen``.

        With ``subject`` and ``every_s``, the entry is written only if the last one written for
        ``subject`` had another ``version``, or was written at least ``every_s`` ago, by any
        consumer of the group: "publish on change, and at least every so often", without the
        replicas that judge the same thing each publishing it. The check and the write are part
        of the batch write, so a failed batch neither loses the entry nor spends the period.
        """
        _name("emit", stream)
        if ":" in stream or stream in RESERVED_STREAMS:
            raise ValueError(f"emit: {stream!r} is not a plugin output stream")
        checked = _checked(f"emit to {stream!r}", fields)
        if subject is None and every_s is None:
            if version != "":
                raise ValueError(f"emit to {stream!r}: `version` needs `subject` and `every_s`")
            self.streams.setdefault(stream, []).append(checked)
            return
        if subject is None or every_s is None:
            raise ValueError(f"emit to {stream!r}: give both `subject` and `every_s`, or neither")
        once = once_spec(f"emit to {stream!r}", f"entry:{stream}", subject, version, every_s)
        self._add_once_entry((stream, checked, once))

    def _add_once_entry(self, entry: tuple[str, dict[str, str], Once]) -> None:
        at = self._once_entries.get(entry[2].key)
        if at is not None:  # the newest entry per subject stands, as Redis would keep one
            self.streams_once[at] = entry
        else:
            self._once_entries[entry[2].key] = len(self.streams_once)
            self.streams_once.append(entry)

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
        every_s: float | None = None,
        subject: str | None = None,
        version: str | None = None,
    ) -> None:
        """Raise an alert on ``P:alerts`` (and in the logs, and in the counters).

        With ``every_s``, an alert with the same code, subject and version is written at most
        once per that many seconds, across every consumer of the group (the check and the write
        are one step of the batch write, so a failed batch neither loses the alert nor spends
        the period); a new ``version`` is written at once. Made for conditions judged again on
        every tick: they repeat as reminders, not as a flood, and a new episode of the same
        condition (give it a new version, e.g. when it began) is not swallowed by the last
        one's period. ``subject`` defaults to venue/account/asset/source.
        """
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        for name, value in (
            ("code", code),
            ("message", message),
            ("venue", venue),
            ("account", account),
            ("asset", asset),
            ("source", source),
        ):
            if value is not None and type(value) is not str:
                raise TypeError(f"alert: `{name}` must be a str, got {type(value).__name__}")
        _name("alert code", code)
        once = None
        if every_s is not None:
            if subject is None:
                subject = default_subject(venue, account, asset, source)
            once = once_spec(
                f"alert {code}",
                alert_marker_prefix(code),
                subject,
                "1" if version is None else version,
                every_s,
                versioned=version is not None,
            )
        elif subject is not None or version is not None:
            raise ValueError(f"alert {code}: `subject` and `version` need `every_s`")
        self._add_alert(Alert(code, severity, message, self.now_ms, venue, account, asset, source, once))

    def _add_alert(self, alert: Alert) -> None:
        if alert.once is not None:
            at = self._once_alerts.get(alert.once.key)
            if at is not None:  # raised again (in this buffer, or a later one merged): the newest stands
                self.alerts[at] = alert
                return
            self._once_alerts[alert.once.key] = len(self.alerts)
        self.alerts.append(alert)

    def emit_first(self, stream: str, fields: Mapping[str, str], *, key: str, field: str) -> None:
        """Append to ``P:<stream>`` the entry first stored for ``field`` in state hash
        ``P:state:<key>``: the first write stores ``fields`` there and emits them; every later
        one, by any consumer, on any redelivery, emits the stored fields, not its own.

        For answers that must never change once given (a risk decision for an order id). The
        store and the emit are one step of the batch write. The plugin owns the hash's size.
        """
        _name("emit_first", stream)
        if ":" in stream or stream in RESERVED_STREAMS:
            raise ValueError(f"emit_first: {stream!r} is not a plugin output stream")
        _name("emit_first key", key)
        if type(field) is not str or not field:
            raise ValueError(f"emit_first {key!r}: invalid field {field!r}")
        self.streams_first.append((stream, key, field, _checked(f"emit_first to {stream!r}", fields)))

    def put_latest(self, key: str, ts: int, fields: Mapping[str, str]) -> None:
        """Set state hash ``P:state:<key>`` to ``fields`` unless it holds a newer ``ts``.

        Coalesced per batch: only the newest snapshot per key reaches Redis.
        """
        _name("put_latest", key)
        if type(ts) is not int:
            raise TypeError(f"put_latest {key!r}: ts must be an int (epoch ms), got {type(ts).__name__}")
        self._put_latest(key, ts, _checked(f"put_latest {key!r}", fields))

    def _put_latest(self, key: str, ts: int, fields: dict[str, str]) -> None:
        """PUTLATEST coalesced in memory: the newest ``ts`` per key wins (a tie: the later)."""
        held = self.latest.get(key)
        if held is None or ts >= held[0]:
            self.latest[key] = (ts, fields)

    def put_latest_field(self, key: str, field: str, ts: int, payload: str) -> None:
        """Set ``field`` of state hash ``P:state:<key>`` to ``"<ts> <payload>"`` unless it
        holds a newer ``ts``: last-``ts``-wins per field, for state with many members (every
        holding of an account in one hash, read with one ``HGETALL``). Read it back with
        :func:`parse_field`. Coalesced per batch like :meth:`put_latest`.
        """
        _name("put_latest_field", key)
        if type(field) is not str or not field:
            raise ValueError(f"put_latest_field {key!r}: invalid field {field!r}")
        if type(ts) is not int:
            raise TypeError(f"put_latest_field {key!r}: ts must be an int (epoch ms), got {type(ts).__name__}")
        if type(payload) is not str:
            raise TypeError(f"put_latest_field {key!r}: payload must be a str, got {type(payload).__name__}")
        _put_member(self.fields.setdefault(key, {}), field, (ts, payload))

    def put_latest_fields(self, key: str, members: Mapping[str, tuple[int, str]]) -> None:
        """:meth:`put_latest_field` for many fields of one hash: ``{field: (ts, payload)}``."""
        _name("put_latest_fields", key)
        held = self.fields.setdefault(key, {})
        for name, value in members.items():
            if (
                type(name) is not str
                or not name
                or type(value) is not tuple
                or len(value) != 2
                or type(value[0]) is not int
                or type(value[1]) is not str
            ):
                raise TypeError(
                    f"put_latest_fields {key!r}: member {name!r} = {value!r}: needs a non-empty "
                    "str field and an (int ts, str payload) pair"
                )
            _put_member(held, name, value)

    def stamp(self, key: str, seen: str, mine: str, covers: Iterable[str] = ()) -> None:
        """Mark the state a plugin keeps under ``P:state:<key>`` as written by this batch.

        For a plugin that keeps a copy of its state between batches: the string
        ``P:state:<key>`` becomes ``mine`` if it still holds ``seen`` (the stamp the plugin read
        along with the state), so later finding ``mine`` there proves nobody wrote since and
        the copy is exact. If anyone else wrote in between, it becomes ``"!" + mine``, a stamp
        no copy holds, so every consumer's copy (this one's too) is known stale and read again.
        ``seen`` is ``""`` for "no stamp yet".

        ``covers`` names state hashes this buffer writes with :meth:`put_latest_field` whose
        held ``ts`` the plugin knows exactly from that copy, and to which it writes only members
        that win against it: while the stamp still holds ``seen``, their members are written
        without comparing each held ``ts`` again (the comparison costs more than the write);
        otherwise they are compared as usual.
        """
        _name("stamp", key)
        covered = frozenset(covers)
        for name in covered:
            _name("stamp covers", name)
        for name, value in (("seen", seen), ("mine", mine)):
            if type(value) is not str:
                raise TypeError(f"stamp {key!r}: `{name}` must be a str, got {type(value).__name__}")
        if not mine or mine.startswith("!"):
            raise ValueError(f"stamp {key!r}: `mine` must be non-empty and not start with '!'")
        self.stamps[key] = (seen, mine, covered)

    def hset(self, key: str, fields: Mapping[str, str]) -> None:
        """Merge ``fields`` into state hash ``P:state:<key>``, the last write per field winning."""
        _name("hset", key)
        self.hashes.setdefault(key, {}).update(_checked(f"hset {key!r}", fields))

    def index(self, key: str, members: Mapping[str, int]) -> None:
        """Add ``members`` to sorted set ``P:state:<key>`` with their scores, keeping the score
        of a member already there (``ZADD NX``): an index written again on a redelivery keeps
        when the member was first indexed. For time windows and for pruning what a plugin keeps
        per id (score: epoch ms); the plugin owns the set's size."""
        _name("index", key)
        held = self.indexes.setdefault(key, {})
        for member, score in members.items():
            if type(member) is not str or not member:
                raise ValueError(f"index {key!r}: invalid member {member!r}")
            if type(score) is not int:
                raise TypeError(f"index {key!r}: score of {member!r} must be an int, got {type(score).__name__}")
            held.setdefault(member, score)

    def merge(self, other: Outputs) -> None:
        """Fold another (already checked) buffer into this one, keeping the coalescing rules.

        ``other`` is spent: its hashes of members may be taken over rather than copied.
        """
        for stream, entries in other.streams.items():
            self.streams.setdefault(stream, []).extend(entries)
        for entry in other.streams_once:
            self._add_once_entry(entry)
        self.streams_first.extend(other.streams_first)
        for key, (ts, fields) in other.latest.items():
            self._put_latest(key, ts, fields)
        ours, theirs = set(self.fields), set(other.fields)
        for key, members in other.fields.items():
            mine = self.fields.get(key)
            if mine is None:  # the usual case: one plugin writes a hash
                self.fields[key] = members
                continue
            for name, value in members.items():
                _put_member(mine, name, value)
        for key, fields in other.hashes.items():
            self.hashes.setdefault(key, {}).update(fields)
        for key, scores in other.indexes.items():
            index = self.indexes.setdefault(key, {})
            for member, score in scores.items():
                index.setdefault(member, score)
        # A stamp vouches only for its own plugin's members: a hash another buffer also writes
        # is compared member by member again.
        self.stamps = {key: (seen, mine, covers - theirs) for key, (seen, mine, covers) in self.stamps.items()}
        self.stamps.update({key: (seen, mine, covers - ours) for key, (seen, mine, covers) in other.stamps.items()})
        for alert in other.alerts:
            self._add_alert(alert)

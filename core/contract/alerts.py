"""Alerts (entries of ``P:alerts``), and the once-markers that write an entry or an alert at
most once per version and period across consumers."""

from __future__ import annotations

from typing import Literal

import msgspec

from navstream.contract.keys import escape_chars

Severity = Literal["info", "warning", "critical"]
SEVERITIES = ("info", "warning", "critical")

#: Longest period of a once-entry: ten years, well inside what ``SET ... PX`` accepts.
MAX_EVERY_S = 10 * 365 * 86_400


class Once(msgspec.Struct, frozen=True):
    """Write an entry unless one with the same ``key`` and ``version`` was written less than
    ``ttl_ms`` ago by the consumers' clock (the marker is ``P:state:once:<key>``, holding
    ``"<until ms> <version>"``)."""

    key: str
    version: str
    ttl_ms: int
    #: False for an alert raised without a version (one version only, "1"): a consumer may
    #: then skip sending it again within a period it knows the marker runs (see Writer).
    versioned: bool = True


def once_spec(
    what: str, prefix: str, subject: object, version: object, every_s: object, versioned: bool = True
) -> Once:
    """The :class:`Once` of ``subject`` under marker key ``prefix`` (checked: ``what`` names the
    call in errors)."""
    # type() refuses bool and other subclasses; isinstance() tells the type checker what is left
    if type(every_s) not in (int, float) or not isinstance(every_s, (int, float)) or not 0 < every_s <= MAX_EVERY_S:
        raise ValueError(f"{what}: every_s must be > 0 and <= {MAX_EVERY_S} s, got {every_s!r}")
    subject_text, version_text = _text(what, "subject", subject), _text(what, "version", version)
    ttl_ms = max(1, int(every_s * 1000))
    return Once(f"{prefix}:{marker_part(subject_text)}", version_text, ttl_ms, versioned)


def _text(what: str, name: str, value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"{what}: `{name}` must be a str, got {type(value).__name__}")
    return value


def marker_part(part: str) -> str:
    """A marker key part that cannot run into the next (``:`` and ``%`` escaped)."""
    return escape_chars(part, ":")


def alert_marker_prefix(code: str) -> str:
    """The marker key prefix of alerts with ``code``."""
    return f"alert:{marker_part(code)}"


def default_subject(venue: str | None, account: str | None, asset: str | None, source: str | None) -> str:
    """An alert's subject when it names none: ``venue/account/asset/source`` (``/`` and ``%``
    escaped in each)."""
    return "/".join(escape_chars(v or "", "/") for v in (venue, account, asset, source))


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
    #: De-duplication (not part of the entry), see :meth:`Outputs.alert`.
    once: Once | None = None

    def fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in msgspec.structs.asdict(self).items() if v is not None and k != "once"}

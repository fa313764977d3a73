"""What the built-in sources share: URLs, deadlines, exact JSON, venue clocks, Binance errors.

Kept small on purpose: each source module reads top to bottom on its own, and only what would
otherwise be written three times (and drift) lives here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from navstream import SourceContext, SourceError, SourceSettings, numbers, redact
from navstream import check_response as check
from navstream import response_excerpt as excerpt

#: A venue's clock more than this ahead of ours is reported, and its time is not used as ``ts``:
#: consumers dead-letter events from the future, and a ``ts`` from a fast clock would make a
#: value look fresher than it is.
SKEW_TOLERANCE_MS = 5_000

#: Numbers straight to ``Decimal`` (``float_hook``): a price never passes through a binary
#: float, which would turn 0.000012345678901234 into 0.000012345678901233999...
_EXACT_JSON = msgspec.json.Decoder(float_hook=Decimal)


def valid_base_url(value: str, setting: str = "base_url") -> str:
    """``value`` without a trailing slash; ValueError naming the setting if it is no http(s) URL
    (every source has one, so tests and testnets can point elsewhere)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"`{setting}` must be an http(s) URL without query, got {value!r}")
    if "@" in parts.netloc:  # it would be the host's name in every reason, log line and metric
        raise ValueError(
            f"`{setting}` must not carry a user or password (a source reads its credentials from "
            "environment variables), got a URL with '@' in its host part"
        )
    return value.rstrip("/")


def deadline(ctx: SourceContext, settings: SourceSettings) -> float:
    """When this fetch must be done, on the HTTP pool's clock: its limiter and request timeouts
    count on that clock (which a test may replace), so the deadline must too."""
    return float(ctx.http.clock()) + settings.timeout_s


def decode_json(response: httpx.Response, what: str) -> Any:
    """The body as JSON with every number exact (``Decimal`` or ``int``), or a SourceError that
    says the answer was malformed and quotes its start."""
    try:
        return _EXACT_JSON.decode(response.content)
    except msgspec.DecodeError as exc:
        raise SourceError(
            f"{what}: malformed JSON in the answer ({exc}): {excerpt(response) or '(empty body)'}"
        ) from None


def exact(value: Any) -> Decimal | None:
    """A ``Decimal`` from a JSON string or number (Binance sends amounts as strings, CoinGecko as
    numbers) that keeps the wire's number grammar and bounds (``navstream.contract.numbers``: a string
    like ``"0.00100000"``, a number within 10^30 and 30 places), or None for anything else: a
    value we cannot read exactly, or could not publish, is not a value, and never becomes 0."""
    try:
        return numbers.from_json(value)
    except numbers.NumberError:
        return None


def quoted(value: Any) -> str:
    """A venue's value as a problem quotes it: short, one line, and, if it looks like a number
    but is none we accept, why (``'１２', which is not a decimal number: non-ASCII ...``)."""
    text = redact(str(value) if isinstance(value, Decimal) else repr(value))  # before the cut
    if len(text) > 60:
        text = f"{text[:40]}... ({len(text)} characters)"
    if isinstance(value, (str, int, Decimal)) and not isinstance(value, bool):
        try:
            numbers.from_json(value)
        except numbers.NumberError as exc:
            return f"{text}, which is {exc.refusal}"
    return text


def epoch_ms(value: Any) -> int | None:
    """A positive integer timestamp from JSON (not a bool, not a float), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def skewed(venue_ms: int, arrival_ms: int) -> bool:
    """True when the venue's clock reads further ahead of ours than :data:`SKEW_TOLERANCE_MS`."""
    return venue_ms - arrival_ms > SKEW_TOLERANCE_MS


def skew_problem(venue: str) -> str:
    """The problem text of a venue clock ahead of ours. Without the number of seconds on
    purpose: the ingest process alerts each distinct text once per period, and a figure that
    changes every round would make a lasting skew alert every round."""
    return (
        f"{venue}'s clock reads more than {SKEW_TOLERANCE_MS // 1000}s ahead of ours (check this host's "
        "clock, e.g. NTP); stamped with the arrival time instead"
    )


def binance_error(response: httpx.Response) -> tuple[int, str] | None:
    """Binance's ``{"code": -1121, "msg": "Invalid symbol."}`` error body, if that is what came."""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return None
    if isinstance(body, dict) and isinstance(body.get("code"), int) and isinstance(body.get("msg"), str):
        return body["code"], body["msg"]
    return None


def check_binance(response: httpx.Response, what: str) -> None:
    """Nothing on success; else a SourceError quoting Binance's own code and message (they say
    exactly what is wrong: an unknown symbol, a bad signature, a timestamp out of window)."""
    if response.is_success:
        return
    error = binance_error(response)
    if error is None:
        check(response, what)
    else:
        raise SourceError(redact(f"HTTP {response.status_code} on {what}: Binance error {error[0]}: {error[1]}"))


class BaseSource:
    """The :class:`~navstream.sources.Source` attributes, typed as the protocol declares them."""

    name: str
    venue: str
    account: str | None
    settings: SourceSettings

    def __init__(
        self, name: str, settings: SourceSettings, ctx: SourceContext, venue: str, account: str | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        self.venue = venue
        self.account = account

    async def aclose(self) -> None:
        """Nothing to release: the HTTP pool is the host's."""

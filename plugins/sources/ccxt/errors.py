"""CCXT's exceptions as a ``source_status`` reason a person can act on, with no secret in it.

CCXT's messages quote the request URL (with a signed query on some venues) and whatever the
venue's body said. The reason is built from the exception's class and the venue's own code and
message only: never the URL, never a header; and it goes through ``redact`` (which masks every
credential read through ``ctx.secret``) in case the venue's message echoes one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from navstream import SourceError, clip, redact

from .settings import ccxt_module

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
#: Keys venues put their error code and message under (OKX, Bybit, Kraken, Binance, ...).
_CODE_KEYS = ("code", "retCode", "error_code", "errorCode")
_MESSAGE_KEYS = ("msg", "retMsg", "message", "error", "error_message", "errorMessage")


def venue_said(message: str) -> str:
    """The venue's code and message from a CCXT exception's text (``50111: Invalid OK-ACCESS-KEY``),
    or the text without URLs and without the exchange id that starts it."""
    start = message.find("{")
    if start >= 0:
        try:
            body = json.loads(message[start:])
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = next((body[k] for k in _CODE_KEYS if body.get(k) not in (None, "")), None)
            said = next((body[k] for k in _MESSAGE_KEYS if body.get(k) not in (None, "", [])), None)
            if isinstance(said, list):
                said = ", ".join(str(s) for s in said)
            parts = [str(p) for p in (code, said) if p is not None]
            if parts:
                return ": ".join(parts)
    text = _URL.sub("", message)
    head, _, rest = text.partition(" ")
    return " ".join((rest if head.isalnum() and rest else text).split())


def summary(exc: BaseException) -> str:
    """What the class of ``exc`` means for the desk, in a few words."""
    errors = ccxt_module()
    said = str(exc).lower()
    if isinstance(exc, errors.PermissionDenied) or (
        isinstance(exc, errors.ExchangeError) and "permission" in said and not isinstance(exc, errors.BadRequest)
    ):
        return "the key lacks a permission"  # OKX says so with a plain ExchangeError (50120)
    if isinstance(exc, errors.AccountSuspended):
        return "the account is suspended"
    if isinstance(exc, errors.AuthenticationError):
        return "credentials rejected"
    if isinstance(exc, errors.BadSymbol):
        return "a symbol the venue does not list"
    if isinstance(exc, (errors.RateLimitExceeded, errors.DDoSProtection)):
        return "rate limited"
    if isinstance(exc, errors.OnMaintenance):
        return "venue unavailable (maintenance)"
    if isinstance(exc, errors.ExchangeNotAvailable):
        return "venue unavailable"
    if isinstance(exc, errors.RequestTimeout):
        return "timed out"
    if isinstance(exc, errors.InvalidNonce):
        return "the venue refused the request's nonce or timestamp (check this host's clock)"
    if isinstance(exc, errors.NetworkError):
        return "network error"
    return "the venue refused the request"


def source_error(exc: BaseException, what: str) -> SourceError:
    """``exc`` (a CCXT exception) as a SourceError: ``<what>: <summary> (<Class>: <venue said>)``."""
    said = venue_said(str(exc))
    detail = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
    return SourceError(redact(f"{what}: {summary(exc)} ({clip(detail, 200)})"))


def is_ccxt_error(exc: BaseException) -> bool:
    base: Any = ccxt_module().BaseError
    return isinstance(exc, base)

"""JSON-lines logging that never stalls the loop, never repeats itself endlessly, never leaks.

Records go from the loop onto an in-memory queue (``QueueHandler``: an append, no I/O); one
background thread formats and writes them, to stdout or stderr, or to an append-only file that
the same thread rotates by size and compresses (``.1.gz`` newest), so neither a slow pipe nor a
rotation ever blocks a batch. Each line is one JSON object: ``ts`` (epoch seconds), ``time`` (ISO
8601, UTC, ms), ``level``, ``logger``, ``msg`` and the record's ``extra`` fields, of which
``event`` is the stable name to alert on (docs/operations.md lists them). Counts, durations and
sizes are JSON numbers; money (``Decimal``) is its exact text, never a float.

Two filters run on the loop's side, cheaply: the same warning or error (logger, event, message)
repeated within ``REPEAT_WINDOW_S`` is dropped and counted, and the next one that gets through
says how many were suppressed (``repeated``); and every string value is scrubbed of secrets (a
password in a Redis URL, ``signature=`` or ``api_key=`` in a query string, and any credential
value registered with :func:`register_secret`, wherever it appears) before it is queued.
"""

from __future__ import annotations

import atexit
import copy
import gzip
import json
import logging
import logging.handlers
import math
import os
import queue
import re
import shutil
import sys
import time
from decimal import Decimal
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

#: Identical warnings and errors within this many seconds are counted, not written.
REPEAT_WINDOW_S = 60.0
#: Distinct (logger, event, message) keys remembered by the repeat filter.
REPEAT_KEYS = 10_000
#: Rotate a log file at this size, keeping this many compressed copies.
MAX_BYTES = 64 << 20
BACKUPS = 10

# A password in a URL's userinfo (PW in redis://user:***@host, rediss://:***@host, https://u:***@h).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE)
_SECRET_PARAM = re.compile(
    r"((?:signature|api[_-]?key|apikey|secret|token|password|x_cg_[a-z]+_api_key)=)[^&\s\"':,;]+", re.IGNORECASE
)


#: Known credential values (and their URL-encoded forms), longest first: masked wherever they
#: appear, whatever the text around them (an error body echoing a key, a header, a URL's path).
_known_secrets: tuple[str, ...] = ()
#: Values shorter than this are not registered: masking a 3-letter word everywhere would garble
#: logs, and no credential worth the name is that short.
MIN_SECRET_LEN = 8


def register_secret(value: str) -> None:
    """Mask ``value`` in everything :func:`redact` sees from now on: in log records (message,
    ``extra`` fields, tracebacks) and in every text the sources derive from an answer (their
    errors, ``source_status.error``, problems). Called for each credential read from the
    environment, at startup (``SourceContext.secret``). Values under :data:`MIN_SECRET_LEN`
    characters are ignored."""
    global _known_secrets
    if not isinstance(value, str) or len(value) < MIN_SECRET_LEN:
        return
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]}
    _known_secrets = tuple(sorted(set(_known_secrets) | forms, key=lambda v: (-len(v), v)))


def forget_secrets() -> None:
    """Drop every registered value (tests)."""
    global _known_secrets
    _known_secrets = ()


def redact(text: str) -> str:
    """``text`` with registered credential values, URL passwords and secret query parameters
    masked (``***``)."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    if "=" not in text and "@" not in text:
        return text
    return _SECRET_PARAM.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def clip(text: str, limit: int) -> str:
    """``text`` redacted, then cut to ``limit`` characters (with ``...``): in that order, so a
    cut never leaves the start of a secret that the redaction would no longer recognise."""
    text = redact(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(v) for v in value]
    return value


#: The extra values :class:`RedactFilter` scrubs (others are redacted as text when formatted).
_SCRUBBED = (str, dict, list, tuple, set, frozenset)


class RedactFilter(logging.Filter):
    """Scrubs the message and every extra field before the record leaves the loop's thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        for key, value in list(record.__dict__.items()):
            if key not in _STD_ATTRS and not key.startswith("_") and isinstance(value, _SCRUBBED):
                record.__dict__[key] = _scrub(value)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class RepeatFilter(logging.Filter):
    """Lets the first of identical warnings/errors through per window; counts the rest."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(getattr(record, "event", "")), record.getMessage())
        now = time.monotonic()
        held = self._seen.get(key)
        if held is not None and now - held[0] < self.window_s:
            self._seen[key] = (held[0], held[1] + 1)
            self.suppressed += 1
            return False
        if held is not None and held[1]:
            record.repeated = held[1]  # suppressed since the last one written
        if len(self._seen) >= REPEAT_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return True


def iso_time(epoch_ms: int) -> str:
    """``epoch_ms`` as ISO 8601 in UTC with milliseconds: ``2026-12-06T17:32:48.123Z``."""
    seconds, ms = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


#: Ints up to this size are written as decimal JSON numbers (well under 4,300 digits).
_MAX_DECIMAL_INT_BITS = 13_000
#: Decimals whose exponent is within this many places of 1 are written in plain digits.
_MAX_PLAIN_EXPONENT = 100


def _jsonable(value: Any) -> Any:
    """``value`` as a JSON type that says what it is: numbers stay numbers (an ``int`` of any
    size, exactly), ``bool`` stays ``bool``, and a ``Decimal`` (money) becomes its exact text,
    never a float. A non-finite float becomes its text (``"nan"``, ``"inf"``, ``"-inf"``), since
    JSON has no such number and a line with ``NaN`` would not parse. Anything else is its ``str``,
    redacted (:class:`RedactFilter` scrubs only the strings and containers it sees)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        # Past Python's limit on decimal digits (sys.get_int_max_str_digits) str() refuses; hex does not.
        return value if value.bit_length() <= _MAX_DECIMAL_INT_BITS else hex(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        # Plain digits as navstream writes amounts ("0.00000001", not str()'s "1E-8"), unless the
        # exponent is absurd: then str()'s short, equally exact form, never a megabyte of zeros.
        plain = value.is_finite() and abs(value.adjusted()) <= _MAX_PLAIN_EXPONENT
        return format(value, "f") if plain else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=str)
    return redact(str(value))


#: The fields every line has; an ``extra`` field of the same name is written as ``extra_<name>``
#: instead of replacing it (a record's own ``ts`` must never pass for the line's).
BASE_FIELDS = ("ts", "time", "level", "logger", "msg", "exc")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (epoch seconds, ms precision), ``time`` (the same instant
    in ISO 8601, UTC), ``level``, ``logger``, ``msg``, and every ``extra`` field, as JSON types
    (see :func:`_jsonable`)."""

    def format(self, record: logging.LogRecord) -> str:
        ms = round(record.created * 1000)
        data: dict[str, Any] = {
            "ts": ms / 1000,
            "time": iso_time(ms),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                data[f"extra_{key}" if key in BASE_FIELDS else key] = _jsonable(value)
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, allow_nan=False)


def _gzip_rotator(source: str, dest: str) -> None:
    """Compress the closed file into ``dest`` (in the writer thread), then remove it."""
    with open(source, "rb") as src, gzip.open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
    os.remove(source)


def file_handler(path: str, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> logging.Handler:
    """An append-only file rotated at ``max_bytes`` into ``path.1.gz`` ... ``path.<backups>.gz``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, mode="a", maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=False
    )
    handler.namer = lambda name: name + ".gz"
    handler.rotator = _gzip_rotator
    return handler


class _QueueHandler(logging.handlers.QueueHandler):
    """Queues a copy with the message merged and the traceback as text (already scrubbed by
    :class:`RedactFilter`), so the writer thread formats the line as the loop saw it."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        message = record.getMessage()
        record = copy.copy(record)
        record.msg = record.message = message
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
        record.stack_info = None
        return record


_listener: logging.handlers.QueueListener | None = None


def setup_logging(
    level: str = "INFO",
    stream: TextIO | None = None,
    *,
    file: str | None = None,
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
    repeat_window_s: float = REPEAT_WINDOW_S,
) -> None:
    """Route the ``navstream`` loggers through a queue to ``file`` or ``stream`` (default stderr;
    the CLI passes stdout for ``run`` and ``ingest``) as JSON lines, with repeats suppressed and
    secrets scrubbed.

    :raises OSError: the log file cannot be opened (the caller says so and exits).
    """
    global _listener
    if _listener is not None:
        _listener.stop()
    handler = file_handler(file, max_bytes, backups) if file else logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    into_queue = _QueueHandler(q)
    into_queue.addFilter(RepeatFilter(repeat_window_s))
    into_queue.addFilter(RedactFilter())
    root = logging.getLogger("navstream")
    root.handlers[:] = [into_queue]
    root.setLevel(level.upper())
    root.propagate = False
    _listener = logging.handlers.QueueListener(q, handler)
    _listener.start()
    atexit.register(stop_logging)


def stop_logging() -> None:
    """Flush and stop the background writer."""
    global _listener
    if _listener is not None:
        _listener.stop()
        for handler in _listener.handlers:
            handler.close()
        _listener = None

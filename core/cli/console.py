"""What a person sees beside a command's answer: one line for whatever the command raised (the
traceback too with ``--debug`` or ``NAVSTREAM_DEBUG=1``), and a one-shot command's warnings as
short human lines on stderr instead of JSON log records.

A traceback is for whoever fixes navstream, not for the operator in an incident: every exception
ends as ``navstream: error: ...`` with the exit code of :mod:`navstream.cli.errors`. One that
navstream does not expect (a bug) says its type and that ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Mapping

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from navstream.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from navstream.config import ConfigError
from navstream.logs import RedactFilter, RepeatFilter, clip, redact
from navstream.loop.errors import StartupError
from navstream.ops.admin import AdminError, InvalidIdError
from navstream.ops.publish import PublishError
from navstream.plugin.manager import PluginError
from navstream.render import clean

DEBUG_ENV = "NAVSTREAM_DEBUG"
#: An unexpected exception's message is cut here: it is a hint, the traceback has the rest.
MAX_UNEXPECTED = 500


def debug_from_env(env: Mapping[str, str] = os.environ) -> bool:
    """``NAVSTREAM_DEBUG`` set to anything but empty or ``0``."""
    return env.get(DEBUG_ENV, "").strip() not in ("", "0")


def one_line(text: str) -> str:
    """``text`` as one line a terminal shows as written: line breaks become spaces, other
    control characters (an escape sequence in a file name, say) their ``\\xNN`` form."""
    return clean(" ".join(part.strip() for part in text.strip().splitlines() if part.strip()))


def describe(exc: BaseException) -> tuple[str, int, list[str]]:
    """The error line, exit code and detail lines (a list of refused entries) for ``exc``."""
    if isinstance(exc, CliError):
        return str(exc), exc.code, []
    if isinstance(exc, PublishError):
        if len(exc.problems) == 1:
            return f"nothing published: {exc.problems[0]}", EXIT_USAGE, []
        return f"nothing published: {len(exc.problems)} problems:", EXIT_USAGE, exc.problems
    if isinstance(exc, (ConfigError, PluginError, InvalidIdError)):
        return str(exc), EXIT_USAGE, []
    if isinstance(exc, (AdminError, StartupError)):
        return str(exc), EXIT_FAILED, []
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return f"Redis is unreachable: {exc}", EXIT_UNREACHABLE, []
    if isinstance(exc, RedisError):
        return f"Redis refused the operation: {exc}", EXIT_FAILED, []
    if isinstance(exc, OSError):  # the machine refused (disk full, permissions): not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", EXIT_FAILED, []
    text = clip(str(exc), MAX_UNEXPECTED)
    return (
        f"unexpected {type(exc).__name__}{': ' + text if text else ''} (a bug in navstream or a "
        "plugin; `navstream --debug ...` or NAVSTREAM_DEBUG=1 shows the traceback)",
        EXIT_FAILED,
        [],
    )


def report(exc: BaseException, *, debug: bool) -> int:
    """Say what ``exc`` means on stderr, in one line (and its detail lines); its exit code."""
    message, code, details = describe(exc)
    if debug:
        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
    lines = [f"navstream: error: {one_line(redact(message))}"]
    lines += [f"  {one_line(redact(detail))}" for detail in details]
    _say(lines)
    return code


def interrupted(exc: BaseException, *, debug: bool) -> int:
    """Ctrl-C outside ``run`` (which stops gracefully on SIGINT): one line, exit 130."""
    if debug:
        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
    _say(["navstream: interrupted"])
    return EXIT_INTERRUPTED


def _say(lines: list[str]) -> None:
    try:
        sys.stderr.write("".join(f"{line}\n" for line in lines))
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr is gone or closed: the exit code still tells
        pass


# --- a one-shot command's logs ----------------------------------------------------------------


class _HumanHandler(logging.Handler):
    """``navstream: warning: <message>``, one line on the stderr of the moment (so a test's
    captured stderr, too), written at once: a one-shot command is not a hot loop."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"navstream: {record.levelname.lower()}: {one_line(record.getMessage())}\n"
            if self.debug and record.exc_text:
                line += record.exc_text + "\n"
            sys.stderr.write(line)
        except (OSError, ValueError):
            pass


def _not_an_alert(record: logging.LogRecord) -> bool:
    # An alert a one-shot command raises (`risk halt`'s trading_state_set) is in P:alerts and
    # `navstream status`; the command's answer already says what it did.
    return record.name != "navstream.alerts"


def human_logging(level: str, *, debug: bool) -> None:
    """Route the ``navstream`` loggers of a one-shot command to short human lines on stderr:
    ``level`` and above, secrets scrubbed, repeats folded, no JSON and no alert echoes."""
    from navstream.logs import stop_logging

    stop_logging()  # a JSON writer a previous command in this process started
    handler = _HumanHandler(debug)
    handler.addFilter(RepeatFilter())
    handler.addFilter(RedactFilter())
    handler.addFilter(_not_an_alert)
    root = logging.getLogger("navstream")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False

"""JSON-lines logging through a queue, so a slow terminal or pipe never stalls the loop."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from typing import Any, TextIO

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


_listener: logging.handlers.QueueListener | None = None


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route the ``navstream`` loggers through a queue to ``stream`` (stderr) as JSON lines."""
    global _listener
    if _listener is not None:
        _listener.stop()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger("navstream")
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
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
        _listener = None

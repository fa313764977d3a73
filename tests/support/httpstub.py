"""A real HTTP server for source tests: canned answers per path, every request recorded.

Sources are tested against a socket, not a mock transport, so what is tested is what runs:
httpx's pooling, timeouts, URL encoding and headers. ``ThreadingHTTPServer`` on 127.0.0.1,
port 0, in a background thread; each path has a queue of :class:`Canned` answers, taken in
order (the last one repeats when ``repeat`` is set), and a path with nothing queued answers
404 with a body saying so, which a test then sees in the source's error.

Use it as a context manager (``with HttpStub() as stub``) or through a pytest fixture that
does; ``stub.url`` is the base URL to put in a source's ``base_url``.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Canned:
    """One answer: ``json`` (encoded) or ``body`` (sent as is), after ``delay_s``."""

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    def payload(self) -> bytes:
        if self.body is not None:
            return self.body.encode() if isinstance(self.body, str) else self.body
        return b"" if self.json is None else json.dumps(self.json).encode()


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    #: The query string exactly as sent (what a signature covers).
    raw_query: str
    query: dict[str, list[str]]
    #: Header names in lower case.
    headers: dict[str, str]

    def param(self, name: str) -> str:
        """The single value of query parameter ``name``."""
        (value,) = self.query[name]
        return value


class HttpStub:
    def __init__(self) -> None:
        self._routes: dict[str, deque[Canned]] = {}
        self._repeat: dict[str, Canned] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[Recorded] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the venues serve it

            def do_GET(self) -> None:
                stub._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (a timeout test) closes its socket: not a test failure

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="httpstub", daemon=True
        )

    # --- programming it ----------------------------------------------------------------------

    def add(self, path: str, *answers: Canned) -> None:
        """Queue ``answers`` for ``path``, served in order, each once."""
        with self._lock:
            self._routes.setdefault(path, deque()).extend(answers)

    def always(self, path: str, answer: Canned) -> None:
        """Serve ``answer`` for ``path`` whenever its queue is empty."""
        with self._lock:
            self._repeat[path] = answer

    def to(self, path: str) -> list[Recorded]:
        """The requests made to ``path`` so far."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # --- serving -----------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        record = Recorded(
            handler.command,
            parts.path,
            parts.query,
            parse_qs(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in handler.headers.items()},
        )
        with self._lock:
            self.requests.append(record)
            queue = self._routes.get(parts.path)
            answer = queue.popleft() if queue else self._repeat.get(parts.path)
        if answer is None:
            answer = Canned(404, body=f"httpstub: nothing queued for {parts.path}")
        if answer.delay_s and self._closing.wait(answer.delay_s):
            return  # the stub is closing: drop the answer
        payload = answer.payload()
        handler.send_response(answer.status)
        headers = {"Content-Type": "application/json", **answer.headers, "Content-Length": str(len(payload))}
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def __enter__(self) -> HttpStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

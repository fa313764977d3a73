"""A real HTTP server for source tests: canned answers per route, every request recorded.

Sources are tested against a socket, not a mock transport, so what is tested is what runs:
httpx's pooling, timeouts, URL encoding, headers and request bodies. ``ThreadingHTTPServer`` on
127.0.0.1, port 0, in a background thread, serving GET, POST, PUT and DELETE alike.

A route is a path (``"/api/v5/account/balance"``), or a path and a query subset
(``"/api/v5/public/instruments?instType=SPOT"``: matches a request to that path whose query has
those parameters with those values, other parameters ignored). A request is answered by the
most specific matching route that has an answer (the one with the most query parameters; a
tie goes to the route programmed first), falling back to the path's query-less route. Each
route has a queue of answers, taken in order (:meth:`HttpStub.add`), and an answer served
whenever its queue is empty (:meth:`HttpStub.always`). An answer is a :class:`Canned`, or a
function of the :class:`Recorded` request returning one (for answers that depend on a cursor,
a body or a nonce). A request no route answers gets a 404 with a body saying so, which a test
then sees in the source's error; a function that raises answers 500 with the exception.

Use it as a context manager (``with HttpStub() as stub``) or through a pytest fixture that
does; ``stub.url`` is the base URL to put in a source's ``base_url``.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias
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
    #: The request body exactly as sent (what a signature covers); empty without one.
    body: bytes = b""

    def param(self, name: str) -> str:
        """The single value of query parameter ``name``."""
        (value,) = self.query[name]
        return value

    @property
    def text(self) -> str:
        """The body as text (UTF-8)."""
        return self.body.decode()

    @property
    def form(self) -> dict[str, list[str]]:
        """The body read as an ``application/x-www-form-urlencoded`` form."""
        return parse_qs(self.text, keep_blank_values=True)

    def json(self) -> Any:
        """The body read as JSON."""
        return json.loads(self.body)


#: What a route serves: a canned answer, or one made from the request.
Answer: TypeAlias = Canned | Callable[[Recorded], Canned]


def _split(route: str) -> tuple[str, dict[str, list[str]]]:
    """A route's path and query subset."""
    path, _, query = route.partition("?")
    return path, parse_qs(query, keep_blank_values=True)


def _matches(subset: dict[str, list[str]], query: dict[str, list[str]]) -> bool:
    return all(query.get(name) == values for name, values in subset.items())


class HttpStub:
    def __init__(self) -> None:
        self._routes: dict[str, deque[Answer]] = {}
        self._repeat: dict[str, Answer] = {}
        #: Per path, its routes' keys in the order first programmed.
        self._keys: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[Recorded] = []
        #: What route functions raised (each also answered 500), for a test to assert is empty.
        self.errors: list[Exception] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the venues serve it

            def do_GET(self) -> None:
                stub._serve(self)

            do_POST = do_PUT = do_DELETE = do_GET

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

    def add(self, route: str, *answers: Answer) -> None:
        """Queue ``answers`` for ``route`` (a path, or ``path?query-subset``), served in order,
        each once."""
        with self._lock:
            self._known(route)
            self._routes.setdefault(route, deque()).extend(answers)

    def always(self, route: str, answer: Answer) -> None:
        """Serve ``answer`` for ``route`` whenever its queue is empty."""
        with self._lock:
            self._known(route)
            self._repeat[route] = answer

    def to(self, route: str) -> list[Recorded]:
        """The requests made so far that ``route`` (a path, or ``path?query-subset``) matches."""
        path, subset = _split(route)
        with self._lock:
            return [r for r in self.requests if r.path == path and _matches(subset, r.query)]

    def _known(self, route: str) -> None:
        keys = self._keys.setdefault(_split(route)[0], [])
        if route not in keys:
            keys.append(route)

    def _answer(self, record: Recorded) -> Answer | None:
        """The answer of the most specific route matching ``record`` that has one (under the lock)."""
        keys = [k for k in self._keys.get(record.path, []) if _matches(_split(k)[1], record.query)]
        for key in sorted(keys, key=lambda k: -len(_split(k)[1])):  # stable: ties keep their order
            queue = self._routes.get(key)
            answer = queue.popleft() if queue else self._repeat.get(key)
            if answer is not None:
                return answer
        return None

    # --- serving -----------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        record = Recorded(
            handler.command,
            parts.path,
            parts.query,
            parse_qs(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in handler.headers.items()},
            handler.rfile.read(length) if length else b"",  # read it all: the connection is kept alive
        )
        with self._lock:
            self.requests.append(record)
            found = self._answer(record)
        if found is None:
            answer = Canned(404, body=f"httpstub: nothing queued for {handler.command} {handler.path}")
        elif isinstance(found, Canned):
            answer = found
        else:
            try:
                answer = found(record)
            except Exception as exc:  # noqa: BLE001 - the test's own function failed: answer, and keep it
                with self._lock:
                    self.errors.append(exc)
                answer = Canned(500, body=f"httpstub: the route's function raised {type(exc).__name__}: {exc}")
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

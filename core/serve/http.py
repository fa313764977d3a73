"""A small HTTP/1.1 server on asyncio streams and h11, for probes, metrics and the status page.

Why not a framework: the consumer and the ingest process need a few read-only routes, served
from their own event loop without ever blocking it, and nothing else. The parsing is h11's (a
well-kept, sans-I/O HTTP/1.1 implementation, installed with httpx); what a request may be and
the head of every answer are in :mod:`navstream.serve.messages`; this module adds the
connection handling, which is where a probe endpoint lives or dies:

- every request must arrive whole within ``request_timeout_s`` of the moment the server starts
  waiting for it (a client trickling a byte at a time is answered 408 and closed at that
  deadline; an idle connection, new or kept alive, is closed quietly);
- the request head (line and headers) is at most :data:`MAX_HEAD` bytes and
  :data:`MAX_HEADERS` headers (431); HTTP/1.0 and 1.1 only (505); ``GET`` and ``HEAD`` only
  (405, with ``Allow``); no request bodies (400); exact paths from the route table (404): nothing
  is ever read from the filesystem, so there is no directory to traverse; query strings are
  ignored;
- every error answer closes the connection; well-behaved clients keep theirs alive
  (``max_requests_per_connection`` requests at most);
- at most ``max_connections`` connections at once, and a new one is never refused for slow or
  idle clients: at the cap, the connection that has waited longest for its request (or for a
  slow reader to take its answer) is closed to make room. Only when every connection is inside
  a route handler does a new one get 503, and handlers end within ``handler_timeout_s``;
- a route that fails answers 500 (logged), one that takes longer than ``handler_timeout_s``
  answers 503.

There is no global "busy" limit a slow client can fill: a probe never waits behind others.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import h11

from navstream.serve.messages import (
    ALLOWED_METHODS,
    MAX_HEAD,
    MAX_HEADERS,
    READ_CHUNK,
    REASONS,
    BadRequest,
    Handler,
    Request,
    Response,
    diagnose,
    head_lines,
    plain_answer,
    printable,
    validate,
)

log = logging.getLogger("navstream.http")

__all__ = [
    "ALLOWED_METHODS",
    "MAX_HEAD",
    "MAX_HEADERS",
    "READ_CHUNK",
    "REASONS",
    "BadRequest",
    "Handler",
    "HttpServer",
    "HttpStartError",
    "HttpStats",
    "Request",
    "Response",
    "diagnose",
    "local_url",
    "validate",
]


class HttpStartError(RuntimeError):
    """The server could not listen (port in use, address not available, no permission)."""


class _ClientLeft(Exception):
    """The client closed the connection before sending a whole request: nothing to answer."""


@dataclass(eq=False)
class _Conn:
    """One connection as the cap sees it: what it is doing, since when."""

    task: asyncio.Task[None]
    writer: asyncio.StreamWriter
    state: str = "reading"  # reading (waiting for a request), handling (in a route), writing, closing
    since: float = field(default_factory=time.monotonic)

    def enter(self, state: str) -> None:
        self.state, self.since = state, time.monotonic()


@dataclass
class HttpStats:
    """Counters of one server, for its metrics."""

    connections: int = 0
    requests: int = 0
    #: Connections closed to make room for a new one at the cap.
    evicted: int = 0
    #: Requests not received whole within the read deadline (408).
    timeouts: int = 0
    #: Requests refused as malformed, too large, of an unsupported method or version.
    bad_requests: int = 0
    #: New connections answered 503 because every slot was inside a route handler.
    refused: int = 0


@dataclass
class HttpServer:
    """Serves ``routes`` (exact path -> handler) on ``host``:``port`` (0: a free port, for tests)."""

    routes: Mapping[str, Handler]
    host: str = "127.0.0.1"
    port: int = 0
    max_connections: int = 64
    request_timeout_s: float = 5.0
    handler_timeout_s: float = 10.0
    max_requests_per_connection: int = 100
    #: How the port is chosen, for the error when it cannot be listened on.
    port_setting: str = "[http] port, NAVSTREAM_HTTP_PORT or --http-port"
    stats: HttpStats = field(default_factory=HttpStats)
    _server: asyncio.Server | None = field(default=None, init=False)
    _conns: dict[asyncio.Task[None], _Conn] = field(default_factory=dict, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def start(self) -> None:
        """Listen, or raise :class:`HttpStartError` saying why not."""
        try:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, limit=2 * READ_CHUNK, reuse_address=True
            )
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                why = "the port is already in use (another navstream, or another program, listens there)"
            raise HttpStartError(
                f"cannot serve HTTP on {self.host}:{self.port}: {why}; choose another port with "
                f"{self.port_setting} (0 serves nothing)"
            ) from exc
        log.info("http endpoint listening", extra={"event": "http_listening", "address": self.address})

    @property
    def bound_port(self) -> int:
        """The port actually listened on (differs from ``port`` when that was 0)."""
        if self._server is None or not self._server.sockets:
            return self.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}"

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    async def stop(self) -> None:
        """Stop listening and end every connection (idle, reading or in a handler)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        try:
            await asyncio.wait_for(server.wait_closed(), timeout=2)
        except TimeoutError:
            pass
        log.info("http endpoint stopped", extra={"event": "http_stopped"})

    # --- connections ----------------------------------------------------------------------------

    def _make_room(self) -> bool:
        """At the cap, close the connection that has waited longest outside a route handler
        (an idle or trickling client, or one that does not read its answer); False if every
        connection is inside a handler."""
        candidates = [c for c in self._conns.values() if c.state != "handling"]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: c.since)
        self._conns.pop(victim.task, None)
        self.stats.evicted += 1
        transport = victim.writer.transport
        if transport is not None:
            transport.abort()
        victim.task.cancel()
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            self.stats.connections += 1
            if len(self._conns) >= self.max_connections and not self._make_room():
                self.stats.refused += 1
                await self._answer_and_close(
                    reader, writer, Response.text(503, "busy: every connection is being answered, try again")
                )
                return
            conn = self._conns[task] = _Conn(task, writer)
            await self._serve(reader, writer, conn)
        except asyncio.CancelledError:
            pass  # stopped, or closed to make room: the connection is simply closed
        except (ConnectionError, OSError):
            pass  # the client left
        finally:
            self._conns.pop(task, None)
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        for served in range(self.max_requests_per_connection):
            conn.enter("reading")
            received = [bool(h.trailing_data[0])]
            try:
                request = await asyncio.wait_for(self._read_request(reader, h, received), self.request_timeout_s)
            except TimeoutError:
                if received[0]:  # part of a request came, not all of it in time
                    self.stats.timeouts += 1
                    conn.enter("closing")
                    await self._answer_and_close(
                        reader, writer, Response.text(408, f"request not received within {self.request_timeout_s:g}s")
                    )
                return  # an idle connection (new, or kept alive) is closed quietly
            except _ClientLeft:
                return
            except BadRequest as exc:
                self.stats.bad_requests += 1
                conn.enter("closing")
                await self._answer_and_close(reader, writer, exc.response)
                return
            except h11.RemoteProtocolError:
                return  # the client's side broke mid-exchange: nothing sensible to answer
            self.stats.requests += 1
            conn.enter("handling")
            response = await self._respond(request)
            close = response.status >= 400 or served == self.max_requests_per_connection - 1
            conn.enter("writing")
            if not await self._write(writer, h, request.method, response, close):
                return
            if close or h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                if response.status >= 400:
                    conn.enter("closing")
                    await self._linger(reader, writer)
                return
            h.start_next_cycle()

    async def _read_request(self, reader: asyncio.StreamReader, h: h11.Connection, received: list[bool]) -> Request:
        """The next request on ``h``, whole (head and its empty body).

        ``received[0]`` is set once any byte of it has arrived (for the 408-or-quiet choice).
        """
        fed = len(h.trailing_data[0])
        head = bytearray(h.trailing_data[0][: MAX_HEAD + READ_CHUNK])
        eof = False
        request: Request | None = None
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                if eof and request is None and b"\r\n\r\n" not in head and b"\n\n" not in head:
                    raise _ClientLeft() from None  # it closed halfway through its head
                raise diagnose(bytes(head), exc) from None
            if event is h11.NEED_DATA:
                data = await reader.read(READ_CHUNK)
                if data:
                    received[0] = True
                    fed += len(data)
                    if len(head) < MAX_HEAD + READ_CHUNK:
                        head += data
                else:
                    eof = True
                h.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise _ClientLeft()
            if isinstance(event, h11.Request):
                if fed - len(h.trailing_data[0]) > MAX_HEAD:
                    raise BadRequest(431, f"request head larger than {MAX_HEAD} bytes")
                request = validate(event)
                continue
            if isinstance(event, h11.EndOfMessage) and request is not None:
                return request
            # Data cannot come: a request with a body was refused above.
            raise BadRequest(400, "bad request: requests carry no body here")

    async def _respond(self, request: Request) -> Response:
        handler = self.routes.get(request.path)
        if handler is None:
            known = " ".join(sorted(self.routes))
            return Response.text(404, f"not found: {printable(request.path)}; endpoints: {known}")
        try:
            return await asyncio.wait_for(handler(request), self.handler_timeout_s)
        except TimeoutError:
            log.warning("http handler timed out", extra={"event": "http_timeout", "path": request.path})
            return Response.text(503, f"{request.path} took longer than {self.handler_timeout_s:g}s; try again")
        except Exception:
            log.exception("http handler failed", extra={"event": "http_error", "path": request.path})
            return Response.text(500, f"internal error answering {request.path} (logged)")

    async def _write(
        self, writer: asyncio.StreamWriter, h: h11.Connection, method: str, response: Response, close: bool
    ) -> bool:
        """Send ``response`` through h11 (which adds ``Connection: close`` where HTTP/1.0 or the
        client asks for it); False if the client did not take it within the deadline."""
        headers = head_lines(response.status, response.content_type, len(response.body), response.headers, close)
        data = h.send(
            h11.Response(status_code=response.status, headers=headers, reason=REASONS.get(response.status, "").encode())
        )
        if method != "HEAD" and response.body:
            data += h.send(h11.Data(data=response.body))
        data += h.send(h11.EndOfMessage())
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.request_timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            return False  # the client left or reads too slowly: nothing more to do for it
        return True

    async def _answer_and_close(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: Response
    ) -> None:
        """An error answer outside h11's exchange (the request could not be parsed, or never
        came whole), then the connection ends."""
        try:
            writer.write(plain_answer(response))
            await asyncio.wait_for(writer.drain(), self.request_timeout_s)
            await self._linger(reader, writer)
        except (TimeoutError, ConnectionError, OSError):
            pass

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an error answer, say we are done and drop what the client still sends (64 KiB,
        1 s at most): closing a socket with unread input resets the connection, which can
        destroy the answer before the client has read it."""
        try:
            writer.write_eof()
            dropped = 0
            deadline = time.monotonic() + 1.0
            while dropped < 65_536:
                chunk = await asyncio.wait_for(reader.read(8192), max(0.0, deadline - time.monotonic()))
                if not chunk:
                    return
                dropped += len(chunk)
        except (TimeoutError, ConnectionError, OSError):
            pass


def local_url(host: str, port: int, path: str = "/") -> str:
    """Where a client on the same host (the container health check) reaches a server listening
    on ``host``: the wildcard addresses are reached through loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"

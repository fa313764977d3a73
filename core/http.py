"""A tiny HTTP/1.1 server on asyncio streams, for the consumer's probes, metrics and status page.

Why not a framework: the consumer needs five read-only routes, served from its own event loop
without ever blocking it, and nothing else; a full HTTP stack would be a large dependency for
that. What this server accepts is deliberately narrow, so that odd input gets a clear answer and
changes nothing:

- ``GET`` and ``HEAD`` only (405 otherwise, with ``Allow``); no request bodies (400);
- the request head (line and headers) at most :data:`MAX_HEAD` bytes (431), read within
  ``request_timeout_s`` (408); HTTP/1.0 and 1.1 only (505);
- exact paths from the route table (404 otherwise): nothing is ever read from the filesystem,
  so there is no directory to traverse; query strings are ignored;
- one request per connection (``Connection: close``); at most ``max_connections`` at once,
  further ones get 503 at once;
- a route that fails answers 500 (logged), one that takes longer than ``handler_timeout_s``
  answers 503.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping

log = logging.getLogger("navstream.http")

#: Largest request head (request line and headers) accepted, in bytes.
MAX_HEAD = 8192
MAX_HEADERS = 100
ALLOWED_METHODS = ("GET", "HEAD")

REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpStartError(RuntimeError):
    """The server could not listen (port in use, address not available, no permission)."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, (text.rstrip("\n") + "\n").encode())


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.response = Response(status, (message + "\n").encode(), headers=headers)


def _printable(text: str, limit: int = 80) -> str:
    """Echo a client's text in an error without letting it forge lines or flood the answer."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def parse_head(head: bytes) -> Request:
    """The request line and headers; :class:`BadRequest` with the answer to give otherwise."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "bad request: the request head must be ASCII") from None
    lines = text[:-4].split("\r\n") if text.endswith("\r\n\r\n") else text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not all(parts):
        raise BadRequest(400, f"bad request line {_printable(lines[0])!r}: expected `METHOD /path HTTP/1.1`")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, f"HTTP version {_printable(version)!r} is not supported (HTTP/1.1 or HTTP/1.0)")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest(400, f"bad header line {_printable(line)!r}")
        headers[name.lower()] = value.strip()
    if method not in ALLOWED_METHODS:
        raise BadRequest(405, f"method {_printable(method)} is not allowed: this server is read-only (GET, HEAD)",
                         (("Allow", ", ".join(ALLOWED_METHODS)),))
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise BadRequest(400, "bad request: requests carry no body here")
    if not target.startswith("/"):
        raise BadRequest(400, f"bad request target {_printable(target)!r}: expected a path starting with /")
    path, _, query = target.partition("?")
    return Request(method, path, query.partition("#")[0], headers)


@dataclass
class HttpServer:
    """Serves ``routes`` (exact path -> handler) on ``host``:``port`` (0: a free port, for tests)."""

    routes: Mapping[str, Handler]
    host: str = "127.0.0.1"
    port: int = 0
    max_connections: int = 32
    request_timeout_s: float = 5.0
    handler_timeout_s: float = 10.0
    _server: asyncio.Server | None = field(default=None, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def start(self) -> None:
        """Listen, or raise :class:`HttpStartError` saying why not."""
        try:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, limit=MAX_HEAD, reuse_address=True)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                why = "the port is already in use (another navstream, or another program, listens there)"
            raise HttpStartError(
                f"cannot serve HTTP on {self.host}:{self.port}: {why}; choose another port with "
                "[http] port, NAVSTREAM_HTTP_PORT or --http-port (0 serves nothing)") from exc
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

    async def stop(self) -> None:
        """Stop listening and end the requests in flight."""
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
        except asyncio.TimeoutError:
            pass
        log.info("http endpoint stopped", extra={"event": "http_stopped"})

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= self.max_connections:
            await self._send(reader, writer, "GET", Response.text(503, "busy: too many connections, try again"))
            return
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            writer.close()
            raise
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.request_timeout_s)
            except asyncio.LimitOverrunError:
                raise BadRequest(431, f"request head larger than {MAX_HEAD} bytes") from None
            except asyncio.IncompleteReadError as exc:
                if len(exc.partial) >= MAX_HEAD:
                    raise BadRequest(431, f"request head larger than {MAX_HEAD} bytes") from None
                writer.close()  # the client left before finishing its request
                return
            except asyncio.TimeoutError:
                raise BadRequest(408, f"request not received within {self.request_timeout_s:g}s") from None
            request = parse_head(head)
            method = request.method
            response = await self._respond(request)
        except BadRequest as exc:
            response = exc.response
        except (ConnectionError, OSError):
            writer.close()
            return
        await self._send(reader, writer, method, response)

    async def _respond(self, request: Request) -> Response:
        handler = self.routes.get(request.path)
        if handler is None:
            known = " ".join(sorted(self.routes))
            return Response.text(404, f"not found: {_printable(request.path)}; endpoints: {known}")
        try:
            return await asyncio.wait_for(handler(request), self.handler_timeout_s)
        except asyncio.TimeoutError:
            log.warning("http handler timed out", extra={"event": "http_timeout", "path": request.path})
            return Response.text(503, f"{request.path} took longer than {self.handler_timeout_s:g}s; try again")
        except Exception:  # noqa: BLE001 - one bad answer must not end the server
            log.exception("http handler failed", extra={"event": "http_error", "path": request.path})
            return Response.text(500, f"internal error answering {request.path} (logged)")

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                    response: Response) -> None:
        reason = REASONS.get(response.status, "")
        head = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Connection: close",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if method != "HEAD":
            data += response.body
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.request_timeout_s)
            if response.status >= 400:
                await self._linger(reader, writer)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass  # the client left or reads too slowly: nothing more to do for it
        finally:
            writer.close()

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an error answer, say we are done and drop what the client still sends (64 KiB,
        1 s at most): closing a socket with unread input resets the connection, which can
        destroy the answer before the client has read it."""
        writer.write_eof()
        dropped = 0
        while dropped < 65_536:
            chunk = await asyncio.wait_for(reader.read(8192), 1.0)
            if not chunk:
                return
            dropped += len(chunk)


def local_url(host: str, port: int, path: str = "/") -> str:
    """Where a client on the same host (the container health check) reaches a server listening
    on ``host``: the wildcard addresses are reached through loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"

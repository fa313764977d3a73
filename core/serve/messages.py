"""HTTP messages as the server (:mod:`navstream.serve.http`) takes and gives them: what a request
may be (an ASCII head of bounded size, ``GET`` or ``HEAD``, no body), the answer to one it
refuses, saying which part is wrong, and the head of every answer. Pure functions of h11's
events: no sockets here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import h11

#: Largest request head (request line and headers) accepted, in bytes.
MAX_HEAD = 8192
MAX_HEADERS = 100
ALLOWED_METHODS = ("GET", "HEAD")
#: Bytes read from a socket at a time.
READ_CHUNK = 4096

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

REQUEST_LINE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]")
HEADER_LINE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*")


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


def printable(text: str, limit: int = 80) -> str:
    """Echo a client's text in an error without letting it forge lines or flood the answer."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def diagnose(head: bytes, error: h11.RemoteProtocolError) -> BadRequest:
    """The answer to a head h11 refused, saying which part of it is wrong where that can be told."""
    if error.error_status_hint == 431:
        return BadRequest(431, f"request head larger than {MAX_HEAD} bytes")
    end = head.find(b"\r\n\r\n")
    lines = (head if end < 0 else head[:end]).split(b"\n")
    if any(byte >= 0x80 for byte in head[:MAX_HEAD]):
        return BadRequest(400, "bad request: the request head must be ASCII")
    text = [line.rstrip(b"\r").decode("ascii") for line in lines]
    if not REQUEST_LINE.fullmatch(text[0]):
        return BadRequest(400, f"bad request line {printable(text[0])!r}: expected `METHOD /path HTTP/1.1`")
    for line in text[1:]:
        if not line:
            break
        if not HEADER_LINE.fullmatch(line):
            return BadRequest(400, f"bad header line {printable(line)!r}")
    reason = str(error).replace("bytearray(b", "(")
    return BadRequest(error.error_status_hint or 400, f"bad request: {printable(reason, 200)}")


def validate(event: h11.Request) -> Request:
    """What the server accepts of a request h11 parsed; :class:`BadRequest` with the answer otherwise."""
    version = event.http_version.decode("ascii", "replace")
    if version not in ("1.1", "1.0"):
        raise BadRequest(505, f"HTTP version {printable('HTTP/' + version)!r} is not supported (HTTP/1.1 or HTTP/1.0)")
    if len(event.headers) > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("ascii", "replace")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    method = event.method.decode("ascii", "replace")
    if method not in ALLOWED_METHODS:
        raise BadRequest(
            405,
            f"method {printable(method)} is not allowed: this server is read-only (GET, HEAD)",
            (("Allow", ", ".join(ALLOWED_METHODS)),),
        )
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise BadRequest(400, "bad request: requests carry no body here")
    try:
        target = event.target.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "bad request: the request head must be ASCII") from None
    if not target.startswith("/"):
        raise BadRequest(400, f"bad request target {printable(target)!r}: expected a path starting with /")
    path, _, query = target.partition("?")
    return Request(method, path, query.partition("#")[0], headers)


def head_lines(
    status: int, content_type: str, length: int, extra: tuple[tuple[str, str], ...], close: bool
) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(length)),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        *extra,
    ]
    if close:
        headers.append(("Connection", "close"))
    return headers


def plain_answer(response: Response) -> bytes:
    """An answer written without h11 (h11 refused the request, or none arrived): it closes."""
    lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}"]
    lines += [
        f"{k}: {v}"
        for k, v in head_lines(response.status, response.content_type, len(response.body), response.headers, True)
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body

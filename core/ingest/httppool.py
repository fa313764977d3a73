"""HTTP for sources: one pooled httpx client per host, a weight budget per host, deadlines.

Every request goes through :meth:`HttpPool.request`, which takes the request's weight from the
host's :class:`HostLimiter` first, sends it with a timeout no later than the caller's deadline,
and turns a 429 or 418 into a block of the host (every source of that host waits) and a
:class:`RateLimited` error. Other statuses are returned; :func:`check` turns an error status
into a :class:`SourceError` with a short excerpt of the body (venues explain themselves there).
Every text made from an answer (body excerpts, transport errors quoting the URL) goes through
:func:`navstream.logs.redact`, which masks each credential registered at startup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from navstream.ingest.errors import SourceError
from navstream.ingest.ratelimit import HostLimiter, RateLimited
from navstream.logs import clip, redact

#: Connect, read, write and pool timeouts of a single request, before the caller's deadline.
REQUEST_TIMEOUT_S = 10.0
#: Characters of an error body kept in a message.
BODY_EXCERPT = 300
USER_AGENT = "navstream-ingest"
#: Weight a minute for a host no source declared a budget for (a source's omission).
UNDECLARED_BUDGET = 60

log = logging.getLogger("navstream.ingest")


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def excerpt(response: httpx.Response) -> str:
    """The start of the body, one line, with credentials masked before it is cut (a venue's
    error may echo the key, the signed query or the URL it was sent to)."""
    return clip(response.text.strip().replace("\n", " "), BODY_EXCERPT)


def check(response: httpx.Response, what: str) -> httpx.Response:
    """``response`` if it is a success, else a :class:`SourceError` saying what failed."""
    if response.is_success:
        return response
    raise SourceError(redact(f"HTTP {response.status_code} on {what}: {excerpt(response)}"))


class HttpPool:
    """The HTTP clients and host budgets of one ingest process.

    :param transport: for tests (an ``httpx.MockTransport``); real runs leave it None.
    """

    def __init__(
        self,
        *,
        timeout_s: float = REQUEST_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.transport = transport
        self.clock = clock
        self._clients: dict[str, httpx.AsyncClient] = {}
        self.limiters: dict[str, HostLimiter] = {}

    @staticmethod
    def host(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {url!r}")
        return parts.netloc.rpartition("@")[2]  # never a user or password: the host names it everywhere

    def limit(self, url: str, weight_per_window: int, window_s: float = 60.0) -> HostLimiter:
        """Declare the budget of ``url``'s host (the lowest declared stands) and return its limiter."""
        host = self.host(url)
        limiter = self.limiters.get(host)
        if limiter is None:
            limiter = self.limiters[host] = HostLimiter(host, weight_per_window, window_s, self.clock)
        else:
            limiter.limit(weight_per_window)
        return limiter

    def client(self, host: str, scheme: str) -> httpx.AsyncClient:
        client = self._clients.get(host)
        if client is None:
            client = self._clients[host] = httpx.AsyncClient(
                base_url=f"{scheme}://{host}",
                timeout=httpx.Timeout(self.timeout_s),
                transport=self.transport,
                headers={"User-Agent": USER_AGENT},
                follow_redirects=False,
                limits=httpx.Limits(max_connections=10, max_keepalive_connections=5),
            )
        return client

    async def request(
        self,
        method: str,
        url: str,
        *,
        deadline: float,
        weight: int = 1,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        what: str = "",
    ) -> httpx.Response:
        """Send one request within the host's budget, finished by ``deadline`` (monotonic).

        ``content`` is the request body as sent (a ``str`` goes as UTF-8; the caller sets its
        ``Content-Type``). It may be signed or carry credentials (a form with a nonce and key), so
        no message, log line or error made here ever quotes it.

        :raises RateLimited: the host is blocked or out of budget until after the deadline, or
            it just answered 429/418 (the host is then blocked for every source).
        :raises SourceError: a timeout or transport error, said in words.
        """
        parts = urlsplit(url)
        host = self.host(url)
        limiter = self.limiters.get(host)
        if limiter is None:  # a source that forgot ctx.http.limit(): be conservative, and say so
            log.warning(
                "no request budget declared for this host; using %d a minute",
                UNDECLARED_BUDGET,
                extra={"event": "host_budget_undeclared", "host": host},
            )
            limiter = self.limit(url, UNDECLARED_BUDGET)
        await limiter.acquire(weight, deadline)
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise SourceError(f"{what or host}: no time left before the fetch's deadline")
        label = what or f"{method} {parts.path}"
        try:
            async with asyncio.timeout(remaining):
                response = await self.client(host, parts.scheme).request(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    content=content,
                    timeout=httpx.Timeout(min(self.timeout_s, remaining)),
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise SourceError(f"{label} on {host}: timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise SourceError(redact(f"{label} on {host}: {type(exc).__name__}: {exc}")) from None
        used = response.headers.get("X-MBX-USED-WEIGHT-1M")
        if used and used.isdigit():
            limiter.observe_used(int(used))
        if response.status_code == 429:
            wait = limiter.too_many_requests(retry_after_s(response))
            raise RateLimited(
                redact(f"HTTP 429 on {label} ({host}); every request to it waits {wait:g}s: {excerpt(response)}"),
                self.clock() + wait,
            )
        if response.status_code == 418:
            wait = limiter.banned(retry_after_s(response))
            raise RateLimited(
                redact(
                    f"HTTP 418 on {label} ({host}): IP banned; every request to it waits {wait:g}s: {excerpt(response)}"
                ),
                self.clock() + wait,
            )
        if response.is_success:
            limiter.succeeded()
        return response

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

"""The HTTP server under slow, idle and misbehaving clients, on real sockets (docs/observability.md,
"Probes and slow clients").

A probe must never wait behind other clients: 40 connections trickling a byte every 0.5 s and
40 idle ones, against a consumer's own endpoint, and /healthz still answers 200 at once, again
and again while they trickle. A trickling client is answered 408 and closed at the read
deadline; malformed requests get 400 and the connection closes; well-behaved clients keep their
connection alive. Deadlines in these tests are generous (seconds), so a loaded machine does
not fail them; what they catch is a probe stuck for the whole attack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from support.serving import ok, read_answer, serving, until

from navstream.serve.http import HttpServer, Request, Response

PROBE = b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
#: What a probe may take at most, even under attack (kubelet's default timeout is 1 s; this is
#: generous so that a loaded CI machine does not fail the test, and far below the 40 s seen).
PROBE_DEADLINE_S = 3.0


async def probe(port: int, request: bytes = PROBE) -> tuple[int, bytes, float]:
    """One probe on a new connection, as an orchestrator sends it: (status, body, seconds)."""
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROBE_DEADLINE_S)
    try:
        writer.write(request)
        await writer.drain()
        status, _, body = await asyncio.wait_for(read_answer(reader), PROBE_DEADLINE_S)
        return status, body, time.monotonic() - started
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def attackers(
    port: int, trickling: int = 40, idle: int = 40, every_s: float = 0.5
) -> AsyncIterator[dict[str, Any]]:
    """``trickling`` connections sending an endless request head a byte every ``every_s``, and
    ``idle`` connections sending nothing. What happened to them is recorded in the dict:
    ``closed`` (monotonic times when the server closed a trickler) and ``answers`` (what it
    answered them)."""
    record: dict[str, Any] = {"closed": [], "answers": [], "opened": 0}
    tasks: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []

    async def trickle() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        record["opened"] += 1
        head = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 100_000

        async def read() -> None:
            try:
                data = await reader.read()
            except (ConnectionError, OSError):
                data = b"reset"  # closed to make room (an abort resets the connection)
            record["answers"].append(data.split(b"\r\n", 1)[0])
            record["closed"].append(time.monotonic())

        reading = asyncio.create_task(read())
        try:
            for byte in head:
                if reading.done():
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(every_s)
        except (ConnectionError, OSError):
            await reading

    async def sit() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        record["opened"] += 1
        await reader.read()

    for _ in range(trickling):
        tasks.append(asyncio.create_task(trickle()))
    for _ in range(idle):
        tasks.append(asyncio.create_task(sit()))
    await until(lambda: record["opened"] == trickling + idle, what="the attackers to connect")
    await asyncio.sleep(0.5)  # every one of them has been accepted and is trickling or waiting
    try:
        yield record
    finally:
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.close()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_healthz_answers_at_once_under_40_trickling_and_40_idle_connections(make_app: Any) -> None:
    app = make_app(consumer={"block_ms": 5, "tick_ms": 50})
    async with serving(app) as (consumer, _):
        port = app.settings.http.port
        assert consumer.http is not None
        async with attackers(port) as record:
            # Before, across and after the 5 s read deadline of the tricklers: always 200, at once.
            until_s = time.monotonic() + 7.0
            answered = 0
            while time.monotonic() < until_s:
                status, body, took = await probe(port)
                assert status == 200 and b'"alive":true' in body, (status, body)
                assert took < PROBE_DEADLINE_S
                answered += 1
                await asyncio.sleep(0.25)
            assert answered >= 5
            # The tricklers that were not closed to make room were answered 408 at the deadline.
            assert b"HTTP/1.1 408 Request Timeout" in record["answers"], record["answers"][:5]
        assert consumer.http.stats.evicted >= 1


async def test_a_trickling_client_is_closed_at_the_read_deadline() -> None:
    srv = HttpServer({"/healthz": ok}, port=0, request_timeout_s=1.0)
    await srv.start()
    try:
        started = time.monotonic()
        async with attackers(srv.bound_port, trickling=1, idle=0, every_s=0.1) as record:
            await until(lambda: bool(record["closed"]), timeout=15, what="the trickler to be closed")
        took = record["closed"][0] - started
        assert 0.9 <= took < 15  # at its deadline (1 s), long before its 100 kB head would end
        assert record["answers"] == [b"HTTP/1.1 408 Request Timeout"]
        assert srv.stats.timeouts == 1
        # And the server is fine.
        assert (await probe(srv.bound_port))[0] == 200
    finally:
        await srv.stop()


async def test_an_idle_connection_is_closed_quietly_at_the_deadline() -> None:
    srv = HttpServer({"/healthz": ok}, port=0, request_timeout_s=0.5)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # nothing sent, nothing answered
        writer.close()
        assert srv.stats.timeouts == 0
    finally:
        await srv.stop()


async def test_malformed_requests_get_400_and_the_connection_closes() -> None:
    srv = HttpServer({"/healthz": ok}, port=0)
    await srv.start()
    try:
        for bad in (
            b"NOT HTTP AT ALL\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nbroken header\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        ):  # a TLS hello
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
            writer.write(bad)
            # The same connection then tries a good request: it must not be served.
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, _ = await asyncio.wait_for(read_answer(reader), 10)
            assert status == 400 and headers["connection"] == "close", (bad, status)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        assert srv.stats.bad_requests == 4
    finally:
        await srv.stop()


async def test_keep_alive_for_well_behaved_clients() -> None:
    seen: list[str] = []

    async def where(request: Request) -> Response:
        seen.append(request.path)
        return Response.text(200, request.path)

    srv = HttpServer({"/a": where, "/b": where}, port=0)
    await srv.start()
    try:
        # One connection, requests one after another, and two pipelined in one write.
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
        for path in (b"/a", b"/b", b"/a"):
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, body = await asyncio.wait_for(read_answer(reader), 10)
            assert (status, body) == (200, path + b"\n") and "connection" not in headers
        writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /b HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await asyncio.wait_for(read_answer(reader), 10))[2] == b"/a\n"
        assert (await asyncio.wait_for(read_answer(reader, "HEAD"), 10))[2] == b""
        # An error answer ends it.
        writer.write(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = await asyncio.wait_for(read_answer(reader), 10)
        assert status == 404 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert srv.stats.connections == 1 and seen == ["/a", "/b", "/a", "/a", "/b"]

        # httpx keeps one connection for many requests; HTTP/1.0 and `Connection: close` end it.
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{srv.bound_port}", trust_env=False, timeout=10
        ) as client:
            for _ in range(5):
                assert (await client.get("/a")).status_code == 200
        assert srv.stats.connections == 2
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
        writer.write(b"GET /a HTTP/1.0\r\n\r\n")
        status, headers, _ = await asyncio.wait_for(read_answer(reader), 10)
        assert status == 200 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await srv.stop()


async def test_a_connection_serves_a_bounded_number_of_requests() -> None:
    srv = HttpServer({"/": ok}, port=0, max_requests_per_connection=3)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 5)
        answers = [await asyncio.wait_for(read_answer(reader), 10) for _ in range(3)]
        assert [a[0] for a in answers] == [200, 200, 200] and answers[2][1]["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await srv.stop()


async def test_probes_get_through_attackers_that_reconnect_at_once() -> None:
    """A real slowloris reconnects as soon as it is closed: 40 trickling and 40 idle clients that
    do, against the default cap of 64. Closing the longest-waiting connection to make room
    churns through them, and every probe is still answered 200 at once."""
    srv = HttpServer({"/healthz": ok}, port=0)
    await srv.start()
    port = srv.bound_port
    running = True

    async def attacker(trickle: bool) -> None:
        while running:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    if trickle:
                        for byte in b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 1000:
                            writer.write(bytes([byte]))
                            await writer.drain()
                            await asyncio.sleep(0.5)
                    else:
                        await reader.read()
                finally:
                    writer.close()
            except (ConnectionError, OSError):
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(attacker(i < 40)) for i in range(80)]
    try:
        await until(lambda: srv.stats.connections >= 80, what="the attackers to connect")
        until_s = time.monotonic() + 6.0
        answered = 0
        while time.monotonic() < until_s:
            status, _, took = await probe(port)
            assert status == 200 and took < PROBE_DEADLINE_S
            answered += 1
            await asyncio.sleep(0.2)
        assert answered >= 5 and srv.stats.evicted >= 16
    finally:
        running = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await srv.stop()

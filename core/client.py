"""The trading engine's side of the risk gate: send an order intent, await its decision.

::

    async with RiskClient.connect("redis://localhost:6379/0") as client:
        d = await client.decide(order_id="o-42", venue="binance", account="main",
                                symbol="BTCUSDT", side="buy", qty="0.1", price="50000",
                                deadline_s=0.5)
        if d.approved:
            ...  # send it to the venue

The gate is a stream consumer, so the answer comes back on ``P:decisions``, not as a reply.
One background task per client reads that stream (``XREAD BLOCK``) and hands each decision
to the ``decide()`` calls waiting on its ``order_id``; any number of concurrent calls share
it. The reader starts at the stream's last id *before* any order of this client is sent, so
an answer cannot slip in between the ``XADD`` and the first read. A decision given before this
client started (an order_id sent again, perhaps by a process that crashed) is not on the
stream from there on, so right after sending the client also reads the stored one
(``HGET P:state:risk:decisions <order_id>``): the gate stores the first decision per order_id
and repeats it, so both paths give the same answer.

An answer counts only if it answers *this* order: every decision carries the ``order_hash`` of
the order's content (:mod:`navstream.contract.fingerprint`), and the client takes only those that match
what it sent. The same id re-sent with other content (a bug in the engine, or a replay) is
refused by the gate with ``order_id_reused``; the first order's approval, stored or on the
stream, is never taken for it.

Failing closed is the rule. No answer before the deadline is a veto (``deadline``); a Redis
error while waiting is a veto too (``client_error``), never an exception, because the answer
the engine needs is "do not trade". An error while *sending* raises :class:`SendError`
instead: the engine must know its order may never have reached the gate. See
docs/risk-client.md, which also gives the protocol for other languages.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, Self, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from navstream.client_wire import (
    CLIENT_ERROR,
    DEADLINE,
    ClientDecision,
    SendError,
    decimal_text,
    fields_hash,
    now_ms,
    order_fields,
    read_decision,
    stored_decision,
    text,
)
from navstream.contract.events import as_str_map, stream_fields
from navstream.contract.keys import DECISION_STORE, REUSED_STORE, Keys

log = logging.getLogger("navstream.client")

#: How long one ``XREAD`` blocks: under any socket timeout a caller is likely to have set on
#: its connection. The reader is cancelled on close, so this never delays ``aclose()``.
BLOCK_MS = 1_000
#: Decisions read per ``XREAD``: the stream carries every engine's answers, not just ours.
READ_COUNT = 1_000
#: Reader retry delays after errors: doubling from the first, capped, with jitter.
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0

#: ``aclose()`` cancels the reader this many times at most, waiting this long after each.
STOP_ATTEMPTS = 20
STOP_WAIT_S = 0.05

__all__ = [
    "CLIENT_ERROR",
    "DEADLINE",
    "ClientDecision",
    "RiskClient",
    "SendError",
    "decimal_text",
    "fields_hash",
    "order_fields",
]


class RiskClient:
    """Sends orders to ``P:orders`` and awaits their decisions; see the module docstring.

    :param redis: a client of the Redis navstream runs on (``decode_responses`` either way);
        the caller keeps owning it. Use :meth:`connect` for a client that owns its connection.
    :param prefix: the key prefix ``P`` of the navstream deployment.
    :param cluster: the deployment runs on Redis Cluster (``[redis] cluster``): its keys are
        under the hash tag ``{prefix}``, and ``redis`` is a ``RedisCluster`` (docs/scaling.md).
    """

    def __init__(
        self, redis: aioredis.Redis, prefix: str = "navstream", *, owns_redis: bool = False, cluster: bool = False
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix, cluster=cluster)
        #: The gate's store of first decisions, and of the vetoes given to reused ids (the contract's keys).
        self._decisions_key = self.keys.state(DECISION_STORE)
        self._reused_key = self.keys.state(REUSED_STORE)
        self._owns_redis = owns_redis
        #: (order_id, order_hash) -> the calls waiting for the answer to that order.
        self._waiters: dict[tuple[str, str], list[asyncio.Future[ClientDecision]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        #: Id of the last decision the reader got past (the XREAD cursor).
        self._cursor = ""
        #: The reader's last XREAD failed: a veto at the deadline then says ``client_error``.
        self._failing = False
        self._closed = False

    @classmethod
    def connect(cls, url: str, prefix: str = "navstream", *, cluster: bool = False, **redis_kwargs: Any) -> RiskClient:
        """A client with its own connection to ``url``, closed by :meth:`aclose`; with
        ``cluster=True``, a ``RedisCluster`` client found from the node ``url`` names."""
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            redis = cast(aioredis.Redis, RedisCluster.from_url(url, decode_responses=True, **redis_kwargs))
        else:
            redis = aioredis.Redis.from_url(url, decode_responses=True, **redis_kwargs)
        return cls(redis, prefix, owns_redis=True, cluster=cluster)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the stream's current last id and start the reader from there (once).

        ``decide()`` calls it; call it earlier to pay the round trip before the first order.

        :raises RedisError: Redis cannot be read; nothing was sent.
        """
        async with self._start_lock:
            if self._closed:
                raise RuntimeError("RiskClient is closed")
            if self._reader is not None:
                return
            last: Any = await self.redis.xrevrange(self.keys.decisions, count=1)
            self._cursor = text(last[0][0]) if last else "0-0"
            self._reader = asyncio.create_task(self._read_loop(), name=f"navstream-client:{self.keys.prefix}")

    async def aclose(self) -> None:
        """Stop the reader, veto whatever still waits (``client_error``), close an owned connection."""
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            await _stop(reader)
        for (order_id, _), waiters in self._waiters.items():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(ClientDecision.vetoed(order_id, CLIENT_ERROR))
        if self._owns_redis:
            await self.redis.aclose()

    # --- deciding ---------------------------------------------------------------------------

    async def decide(
        self,
        *,
        order_id: str,
        venue: str,
        account: str,
        symbol: str,
        side: Literal["buy", "sell"],
        qty: Decimal | str,
        price: Decimal | str | None = None,
        reduce_only: bool = False,
        deadline_s: float,
    ) -> ClientDecision:
        """Send one order intent and return its decision, or a veto when none came in time.

        The deadline counts from this call, sending included. Send an intent under one
        ``order_id`` only: sending it again (after a crash, a :class:`SendError`) returns the
        decision already given, while a new id would be judged, and could be approved, again.

        :param qty: exact decimal (``Decimal`` or ``str``); a ``float`` is refused.
        :param price: limit price, same rules; None for a market order.
        :param deadline_s: seconds to wait at most; then the order counts as vetoed.
        :raises TypeError: a float or another wrong type; nothing was sent.
        :raises ValueError: an order the gate would call ``bad_order``; nothing was sent.
        :raises SendError: the order was not confirmed written (see there).
        """
        if (
            isinstance(deadline_s, bool)
            or not isinstance(deadline_s, (int, float))
            or not math.isfinite(deadline_s)
            or deadline_s <= 0
        ):
            raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s!r}")
        fields = order_fields(
            order_id=order_id,
            venue=venue,
            account=account,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            reduce_only=reduce_only,
            ts=now_ms(),
        )
        key = (order_id, fields_hash(fields))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        waiter: asyncio.Future[ClientDecision] = loop.create_future()
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.start()  # the cursor is taken before the XADD: no answer missed
                    self._waiters.setdefault(key, []).append(waiter)
                    await self.redis.xadd(self.keys.orders, stream_fields(fields))
            except (RedisError, OSError, TimeoutError) as exc:
                raise SendError(
                    f"order {order_id!r} not confirmed sent to {self.keys.orders}: {type(exc).__name__}: {exc}"
                ) from exc
            trouble = False
            try:
                async with asyncio.timeout_at(deadline):
                    if not waiter.done():
                        trouble = not await self._check_stored(key, waiter)
                    return await waiter
            except TimeoutError:
                reason = CLIENT_ERROR if trouble or self._failing else DEADLINE
                log.warning(
                    "no decision before the deadline, vetoed",
                    extra={
                        "event": "decision_deadline",
                        "order_id": order_id,
                        "reason": reason,
                        "deadline_s": deadline_s,
                    },
                )
                return ClientDecision.vetoed(order_id, reason)
        finally:
            self._forget(key, waiter)

    async def _check_stored(self, key: tuple[str, str], waiter: asyncio.Future[ClientDecision]) -> bool:
        """Resolve ``waiter`` from the gate's stored answer to this very order (the first
        decision of its id, if given for the same content, else the veto stored for this
        reuse of the id), if there is one; False when Redis failed (the stream may still bring
        the answer)."""
        order_id, content = key
        try:
            first = await self.redis.hget(self._decisions_key, order_id)
            reused = await self.redis.hget(self._reused_key, f"{content}:{order_id}") if first is not None else None
        except (RedisError, OSError) as exc:
            log.warning(
                "could not read the stored decision",
                extra={"event": "client_error", "order_id": order_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        for raw in (first, reused):
            if raw is None or waiter.done():
                continue
            fields = stored_decision(raw)
            if fields is None or fields.get("order_hash") == content:
                waiter.set_result(read_decision(order_id, fields))
        return True

    def _forget(self, key: tuple[str, str], waiter: asyncio.Future[ClientDecision]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[key]

    # --- the reader -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Read ``P:decisions`` from the cursor for as long as the client lives; hand each
        entry to its waiters. Errors are retried with backoff from the same cursor, so an
        answer written during an outage is still delivered once Redis answers again."""
        attempt = 0
        while not self._closed:
            try:
                reply = await self.redis.xread({self.keys.decisions: self._cursor}, count=READ_COUNT, block=BLOCK_MS)
            except Exception as exc:  # noqa: BLE001 - whatever it is, retry; waiters veto at their deadline
                self._failing = True
                attempt += 1
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(attempt - 1, 16)) * (0.5 + random.random() / 2)
                log.warning(
                    "reading decisions failed, retrying",
                    extra={
                        "event": "client_error",
                        "error": f"{type(exc).__name__}: {exc}",
                        "retry_in_s": round(delay, 3),
                    },
                )
                await asyncio.sleep(delay)
                continue
            self._failing = False
            attempt = 0
            for entry_id, fields in _entries(reply):
                self._cursor = text(entry_id)
                self._dispatch(fields)

    def _dispatch(self, raw: Any) -> None:
        try:
            fields = as_str_map(raw or {})
        except ValueError:
            return  # not an entry the gate wrote (it writes UTF-8); nobody can wait for it
        waiters = self._waiters.get((fields.get("order_id", ""), fields.get("order_hash", "")))
        if not waiters:
            return  # another engine's order, one whose caller gave up, or another content's answer
        decision = read_decision(fields["order_id"], fields)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(decision)


async def _stop(reader: asyncio.Task[None]) -> None:
    """Cancel ``reader`` until it is done. Once is not always enough on Python 3.11: redis-py
    sends each command inside ``asyncio.wait_for``, which there swallows a cancellation that
    lands as the send completes, and the XREAD would then block on (fixed in Python 3.12)."""
    for _ in range(STOP_ATTEMPTS):
        reader.cancel()
        done, _ = await asyncio.wait({reader}, timeout=STOP_WAIT_S)
        if done:
            if not reader.cancelled() and reader.exception() is not None:
                log.error(
                    "decision reader failed", exc_info=reader.exception(), extra={"event": "client_reader_failed"}
                )
            return
    log.error("decision reader did not stop", extra={"event": "client_reader_stuck"})


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """XREAD's entries for our one stream: ``[[stream, entries]]`` over RESP2,
    ``{stream: [entries]}`` over RESP3."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        return [entry for per_stream in reply.values() for entries in per_stream for entry in entries]
    return [entry for _stream, entries in reply for entry in entries]

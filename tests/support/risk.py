"""Helpers of the risk gate's tests (tests/plugins/risk/): a consumer with the nav and risk
plugins started on ``make_app``, the events that fund a desk, orders sent and their decisions
read back (each checked to carry its order's hash), the CLI as a user runs it, and the gate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from navstream import InvalidOrder
from navstream.app import ManualClock
from navstream.cli import main
from navstream.contract.events import decode_order
from navstream.contract.fingerprint import raw_order_hash
from navstream.loop.consumer import Consumer
from navstream.plugins.risk import RiskPlugin
from navstream.plugins.risk.decide import content_hash
from navstream.testing import START_MS

__all__ = [
    "T0",
    "balance",
    "cli",
    "config_toml",
    "decide",
    "funded",
    "gate_of",
    "hash_of",
    "one",
    "open_gate_of",
    "order",
    "position",
    "price",
    "price_source",
    "reasons",
    "sections",
    "source",
    "started",
]

T0 = START_MS - 1_000


def sections(tmp_path: Path, **risk: Any) -> dict[str, Any]:
    return {
        "nav": {
            "max_age_s": 120,
            "publish_every_s": 600,
            "alert_every_s": 300,
            "pegs": {"USDT": "1"},
            "routes": {"BTC": "BTC/USDT"},
        },
        "risk": {
            "max_nav_age_s": 60,
            "max_order_notional": "50000",
            "max_order_pct_nav": 50,
            "max_gross_exposure_x": 3,
            "audit_dir": str(tmp_path / "audit"),
            **risk,
        },
    }


async def started(
    make_app: Any, tmp_path: Path, clock: Any = None, name: str | None = None, **risk: Any
) -> tuple[Any, Consumer]:
    app = make_app(
        builtins=True,
        extra=sections(tmp_path, **risk),
        clock=clock or ManualClock(START_MS),
        name=name,
        disabled=["source_monitor"],
    )
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


def balance(asset: str, amount: str, ts: int, account: str = "main") -> dict[str, str]:
    return {"type": "balance", "venue": "binance", "account": account, "asset": asset, "balance": amount, "ts": str(ts)}


def price(value: str, ts: int, pair: str = "BTC/USDT") -> dict[str, str]:
    base, _, quote = pair.partition("/")
    return {"type": "price", "base": base, "quote": quote, "price": value, "source": "binance-spot", "ts": str(ts)}


def source(ok: bool, ts: int, name: str = "binance-futures", error: str = "") -> dict[str, str]:
    return {
        "type": "source_status",
        "venue": "binance",
        "source": name,
        "ok": "true" if ok else "false",
        "account": "main",
        "error": error,
        "ts": str(ts),
    }


def position(symbol: str, qty: str, ts: int) -> dict[str, str]:
    return {
        "type": "position",
        "venue": "binance",
        "account": "main",
        "symbol": symbol,
        "qty": qty,
        "entry_price": "50000",
        "mark_price": "50000",
        "ts": str(ts),
    }


def funded(ts: int = T0, usdt: str = "100000") -> list[dict[str, str]]:
    """One account worth ``usdt`` USD, BTC at 50,000 USDT, its venue's source and the price
    source healthy."""
    return [balance("USDT", usdt, ts), price("50000", ts), source(True, ts), price_source(True, ts)]


def price_source(ok: bool, ts: int) -> dict[str, str]:
    """The price source's own heartbeat: a price source that never reported prices nothing."""
    return {
        "type": "source_status",
        "venue": "binance-spot",
        "source": "binance-spot",
        "ok": "true" if ok else "false",
        "ts": str(ts),
    }


def order(order_id: str, qty: str = "0.1", side: str = "buy", symbol: str = "BTCUSDT", **extra: str) -> dict[str, str]:
    """An order entry; without a ``ts`` it is stamped with the app's clock when sent."""
    return {
        "type": "order",
        "order_id": order_id,
        "venue": "binance",
        "account": "main",
        "symbol": symbol,
        "side": side,
        "qty": qty,
        **extra,
    }


def hash_of(o: dict[str, str]) -> str:
    """The order_hash a decision of ``o`` must carry (navstream.contract.fingerprint, from the decoded order)."""
    decoded = decode_order(o)
    if isinstance(decoded, InvalidOrder):
        return raw_order_hash(decoded.fields)
    return content_hash(decoded)


async def decide(app: Any, consumer: Consumer, *orders: dict[str, str], tick: bool = False) -> list[dict[str, str]]:
    """Send ``orders`` and return the decisions they got, in order, each checked to carry the
    hash of the order it answers (and shown without it)."""
    before = await app.redis.xlen(app.keys.stream("decisions"))
    sent = [{"ts": str(app.clock.now_ms()), **o} for o in orders]
    for o in sent:
        await app.redis.xadd(app.keys.orders, o)
    while await consumer.step(block_ms=1):
        pass
    if tick:
        await consumer.tick()
    got = [f for _, f in await app.redis.xrange(app.keys.stream("decisions"))][before:]
    if len(got) == len(sent):
        for o, d in zip(sent, got):
            assert d.get("order_hash") == hash_of(o), (o, d)
    return [{k: v for k, v in d.items() if k != "order_hash"} for d in got]


async def one(app: Any, consumer: Consumer, o: dict[str, str]) -> dict[str, str]:
    (d,) = await decide(app, consumer, o)
    return d


def reasons(d: dict[str, str]) -> list[str]:
    return d["reasons"].split(",") if d["reasons"] else []


async def cli(*argv: str) -> int:
    """``navstream ...`` as a user runs it (its own event loop, so in a thread)."""
    return await asyncio.to_thread(main, list(argv))


def config_toml(nav: dict[str, Any], risk: dict[str, Any]) -> str:
    """A config file's ``[nav]`` and ``[risk]`` tables."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    return (
        "\n".join(
            [
                "[nav]",
                *(f"{k} = {value(v)}" for k, v in nav.items()),
                "[risk]",
                *(f"{k} = {value(v)}" for k, v in risk.items()),
            ]
        )
        + "\n"
    )


def gate_of(app: Any) -> Any:
    """The risk plugin's gate for this app (None outside startup..shutdown)."""
    plugin = app.plugin("risk")
    assert isinstance(plugin, RiskPlugin)
    return plugin.gate


def open_gate_of(app: Any) -> Any:
    gate = gate_of(app)
    assert gate is not None, "the risk gate is not open: was the consumer started?"
    return gate

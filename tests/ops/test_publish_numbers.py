"""``navstream publish`` and the number grammar: it refuses what a consumer would dead-letter,
with the same one-line reason naming the field, exit code 2, and nothing written."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from navstream.cli import main
from navstream.ops.publish import PublishError, parse_json_lines, prepare

BAD = [" 1", "1 ", "1_000", "+5", "１２", "١٢", "5e999994", "1e-999999", "NaN", "Infinity", "", "1" * 5000]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def balance(ts: int, **over: str) -> dict[str, str]:
    return {
        "type": "balance",
        "venue": "okx",
        "account": "spot",
        "asset": "BTC",
        "balance": "1.5",
        "ts": str(ts),
        **over,
    }


def order(ts: int, **over: str) -> dict[str, str]:
    return {
        "type": "order",
        "order_id": "o-1",
        "venue": "binance",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": "0.5",
        "price": "97000",
        "ts": str(ts),
        **over,
    }


@pytest.mark.parametrize("bad", BAD, ids=[repr(b)[:20] for b in BAD])
@pytest.mark.parametrize(
    ("make", "field"),
    [(balance, "balance"), (balance, "unrealized_pnl"), (order, "qty"), (order, "price")],
    ids=["balance", "pnl", "order-qty", "order-price"],
)
async def test_prepare_refuses_a_bad_amount_naming_entry_and_field(
    make_app: Any, make: Any, field: str, bad: str
) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    with pytest.raises(PublishError) as info:
        prepare(app, [make(ts), make(ts, **{field: bad})])
    (problem,) = info.value.problems
    assert problem.startswith(f"entry 2: field `{field}`: ") and "\n" not in problem and len(problem) < 300


async def test_json_numbers_are_written_plain_and_bounded(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    lines = [
        f'{{"type": "balance", "venue": "v", "account": "a", "asset": "X", "balance": {number}, "ts": {ts}}}'
        for number in ("0.00000001", "1e-7", "5.0E+3", "5e999994", "1e-40", "1" * 40)
    ]
    rows = parse_json_lines(lines)
    assert [r["balance"] for r in rows[:3]] == ["0.00000001", "0.0000001", "5000"]  # never "1E-8"
    assert len(prepare(app, rows[:3])) == 3
    with pytest.raises(PublishError) as info:
        prepare(app, rows)
    assert [p.split(":")[0] for p in info.value.problems] == ["entry 4", "entry 5", "entry 6"]
    assert all("field `balance`: " in p and "out of bounds" in p for p in info.value.problems)


# --- the command, against a real Redis ------------------------------------------------------------


@pytest.fixture
def r(real_backend: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_backend.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NAVSTREAM_") and name != "NAVSTREAM_REQUIRE_REDIS":
            monkeypatch.delenv(name)


def publish(capsys: pytest.CaptureFixture[str], backend: Any, *args: str) -> tuple[int, str, str]:
    code = main(["publish", "--redis-url", backend.url, "--prefix", backend.prefix, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (["type=balance", "venue=okx", "account=spot", "asset=BTC", "balance=１２"], "balance", "non-ASCII"),
        (["type=price", "base=BTC", "quote=USDT", "price=5e999994", "source=manual"], "price", "out of bounds"),
        (["type=position", "venue=b", "account=a", "symbol=BTCUSDT", "qty=1_000", "entry_price=1"], "qty", "'_'"),
        (
            ["type=order", "order_id=o-1", "venue=b", "account=a", "symbol=BTCUSDT", "side=buy", "qty= 1"],
            "qty",
            "whitespace",
        ),
    ],
)
def test_publish_refuses_a_bad_amount_with_exit_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], real_backend: Any, r: redis.Redis, args: list[str], field: str, words: str
) -> None:
    code, out, err = publish(capsys, real_backend, *args, "--stamp")
    assert code == 2 and out == ""
    assert "nothing published" in err
    (line,) = [ln for ln in err.splitlines() if "entry 1: " in ln]
    assert f"entry 1: field `{field}`: " in line and words in line
    assert r.exists(f"{real_backend.prefix}:events", f"{real_backend.prefix}:orders") == 0


def test_publish_file_with_one_bad_amount_writes_nothing(
    capsys: pytest.CaptureFixture[str], real_backend: Any, r: redis.Redis, tmp_path: Path
) -> None:
    ts = now_ms()
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps(e) + "\n"
            for e in [balance(ts), balance(ts, balance="1E-8"), balance(ts, asset="ETH", balance="١٢"), order(ts)]
        )
    )
    code, out, err = publish(capsys, real_backend, "--file", str(path))
    assert code == 2 and out == ""
    assert "entry 3: field `balance`: '١٢' is not a decimal number" in err
    assert "entry 1:" not in err and "entry 2:" not in err and "entry 4:" not in err
    assert r.exists(f"{real_backend.prefix}:events", f"{real_backend.prefix}:orders") == 0

"""``navstream nav | head -1``: a reader that leaves early is not a Redis problem.

Every command writing into a pipe whose reader is gone exits quietly with 141 (128 + SIGPIPE,
what a shell reports for any program a closed pipe ends): no "Redis unreachable", no exit 3, no
traceback, nothing on stderr. Real subprocesses, as a shell pipeline runs them: stdout is a pipe
whose reader reads the first line and closes it, or one closed before anything was written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import ROOT

from navstream.app import App, ManualClock
from navstream.config import load_settings
from navstream.loop.consumer import Consumer
from navstream.plugin.manager import build_plugin_manager

pytestmark = pytest.mark.slow

#: The exit code chosen: 128 + SIGPIPE (13).
EXIT_PIPE = 141
#: Accounts valued for `navstream nav`: its answer (~240 kB) is far more than a pipe holds.
ACCOUNTS = 200


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}


def head_1(*args: str, tmp_path: Path) -> tuple[str, int, str]:
    """``navstream ARGS | head -1``: the first line, the exit code, stderr."""
    with (tmp_path / "stderr").open("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "navstream.cli", *args], stdout=subprocess.PIPE, stderr=err, env=env()
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().decode()
            proc.stdout.close()  # the reader leaves, the writer is still writing
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        return first, code, err.read()


def reader_gone(*args: str) -> tuple[int, str]:
    """``navstream ARGS | true``: stdout's reader is gone before anything is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "navstream.cli", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            timeout=120,
        )
    finally:
        os.close(write)
    return proc.returncode, proc.stderr


def quiet(code: int, err: str) -> None:
    assert "unreachable" not in err.lower(), err
    assert "Traceback" not in err and "Broken pipe" not in err and "Exception ignored" not in err, err
    assert err == "", err
    assert code == EXIT_PIPE, (code, err)


@pytest.fixture
def desk(real_backend: Any) -> Iterator[list[str]]:
    """``ACCOUNTS`` accounts valued by the nav plugin on the real Redis; the CLI's options."""
    import asyncio

    async def value() -> None:
        settings = load_settings(
            env={}, overrides={"redis": {"prefix": real_backend.prefix, "group": "g"}, "consumer": {"name": "c"}}
        )
        settings = msgspec.structs.replace(settings, extra={"nav": {"pegs": {"USDT": "1"}}})
        app = App.create(
            settings,
            connect=real_backend.connect,
            clock=ManualClock(time.time_ns() // 1_000_000),
            plugins=build_plugin_manager(load_entrypoints=True, env={}, disabled=["risk"]),
        )
        try:
            consumer = Consumer(app)
            await consumer.setup()
            ts = str(app.clock.now_ms() - 1_000)
            pipe = app.redis.pipeline(transaction=False)
            for i in range(ACCOUNTS):
                pipe.xadd(
                    app.keys.events,
                    {
                        "type": "balance",
                        "venue": "binance",
                        "account": f"a{i:04d}",
                        "asset": "USDT",
                        "balance": "1000.5",
                        "ts": ts,
                    },
                )
            await pipe.execute()
            while await consumer.step(block_ms=1):
                pass
            await consumer.tick()
        finally:
            await app.aclose()

    asyncio.run(value())
    yield ["--redis-url", real_backend.url, "--prefix", real_backend.prefix]


@pytest.mark.parametrize("json", [False, True])
def test_nav_into_head_exits_quietly(desk: list[str], tmp_path: Path, json: bool) -> None:
    first, code, err = head_1("nav", *desk, *(["--json"] if json else []), tmp_path=tmp_path)
    assert first.strip() == "[" if json else first.startswith("account binance/a0000"), first
    quiet(code, err)


def test_dlq_list_into_head_exits_quietly(real_backend: Any, tmp_path: Path) -> None:
    import redis

    r = redis.Redis.from_url(real_backend.url)
    try:
        r.xadd(f"{real_backend.prefix}:dlq", {"blob": "x" * 500_000, "dlq_stream": "s", "dlq_error": "e"})
    finally:
        r.close()
    first, code, err = head_1(
        "dlq", "list", "--redis-url", real_backend.url, "--prefix", real_backend.prefix, tmp_path=tmp_path
    )
    assert first.startswith("id"), first
    quiet(code, err)


# Every command (but `run` and `ingest`, whose stdout is their log), its reader gone at once.
WITHOUT_REDIS = [
    ["--help"],
    ["--version"],
    ["plugins"],
    ["plugins", "--json"],
    ["dlq", "--help"],
    ["demo", "--fast"],
    ["config", "check", str(ROOT / "config" / "navstream.toml")],
]
WITH_REDIS = [
    ["status"],
    ["status", "--json"],
    ["dlq", "list"],
    ["nav"],
    ["nav", "--json"],
    ["risk", "show"],
    ["trim", "events", "--dry-run"],
    ["publish", "type=price", "base=BTC", "quote=USDT", "price=1", "source=manual", "--stamp"],
]


@pytest.mark.parametrize("args", WITHOUT_REDIS, ids=" ".join)
def test_a_command_into_a_closed_pipe_exits_quietly(args: list[str]) -> None:
    quiet(*reader_gone(*args))


@pytest.mark.parametrize("args", WITH_REDIS, ids=" ".join)
def test_a_redis_command_into_a_closed_pipe_exits_quietly(desk: list[str], args: list[str]) -> None:
    quiet(*reader_gone(*args, *desk))


def test_new_plugin_into_a_closed_pipe_writes_the_package_and_exits_quietly(tmp_path: Path) -> None:
    quiet(*reader_gone("new-plugin", "okx", "--dir", str(tmp_path)))
    assert (tmp_path / "navstream-okx" / "pyproject.toml").is_file()


def test_redis_really_unreachable_is_still_exit_3() -> None:
    """The other way round: a closed pipe is not mistaken for Redis, nor Redis for a pipe."""
    proc = subprocess.run(
        [sys.executable, "-m", "navstream.cli", "status", "--redis-url", "redis://127.0.0.1:1"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )
    assert proc.returncode == 3 and "unreachable" in proc.stderr, proc.stderr

"""The ``navstream`` command line, in-process (``main([...])``) and as a subprocess.

Commands that need a server talk to the real Redis (``real_backend``: its URL and a private
prefix); the CLI connects by URL, so fakeredis cannot stand in. Exit codes: 0 ok, 1 refused,
2 bad input, 3 Redis unreachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from support.cli import cli, key, opts

from navstream.cli import build_parser

UNREACHABLE = "redis://127.0.0.1:1"
SECRET_URL = "redis://user:s3cret@127.0.0.1:1/0"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    env.update(extra)
    return env


def run_proc(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "navstream.cli", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else clean_env(),
    )


def now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def price(**over: Any) -> dict[str, Any]:
    return {
        "type": "price",
        "base": "BTC",
        "quote": "USDT",
        "price": "97000.5",
        "source": "manual",
        "ts": now_ms(),
        **over,
    }


def order(**over: Any) -> dict[str, Any]:
    return {
        "type": "order",
        "order_id": "o-1",
        "venue": "binance",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": "0.5",
        "ts": now_ms(),
        **over,
    }


def jsonl(*entries: dict[str, Any]) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


def add_dead(r: redis.Redis, rb: Any, fields: dict[str, Any], source: str = "events", error: str = "boom") -> str:
    return r.xadd(
        key(rb, "dlq"),
        {
            **{k: str(v) for k, v in fields.items()},
            "dlq_stream": key(rb, source),
            "dlq_id": "1-0",
            "dlq_error": error,
            "dlq_deliveries": "5",
            "dlq_consumer": "c",
            "dlq_ts": "1",
        },
    )


# --- help and usage -----------------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    """Every command and sub-command of the parser, found by walking it."""
    import argparse

    paths: list[list[str]] = [[]]

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    paths.append(prefix + [name])
                    walk(sub, prefix + [name])

    walk(build_parser(), [])
    return paths


COMMANDS = _command_paths()


def test_the_parser_has_every_documented_command() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {
        "run",
        "demo",
        "publish",
        "status",
        "plugins",
        "dlq",
        "dlq list",
        "dlq replay",
        "dlq purge",
        "trim",
        "config",
        "config check",
    } <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "navstream")
def test_help_of_every_command(capsys: pytest.CaptureFixture[str], path: list[str]) -> None:
    code, out, err = cli(capsys, *path, "--help")
    assert code == 0, err
    assert out.startswith(f"usage: navstream {' '.join(path)}".rstrip())
    assert err == ""


def test_help_as_a_subprocess() -> None:
    proc = run_proc("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "demo", "publish", "status", "plugins", "dlq", "trim", "config"):
        assert command in proc.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from navstream import __version__

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"navstream {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["dlq"],
        ["trim", "dlq"],
        ["config"],
        ["dlq", "list", "--limit", "0"],
        ["run", "--until-idle", "-1"],
        ["run", "--max-events", "x"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert "usage: navstream" in err and out == ""


# --- publish ------------------------------------------------------------------------------------


def test_publish_key_value(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    before = now_ms()
    code, out, err = cli(
        capsys, "publish", *opts(rb), "type=price", "base=BTC", "quote=USDT", "price=0.1", "source=manual", "--stamp"
    )
    assert code == 0, err
    stream, new_id = out.split()
    assert stream == key(rb, "events")
    ((entry_id, fields),) = r.xrange(stream)
    assert entry_id == new_id
    assert fields["price"] == "0.1" and fields["base"] == "BTC"
    assert before <= int(fields["ts"]) <= now_ms()
    assert r.exists(key(rb, "orders")) == 0


def test_publish_key_value_order_goes_to_orders(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    fields = {k: str(v) for k, v in order().items()}
    code, out, err = cli(capsys, "publish", *opts(rb), *[f"{k}={v}" for k, v in fields.items()])
    assert code == 0, err
    stream, new_id = out.split()
    assert stream == key(rb, "orders")
    assert r.xrange(stream) == [(new_id, fields)]
    assert r.exists(key(rb, "events")) == 0


def test_publish_file(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    exact = json.dumps(price(base="ETH")).replace('"97000.5"', "12345678901234567890.123456789")
    path.write_text(jsonl(price(price=0.1), order()) + exact + "\n\n")
    code, out, err = cli(capsys, "publish", *opts(rb), "--file", str(path))
    assert code == 0, err
    printed = [line.split() for line in out.splitlines()]
    assert [s for s, _ in printed] == [key(rb, "events"), key(rb, "orders"), key(rb, "events")]
    events = r.xrange(key(rb, "events"))
    assert [i for i, _ in events] == [printed[0][1], printed[2][1]]
    assert events[0][1]["price"] == "0.1"
    assert events[1][1]["price"] == "12345678901234567890.123456789"
    assert [i for i, _ in r.xrange(key(rb, "orders"))] == [printed[1][1]]


def test_publish_stdin_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, rb: Any, r: redis.Redis
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(jsonl(price(), price(base="ETH"))))
    code, out, err = cli(capsys, "publish", *opts(rb), "--file", "-")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert [f["base"] for _, f in r.xrange(key(rb, "events"))] == ["BTC", "ETH"]


def test_publish_stdin_subprocess(rb: Any, r: redis.Redis) -> None:
    proc = run_proc("publish", *opts(rb), "--file", "-", input=jsonl(price(price=0.1), order()))
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == [key(rb, "events"), key(rb, "orders")]
    assert r.xrange(key(rb, "events"))[0][1]["price"] == "0.1"
    assert r.xlen(key(rb, "orders")) == 1


def test_publish_invalid_entry_writes_nothing(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    missing = price()
    del missing["price"]
    path.write_text(jsonl(price(), missing, order(), price(type="pricee"), price(ts=now_ms() // 1000)))
    code, out, err = cli(capsys, "publish", *opts(rb), "--file", str(path))
    assert code == 2
    assert out == ""
    assert "nothing published" in err
    assert "entry 2: " in err and "`price`" in err
    assert "entry 4: " in err and "pricee" in err
    assert "entry 5: " in err and "ts" in err
    assert "entry 1:" not in err and "entry 3:" not in err
    assert r.exists(key(rb, "events"), key(rb, "orders")) == 0


def test_publish_invalid_key_value_entry(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    code, out, err = cli(capsys, "publish", *opts(rb), "type=price", "base=BTC", f"ts={now_ms()}")
    assert code == 2 and out == ""
    assert "entry 1: " in err and "quote" in err
    assert r.exists(key(rb, "events")) == 0


def test_publish_nested_json_names_the_line(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(jsonl(price(), {**price(), "meta": {"a": 1}}))
    code, _, err = cli(capsys, "publish", *opts(rb), "--file", str(path))
    assert code == 2
    assert f"{path}:2: " in err and "`meta`" in err
    assert r.exists(key(rb, "events")) == 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["type=price", "--file", "x.jsonl"], ["not both"]),
        ([], ["either"]),
        (["type=price", "oops"], ["'oops' is not key=value"]),
        (["--file", "/nonexistent/in.jsonl"], ["cannot read /nonexistent/in.jsonl"]),
    ],
    ids=["fields-and-file", "neither", "bad-pair", "missing-file"],
)
def test_publish_bad_input_exits_2_before_connecting(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    # An unreachable Redis proves the input is judged before any connection (that would be 3).
    code, out, err = cli(capsys, "publish", "--redis-url", UNREACHABLE, *argv)
    assert code == 2
    assert out == ""
    for word in words:
        assert word in err


def test_publish_empty_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    code, _, err = cli(capsys, "publish", "--redis-url", UNREACHABLE, "--file", str(path))
    assert code == 2 and "no entries" in err


# --- status -------------------------------------------------------------------------------------


def _deployment(r: redis.Redis, rb: Any) -> None:
    """The default group on both inputs, some lag and pending, two dead letters, an alert."""
    events = key(rb, "events")
    for stream in (events, key(rb, "orders")):
        r.xgroup_create(stream, "navstream", id="0", mkstream=True)
    for i in range(1, 5):
        r.xadd(events, {"n": str(i)}, id=f"{i}-0")
    r.xreadgroup("navstream", "worker-a", {events: ">"}, count=2)
    r.xack(events, "navstream", "1-0")
    add_dead(r, rb, price())
    add_dead(r, rb, price(base="ETH"))
    r.xadd(key(rb, "alerts"), {"code": "nav_stale", "severity": "warning", "message": "NAV is stale", "ts": "1"})


def test_status_text(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    _deployment(r, rb)
    code, out, err = cli(capsys, "status", *opts(rb))
    assert code == 0, err
    assert f"prefix {rb.prefix}  group navstream" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(rb.prefix)}
    assert rows[key(rb, "events")] == [key(rb, "events"), "4", "2", "1", "1"]  # length lag pending consumers
    assert rows[key(rb, "orders")] == [key(rb, "orders"), "0", "0", "0", "0"]
    assert "dead letters: 2" in out
    assert "no live consumer" in out
    assert "nav_stale" in out and "NAV is stale" in out
    assert "[source_monitor]" in out


def test_status_json(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    _deployment(r, rb)
    code, out, err = cli(capsys, "status", *opts(rb), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"prefix", "group", "streams", "dlq", "consumers", "alerts", "plugins"} <= set(data)
    assert data["prefix"] == rb.prefix and data["group"] == "navstream"
    events = data["streams"][key(rb, "events")]
    assert events["length"] == 4
    assert events["groups"][0]["pending"] == 1
    assert events["consumers"] == [{"name": "worker-a", "pending": 1, "idle_ms": events["consumers"][0]["idle_ms"]}]
    assert data["dlq"] == {"length": 2}
    assert [a["code"] for a in data["alerts"]] == ["nav_stale"]
    assert "source_monitor" in data["plugins"]


def test_run_then_status_shows_the_consumer(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    r.xadd(key(rb, "events"), {k: str(v) for k, v in price().items()})
    r.xadd(key(rb, "events"), {"type": "bogus", "ts": str(now_ms())})
    code, _, err = cli(capsys, "run", *opts(rb), "--consumer", "cli-worker", "--until-idle", "0.3")
    assert code == 0, err
    code, out, err = cli(capsys, "status", *opts(rb))
    assert code == 0, err
    row = next(line.split() for line in out.splitlines() if line.startswith("cli-worker"))
    assert row[1:6] == ["stopped", "all", "1", "0", "1"]  # status role processed failed dead-lettered
    assert "dead letters: 1" in out and "navstream dlq list" in out
    assert "[risk]" in out and "decisions_stored: 0" in out  # the risk gate reads P:orders
    data = json.loads(cli(capsys, "status", *opts(rb), "--json")[1])
    (beat,) = data["consumers"]
    assert beat["consumer"] == "cli-worker" and int(beat["ttl_ms"]) > 0
    group = data["streams"][key(rb, "events")]["groups"][0]
    assert (group["pending"], group["lag"]) == (0, 0)


def test_status_of_another_group(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    _deployment(r, rb)
    code, out, _ = cli(capsys, "status", *opts(rb), "--group", "other", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["group"] == "other"
    assert data["streams"][key(rb, "events")]["consumers"] == []
    code, out, _ = cli(capsys, "status", *opts(rb), "--group", "other")
    assert code == 0
    assert "no group" in out


def test_status_with_a_config_file(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, tmp_path: Path) -> None:
    cfg = tmp_path / "navstream.toml"
    cfg.write_text(f'[redis]\nurl = "{rb.url}"\nprefix = "{rb.prefix}"\ngroup = "grp"\n')
    code, out, err = cli(capsys, "status", "--config", str(cfg), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["prefix"], data["group"]) == (rb.prefix, "grp")


def test_status_when_a_key_has_the_wrong_type_fails_cleanly(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis
) -> None:
    r.set(key(rb, "events"), "not a stream")
    try:
        code, _, err = cli(capsys, "status", *opts(rb))
    except Exception as exc:  # noqa: BLE001 - what this test is about
        pytest.fail(f"status raised {type(exc).__name__}: {exc}")
    assert code == 1
    assert err.startswith("navstream: error:") and "WRONGTYPE" in err


# --- dlq ----------------------------------------------------------------------------------------


def test_dlq_list(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    code, out, _ = cli(capsys, "dlq", "list", *opts(rb))
    assert code == 0 and out.strip() == "no dead letters"
    a = add_dead(r, rb, price(), error="undecodable: field `price`")
    b = add_dead(r, rb, price(base="ETH"), error="second error")
    code, out, err = cli(capsys, "dlq", "list", *opts(rb))
    assert code == 0, err
    assert a in out and b in out
    assert "undecodable: field `price`" in out and "base=ETH" in out
    code, out, _ = cli(capsys, "dlq", "list", *opts(rb), "--json", "--limit", "1")
    assert code == 0
    rows = json.loads(out)
    assert [row["id"] for row in rows] == [a]
    assert rows[0]["dlq_error"] == "undecodable: field `price`"


def test_dlq_replay_ids(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    fields = {k: str(v) for k, v in price().items()}
    a = add_dead(r, rb, fields)
    b = add_dead(r, rb, price(base="ETH"))
    code, out, err = cli(capsys, "dlq", "replay", *opts(rb), a)
    assert code == 0, err
    prefix = f"replayed {a} -> {key(rb, 'events')} "
    assert out.startswith(prefix)
    new_id = out.strip()[len(prefix) :]
    assert r.xrange(key(rb, "events")) == [(new_id, fields)]
    assert [i for i, _ in r.xrange(key(rb, "dlq"))] == [b]


def test_dlq_replay_all(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    add_dead(r, rb, price())
    add_dead(r, rb, order(), source="orders")
    code, out, err = cli(capsys, "dlq", "replay", *opts(rb), "--all")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert r.xlen(key(rb, "events")) == 1 and r.xlen(key(rb, "orders")) == 1
    assert r.xlen(key(rb, "dlq")) == 0


@pytest.mark.parametrize("action", ["replay", "purge"])
@pytest.mark.parametrize("argv", [[], ["1-0", "--all"]], ids=["neither", "both"])
def test_dlq_replay_or_purge_needs_ids_or_all(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, action: str, argv: list[str]
) -> None:
    a = add_dead(r, rb, price())
    code, out, err = cli(capsys, "dlq", action, *opts(rb), *argv)
    assert code == 2 and out == ""
    assert "give dead-letter ids or --all" in err
    assert [i for i, _ in r.xrange(key(rb, "dlq"))] == [a]


def test_dlq_replay_unknown_id_exit_1(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    a = add_dead(r, rb, price())
    code, out, err = cli(capsys, "dlq", "replay", *opts(rb), a, "1-1")
    assert code == 1 and out == ""
    assert "no dead letter with id 1-1" in err
    assert r.xlen(key(rb, "dlq")) == 1 and r.exists(key(rb, "events")) == 0


def test_dlq_replay_refuses_a_non_input_source(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    a = add_dead(r, rb, price(), source="nav")
    code, _, err = cli(capsys, "dlq", "replay", *opts(rb), "--all")
    assert code == 1
    assert a in err and "replayed" in err and key(rb, "nav") in err
    assert r.xlen(key(rb, "dlq")) == 1
    assert r.exists(key(rb, "nav"), key(rb, "events")) == 0


def test_dlq_purge(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    a, b, c = (add_dead(r, rb, price(base=x)) for x in "ABC")
    code, out, err = cli(capsys, "dlq", "purge", *opts(rb), a, c)
    assert code == 0, err
    assert out.strip() == "purged 2 dead letters"
    assert [i for i, _ in r.xrange(key(rb, "dlq"))] == [b]
    code, _, err = cli(capsys, "dlq", "purge", *opts(rb), "1-1")
    assert code == 1 and "no dead letter with id 1-1" in err
    assert r.xlen(key(rb, "dlq")) == 1
    code, out, _ = cli(capsys, "dlq", "purge", *opts(rb), "--all")
    assert code == 0 and out.strip() == "purged 1 dead letters"
    assert r.exists(key(rb, "dlq")) == 0


# --- trim ---------------------------------------------------------------------------------------


def _trim_setup(r: redis.Redis, rb: Any) -> None:
    events = key(rb, "events")
    for i in range(1, 7):
        r.xadd(events, {"n": str(i)}, id=f"{i}-0")
    r.xgroup_create(events, "navstream", id="0")
    r.xreadgroup("navstream", "w", {events: ">"}, count=4)
    r.xack(events, "navstream", "1-0", "2-0", "4-0")  # 3-0 pending, 5-0 and 6-0 undelivered


def test_trim_dry_run(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    _trim_setup(r, rb)
    code, out, err = cli(capsys, "trim", "events", *opts(rb), "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"would trim {key(rb, 'events')} below 3-0 (length was 6)"
    assert lines[1].split() == ["group", "navstream:", "oldest", "pending", "3-0"]
    assert r.xlen(key(rb, "events")) == 6


def test_trim(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    _trim_setup(r, rb)
    code, out, err = cli(capsys, "trim", "events", *opts(rb))
    assert code == 0, err
    assert out.splitlines()[0] == f"trimmed 2 entries of {key(rb, 'events')} below 3-0 (length was 6)"
    assert [i for i, _ in r.xrange(key(rb, "events"))] == ["3-0", "4-0", "5-0", "6-0"]
    assert [p["message_id"] for p in r.xpending_range(key(rb, "events"), "navstream", "-", "+", 10)] == ["3-0"]


@pytest.mark.parametrize("stream", ["events", "orders"])
def test_trim_without_group_exit_1(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, stream: str) -> None:
    r.xadd(key(rb, stream), {"n": "1"}, id="1-0")
    code, out, err = cli(capsys, "trim", stream, *opts(rb))
    assert code == 1 and out == ""
    assert err.startswith("navstream: error: ")
    assert f"{key(rb, stream)} has no consumer group" in err and "nothing is trimmed" in err
    assert r.xlen(key(rb, stream)) == 1


# --- plugins ------------------------------------------------------------------------------------


def test_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "plugins")
    assert code == 0, err
    loaded = [line.split()[:3] for line in out.splitlines() if line.startswith("loaded")]
    assert ["loaded", "nav", "navstream.plugins.nav"] in loaded
    assert ["loaded", "source_monitor", "navstream.plugins.source_monitor"] in loaded
    assert "hooks:" in out and "navstream_status" in out


def test_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "plugins", "--json")
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    sm = rows["source_monitor"]
    assert sm["loaded"] is True
    assert sm["module"] == "navstream.plugins.source_monitor"
    assert sm["origin"] == "entry point"
    assert "navstream_events" in sm["hooks"] and "navstream_config_sections" in sm["hooks"]


def test_plugins_disabled_by_env_subprocess() -> None:
    proc = run_proc("plugins", "--json", env=clean_env(NAVSTREAM_PLUGINS=""))
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["source_monitor"]["loaded"] is False
    assert rows["source_monitor"]["hooks"] == []
    assert rows["nav"]["loaded"] is False
    proc = run_proc("plugins", env=clean_env(NAVSTREAM_PLUGINS=""))
    assert proc.returncode == 0
    states = [line.split()[:2] for line in proc.stdout.splitlines() if not line.startswith(" ")]
    assert ["disabled", "source_monitor"] in states and ["disabled", "nav"] in states
    assert not any(state == "loaded" for state, _ in states)


def test_plugins_disabled_by_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[plugins]\ndisabled = ["source_monitor"]\n')
    code, out, _ = cli(capsys, "plugins", "--config", str(cfg), "--json")
    assert code == 0
    assert {r["name"]: r["loaded"] for r in json.loads(out)}["source_monitor"] is False


def test_plugins_with_a_module_that_does_not_import(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[plugins]\nmodules = ["no_such_module_for_navstream"]\n')
    code, out, err = cli(capsys, "plugins", "--config", str(cfg))
    assert code == 2 and out == ""
    assert "no_such_module_for_navstream" in err and "failed to load" in err


# --- config check -------------------------------------------------------------------------------


def test_config_check_valid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "ok.toml"
    cfg.write_text(
        '[redis]\nurl = "redis://127.0.0.1:6379/0"\nprefix = "desk"\n\n'
        "[consumer]\nbatch_size = 100\n\n[source_monitor]\nmax_silence_s = 30\n"
    )
    code, out, err = cli(capsys, "config", "check", str(cfg))
    assert code == 0, err
    assert out.splitlines()[0] == f"{cfg}: ok"
    plugins_line = next(line for line in out.splitlines() if line.strip().startswith("plugins:"))
    assert {"nav", "risk", "source_monitor", "sources"} <= set(plugins_line.split(":", 1)[1].replace(",", " ").split())
    assert "prefix=desk" in out and "[source_monitor] ok" in out
    assert "[nav] ok" in out


def test_config_check_empty_file_is_valid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "empty.toml"
    cfg.write_text("")
    code, out, _ = cli(capsys, "config", "check", str(cfg))
    assert code == 0 and out.startswith(f"{cfg}: ok")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[redis]\nurll = "redis://x"\n', ["unknown field `urll`", "[redis]"]),
        ("[consumer]\nbatch_sise = 5\n", ["unknown field `batch_sise`", "[consumer]"]),
        ("[source_monitor]\nmax_silense_s = 3\n", ["unknown field `max_silense_s`", "[source_monitor]"]),
        ("[nosuch]\na = 1\n", ["unknown section [nosuch]"]),
        ("[redis\nurl =", ["not valid TOML"]),
        ("top = 1\n", ["top"]),
        ("[consumer]\nbatch_size = 0\n", ["consumer.batch_size"]),
        ('[redis]\nurl = "http://127.0.0.1"\n', ["url"]),
        ("redis = 5\n", ["[redis] must be a table"]),
    ],
    ids=[
        "unknown-key",
        "unknown-consumer-key",
        "unknown-plugin-key",
        "unknown-section",
        "invalid-toml",
        "top-level-value",
        "out-of-range",
        "bad-url",
        "section-not-table",
    ],
)
def test_config_check_invalid(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, words: list[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    code, out, err = cli(capsys, "config", "check", str(cfg))
    assert code == 2
    assert out == ""
    assert err.startswith(f"navstream: error: {cfg}")
    for word in words:
        assert word in err


def test_config_check_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    code, out, err = cli(capsys, "config", "check", str(missing))
    assert code == 2 and out == ""
    assert str(missing) in err and "cannot read" in err


def test_config_check_ignores_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "ok.toml"
    cfg.write_text('[redis]\nprefix = "fromfile"\n')
    monkeypatch.setenv("NAVSTREAM_PREFIX", "fromenv")
    code, out, _ = cli(capsys, "config", "check", str(cfg))
    assert code == 0 and "prefix=fromfile" in out


# --- unreachable Redis and secrets --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--json"],
        ["dlq", "list"],
        ["dlq", "purge", "--all"],
        ["trim", "events"],
        ["publish", "type=price", "base=BTC", "quote=USDT", "price=1", "source=m", "--stamp"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_unreachable_redis_exit_3(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = cli(capsys, *argv, "--redis-url", UNREACHABLE)
    assert code == 3
    assert out == ""
    assert f"Redis at {UNREACHABLE} is unreachable" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--json"],
        ["dlq", "list"],
        ["dlq", "replay", "--all"],
        ["trim", "orders", "--dry-run"],
        ["publish", "type=price", "base=BTC", "quote=USDT", "price=1", "source=m", "--stamp"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_password_never_printed_in_process(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = cli(capsys, "--log-level", "DEBUG", *argv, "--redis-url", SECRET_URL)
    assert code == 3
    assert "s3cret" not in out + err
    assert "redis://user:***@127.0.0.1:1/0" in err


def test_password_never_printed_subprocess() -> None:
    proc = run_proc("--log-level", "DEBUG", "status", "--redis-url", SECRET_URL)
    assert proc.returncode == 3
    assert "unreachable" in proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr


def test_password_from_the_environment_never_printed() -> None:
    proc = run_proc("status", env=clean_env(NAVSTREAM_REDIS_URL=SECRET_URL))
    assert proc.returncode == 3
    assert "s3cret" not in proc.stdout + proc.stderr


def test_password_never_printed_by_config_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "pw.toml"
    cfg.write_text(f'[redis]\nurl = "{SECRET_URL}"\n')
    code, out, err = cli(capsys, "config", "check", str(cfg))
    assert code == 2, "a password in a file's url is refused (docs/security.md)"
    assert "s3cret" not in out + err and "NAVSTREAM_REDIS_PASSWORD" in err
    cfg.write_text(f'[redis]\nurl = "{SECRET_URL}"\nprefix = "bad prefix!"\n')
    code, out, err = cli(capsys, "config", "check", str(cfg))
    assert code == 2
    assert "s3cret" not in out + err


def test_password_rejected_by_the_server_never_printed(capsys: pytest.CaptureFixture[str], rb: Any) -> None:
    host = rb.url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    code, out, err = cli(capsys, "status", "--redis-url", f"redis://nosuchuser:s3cret@{host}/0", "--prefix", rb.prefix)
    assert code != 0
    assert "s3cret" not in out + err


def test_password_in_the_query_string_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "status", "--redis-url", "redis://127.0.0.1:1/0?password=s3cret")
    assert code == 3
    assert "s3cret" not in out + err


def test_status_renders_plugin_records_as_tables() -> None:
    """A plugin section's lists of records read as tables (NAV scopes, sources), not JSON."""
    from navstream.render import render_section

    text = render_section(
        {
            "quote": "USD",
            "scopes": [
                {"scope": "account", "name": "okx/a", "nav": "12.5", "status": "partial", "missing": ["okx/a/SOL"]},
                {"scope": "total", "name": "total", "nav": "12.5", "status": "partial", "missing": []},
            ],
            "sources": [],
        }
    )
    lines = text.splitlines()
    assert lines[0] == 'quote: "USD"' and lines[1] == "scopes:"
    assert lines[2].split() == ["scope", "name", "nav", "(USD)", "status", "missing"]  # money: its currency
    assert lines[4].split() == ["account", "okx/a", "12.50", "partial", "okx/a/SOL"]  # as navstream.display shows it
    assert lines[5].split() == ["total", "total", "12.50", "partial", "-"]
    assert lines[-1] == "sources: none"
    assert render_section(None) == "null"

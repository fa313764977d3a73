"""Structured logging (issue 8): JSON lines through a queue, repeats counted not written,
secrets scrubbed, files appended, rotated and compressed by the writer thread."""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from navstream.cli import main
from navstream.logs import redact, setup_logging, stop_logging

log = logging.getLogger("navstream.test")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("INFO", stream, repeat_window_s=60)
    yield stream
    stop_logging()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    stop_logging()  # flushes the writer thread
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_json_with_the_event_name_and_extra_fields(captured: io.StringIO) -> None:
    log.info("batch written", extra={"event": "batch_written", "size": 3})
    (line,) = lines(captured)
    assert (line["level"], line["logger"], line["msg"], line["event"], line["size"]) == (
        "info",
        "navstream.test",
        "batch written",
        "batch_written",
        3,
    )
    assert isinstance(line["ts"], float)


def test_identical_errors_are_counted_not_repeated(captured: io.StringIO) -> None:
    for _ in range(50):
        log.error("redis unreachable, retrying", extra={"event": "redis_unreachable"})
    log.error("another error", extra={"event": "other"})
    for _ in range(3):
        log.info("infos are never suppressed", extra={"event": "info"})
    got = lines(captured)
    assert [g["event"] for g in got] == ["redis_unreachable", "other", "info", "info", "info"]


def test_the_next_repeat_after_the_window_says_how_many_were_suppressed() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream, repeat_window_s=0.05)
    for _ in range(5):
        log.warning("write failed", extra={"event": "write_failed"})
    import time

    time.sleep(0.06)
    log.warning("write failed", extra={"event": "write_failed"})
    got = lines(stream)
    assert len(got) == 2 and "repeated" not in got[0] and got[1]["repeated"] == 4


def test_secrets_are_scrubbed_from_messages_fields_and_tracebacks(captured: io.StringIO) -> None:
    url = "rediss://navstream:hunter2@redis.internal:6380/0"
    log.error(
        "cannot connect to %s",
        url,
        extra={"event": "x", "url": url, "query": "GET /fapi/v3/account?timestamp=1&signature=abc123"},
    )
    try:
        raise RuntimeError(f"auth failed for {url}")
    except RuntimeError:
        log.exception("boom", extra={"event": "y"})
    text = captured.getvalue() + "".join(json.dumps(x) for x in lines(captured))
    assert "hunter2" not in text and "abc123" not in text
    first, second = lines_again = [json.loads(x) for x in captured.getvalue().splitlines()]
    assert first["msg"] == "cannot connect to rediss://navstream:***@redis.internal:6380/0"
    assert first["url"] == "rediss://navstream:***@redis.internal:6380/0"
    assert first["query"].endswith("signature=***")
    assert "RuntimeError: auth failed for rediss://navstream:***@" in second["exc"]
    assert len(lines_again) == 2


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact("NAV of binance/main is 100 USD") == "NAV of binance/main is 100 USD"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact("redis://:pw@h:1") == "redis://:***@h:1"


def test_a_log_file_is_appended_rotated_and_compressed(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "navstream.log"
    path.parent.mkdir()
    path.write_text('{"earlier": true}\n')
    setup_logging("INFO", file=str(path), max_bytes=2_000, backups=2)
    for n in range(200):
        log.info("line %d", n, extra={"event": "n", "pad": "x" * 50})
    stop_logging()
    rotated = sorted(p.name for p in path.parent.iterdir())
    assert rotated == ["navstream.log", "navstream.log.1.gz", "navstream.log.2.gz"]
    newest = gzip.decompress((path.parent / "navstream.log.1.gz").read_bytes()).decode().splitlines()
    assert all(json.loads(x)["event"] == "n" for x in newest)
    current = [json.loads(x) for x in path.read_text().splitlines()]
    assert current[-1]["msg"] == "line 199"


def test_an_unwritable_log_file_is_a_clear_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--log-file", str(blocker / "x.log"), "plugins"]) == 2
    assert "cannot open log file" in capsys.readouterr().err


def test_long_running_commands_log_to_stdout_one_shots_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    import navstream.logs

    chosen: list[Any] = []
    monkeypatch.setattr(navstream.logs, "setup_logging", lambda level, stream=None, **kw: chosen.append(stream))
    monkeypatch.delenv("NAVSTREAM_LOG_STREAM", raising=False)
    monkeypatch.setenv("NAVSTREAM_PLUGINS", "")
    main(["ingest", "--redis-url", "redis://127.0.0.1:6379/0"])  # fails (no sources); logging came first
    main(["plugins"])  # a one-shot command's logs: short human lines on stderr (tests/cli/test_cli_errors.py)
    assert chosen == [sys.stdout]
    monkeypatch.setenv("NAVSTREAM_LOG_STREAM", "stderr")
    main(["ingest", "--redis-url", "redis://127.0.0.1:6379/0"])
    assert chosen[-1] is sys.stderr
    monkeypatch.setenv("NAVSTREAM_LOG_STREAM", "sideways")
    assert main(["plugins"]) == 2
    assert "NAVSTREAM_LOG_STREAM must be stdout or stderr" in capsys.readouterr().err


# --- the record format (issue 17): numbers as numbers, money as exact text, ISO time beside ts ---


def strict_json(line: str) -> dict[str, Any]:
    """A line as a strict JSON parser reads it: ``NaN``/``Infinity`` are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    parsed: dict[str, Any] = json.loads(line, parse_constant=refuse)
    return parsed


def formatted(**extra: Any) -> dict[str, Any]:
    """One record with ``extra``, through the formatter the writer thread uses."""
    from navstream.logs import JsonFormatter

    record = logging.LogRecord("navstream.test", logging.INFO, __file__, 1, "m", None, None)
    record.__dict__.update(extra)
    return strict_json(JsonFormatter().format(record))


def test_extra_values_keep_their_json_types(captured: io.StringIO) -> None:
    huge = 2**200 + 1
    log.info(
        "typed",
        extra={
            "event": "typed",
            "count": 3,
            "port": 8080,
            "duration_ms": 12.5,
            "nav": Decimal("18889978.6504"),
            "tiny": Decimal("0.000000012345678901234567890"),
            "ok": True,
            "stale": False,
            "huge": huge,
            "nothing": None,
            "nested": {"size": 7, "price": Decimal("97012.50"), "flags": [True, 0]},
        },
    )
    stop_logging()
    (line,) = [strict_json(x) for x in captured.getvalue().splitlines()]
    assert line["count"] == 3 and type(line["count"]) is int
    assert line["port"] == 8080 and type(line["port"]) is int
    assert line["duration_ms"] == 12.5 and type(line["duration_ms"]) is float
    assert line["nav"] == "18889978.6504" and line["tiny"] == "0.000000012345678901234567890"
    assert line["ok"] is True and line["stale"] is False
    assert line["huge"] == huge and type(line["huge"]) is int  # every digit, not a float's 53 bits
    assert line["nothing"] is None
    assert line["nested"] == {"size": 7, "price": "97012.50", "flags": [True, 0]}


@pytest.mark.parametrize(
    ("value", "text"),
    [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")],
    ids=["nan", "inf", "-inf"],
)
def test_a_non_finite_float_never_makes_invalid_json(value: float, text: str) -> None:
    line = formatted(event="x", ratio=value, inside={"values": [1.5, value]})
    assert line["ratio"] == text and line["inside"] == {"values": [1.5, text]}


def test_an_int_past_the_decimal_digit_limit_is_exact_hex_not_a_lost_line() -> None:
    enormous = 10**5000 + 7
    line = formatted(event="x", enormous=enormous, negative=-enormous)
    assert int(line["enormous"], 16) == enormous and int(line["negative"], 16) == -enormous


def test_decimal_specials_and_other_objects_are_text() -> None:
    line = formatted(
        event="x",
        nan=Decimal("NaN"),
        inf=Decimal("-Infinity"),
        exp=Decimal("1E+3"),
        small=Decimal("1E-8"),
        zero=Decimal("0E-8"),
        absurd=Decimal("1E+999999"),
        path=Path("/var/log/navstream.log"),
        kinds=frozenset({"b", "a"}),
    )
    assert (line["nan"], line["inf"], line["exp"], line["small"], line["zero"]) == (
        "NaN",
        "-Infinity",
        "1000",
        "0.00000001",
        "0.00000000",
    )
    assert line["absurd"] == "1E+999999"  # exact, short: not a million zeros
    assert (line["path"], line["kinds"]) == ("/var/log/navstream.log", ["a", "b"])


@pytest.mark.parametrize(
    ("created", "ts", "iso"),
    [
        (1796578368.1234, 1796578368.123, "2026-12-06T17:32:48.123Z"),
        (1796578368.9996, 1796578369.0, "2026-12-06T17:32:49.000Z"),  # rounds into the next second
        (0.0, 0.0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_time_is_iso_8601_utc_ms_and_says_the_same_instant_as_ts(created: float, ts: float, iso: str) -> None:
    from navstream.logs import JsonFormatter

    record = logging.LogRecord("navstream.test", logging.INFO, __file__, 1, "m", None, None)
    record.created = created
    line = strict_json(JsonFormatter().format(record))
    assert (line["ts"], line["time"]) == (ts, iso)
    assert list(line)[:5] == ["ts", "time", "level", "logger", "msg"]


def test_a_logged_line_has_time_in_utc_whatever_the_local_zone(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: a local-time bug shows in hours and minutes
    time.tzset()
    try:
        log.info("now", extra={"event": "now"})
        (line,) = lines(captured)
    finally:
        monkeypatch.undo()
        time.tzset()
    parsed = datetime.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
    assert abs(parsed.timestamp() - line["ts"]) < 0.0006


def test_an_extra_field_never_replaces_the_lines_own(captured: io.StringIO) -> None:
    log.info("x", extra={"event": "x", "ts": 5, "time": "yesterday", "level": "fine"})
    (line,) = lines(captured)
    assert line["ts"] > 1e9 and line["time"].endswith("Z") and line["level"] == "info"
    assert (line["extra_ts"], line["extra_time"], line["extra_level"]) == (5, "yesterday", "fine")


def test_secrets_are_scrubbed_from_objects_and_sets_too(captured: io.StringIO) -> None:
    class Endpoint:
        def __str__(self) -> str:
            return "rediss://navstream:hunter2@redis.internal:6380/0"

    log.error("x", extra={"event": "x", "endpoint": Endpoint(), "urls": {"https://h/p?api_key=abc123"}})
    (line,) = lines(captured)
    assert "hunter2" not in json.dumps(line) and "abc123" not in json.dumps(line)
    assert line["endpoint"] == "rediss://navstream:***@redis.internal:6380/0"
    assert line["urls"] == ["https://h/p?api_key=***"]


@pytest.mark.real_redis
def test_consumer_stopped_carries_its_counters_as_numbers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uuid

    import redis as sync_redis
    from support import REDIS_URL

    prefix = f"nstest-logs-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("NAVSTREAM_PLUGINS", "")
    monkeypatch.delenv("NAVSTREAM_LOG_STREAM", raising=False)
    try:
        assert main(["run", "--redis-url", REDIS_URL, "--prefix", prefix, "--until-idle", "0.2"]) == 0
    finally:
        client = sync_redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    records = [strict_json(x) for x in capsys.readouterr().out.splitlines()]
    (stopped,) = [r for r in records if r.get("event") == "consumer_stopped"]
    for name in ("processed", "batches", "dlq_length", "started_ms", "writes_refused", f"lag:{prefix}:events"):
        assert type(stopped[name]) is int, (name, stopped[name])
    assert type(stopped["last_batch_duration_ms"]) is float and stopped["last_error"] == ""

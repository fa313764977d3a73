"""Structured logging (issue 8): JSON lines through a queue, repeats counted not written,
secrets scrubbed, files appended, rotated and compressed by the writer thread."""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterator
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
    main(["plugins"])
    assert chosen == [sys.stdout, sys.stderr]
    monkeypatch.setenv("NAVSTREAM_LOG_STREAM", "stderr")
    main(["ingest", "--redis-url", "redis://127.0.0.1:6379/0"])
    assert chosen[-1] is sys.stderr
    monkeypatch.setenv("NAVSTREAM_LOG_STREAM", "sideways")
    assert main(["plugins"]) == 2
    assert "NAVSTREAM_LOG_STREAM must be stdout or stderr" in capsys.readouterr().err

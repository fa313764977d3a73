"""Errors, never tracebacks: the top-level handler of ``navstream.cli.main``, ``--debug``, Ctrl-C,
the tracebacks that escaped before (``publish --file`` with invalid UTF-8, ``dlq replay`` racing
``dlq purge``, a malformed DLQ id), and what a one-shot command prints beside its answer (short
human lines on stderr, not JSON log records; ``run`` and ``ingest`` keep their JSON).

Commands that need a server talk to the real Redis (``real_backend``: its URL and a private
prefix). Every command with every kind of bad input: tests/cli/test_cli_bad_input.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from support.cli import cli, key, opts

import navstream.cli

UNREACHABLE = "redis://127.0.0.1:1/0"


def env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")} | extra


def add_dead(r: redis.Redis, rb: Any, base: str) -> str:
    fields = {"type": "price", "base": base, "quote": "USDT", "price": "1", "source": "m", "ts": "1"}
    return str(r.xadd(key(rb, "dlq"), {**fields, "dlq_stream": key(rb, "events"), "dlq_id": "1-0", "dlq_error": "x"}))


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("navstream: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- the handler ----------------------------------------------------------------------------------


def _raising(exc: BaseException) -> Any:
    def command(args: Any) -> int:
        raise exc

    return command


def test_an_unexpected_exception_is_one_line_naming_its_type_and_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(navstream.cli, "cmd_plugins", _raising(KeyError("the key")))
    code, out, err = cli(capsys, "plugins")
    line = one_error_line(err)
    assert code == 1 and out == ""
    assert "unexpected KeyError: 'the key'" in line and "--debug" in line and "NAVSTREAM_DEBUG=1" in line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_adds_the_traceback_before_the_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(navstream.cli, "cmd_plugins", _raising(RuntimeError("boom")))
    if how == "env":
        monkeypatch.setenv("NAVSTREAM_DEBUG", "1")
    code, out, err = cli(capsys, *(["--debug"] if how == "flag" else []), "plugins")
    assert code == 1
    assert err.startswith("Traceback (most recent call last):") and "RuntimeError: boom" in err
    assert err.splitlines()[-1].startswith("navstream: error: unexpected RuntimeError: boom")


def test_debug_off_by_env_zero_or_empty(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(navstream.cli, "cmd_plugins", _raising(RuntimeError("boom")))
    for value in ("0", "", " "):
        monkeypatch.setenv("NAVSTREAM_DEBUG", value)
        one_error_line(cli(capsys, "plugins")[2])


def test_debug_shows_the_traceback_of_a_known_error_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "--debug", "status", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "Traceback" in err and "ConfigError" in err
    assert err.splitlines()[-1].startswith("navstream: error: ")


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        (redis.exceptions.ConnectionError("gone"), 3, "Redis is unreachable: gone"),
        (redis.exceptions.TimeoutError("slow"), 3, "Redis is unreachable: slow"),
        (redis.exceptions.ResponseError("WRONGTYPE x"), 1, "Redis refused the operation: WRONGTYPE x"),
        (PermissionError(13, "Permission denied", "/x/y"), 1, "Permission denied (/x/y)"),
        (ValueError(""), 1, "unexpected ValueError (a bug"),
    ],
)
def test_known_exceptions_map_to_their_documented_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, exc: Exception, code: int, says: str
) -> None:
    monkeypatch.setattr(navstream.cli, "cmd_plugins", _raising(exc))
    got, _, err = cli(capsys, "plugins")
    assert got == code and one_error_line(err).startswith(f"navstream: error: {says}")


def test_a_hostile_message_stays_one_line_with_no_escape_sequence_and_no_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "line one\nline two\r\n\x1b[2J\x07 redis://u:hunter22@h:6379/0 " + "x" * 5000
    monkeypatch.setattr(navstream.cli, "cmd_plugins", _raising(RuntimeError(text)))
    _, _, err = cli(capsys, "plugins")
    line = one_error_line(err)
    assert "line one line two \\x1b[2J\\x07" in line and "\x1b" not in line
    assert "hunter22" not in line and "u:***@h" in line
    assert len(line) < 800  # an unexpected message is a hint; --debug has the rest


def test_keyboard_interrupt_is_one_line_and_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(navstream.cli, "cmd_plugins", _raising(KeyboardInterrupt()))
    code, out, err = cli(capsys, "plugins")
    assert code == 130 and out == "" and err == "navstream: interrupted\n"


def test_ctrl_c_as_a_shell_sends_it() -> None:
    """SIGINT while ``publish --file -`` waits for stdin: exit 130, one line, no traceback."""
    script = (
        "import signal, sys, navstream.cli\n"
        # a shell's background job starts with SIGINT ignored; a terminal's foreground job does not
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "print('ready', flush=True)\n"
        "sys.exit(navstream.cli.main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "publish", "--redis-url", UNREACHABLE, "--file", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.5)  # into main: a Ctrl-C before it is the interpreter's (imports)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)  # stdin stays open: Ctrl-C itself must end it, not an end of file
    finally:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 130, err
    assert err == "navstream: interrupted\n" and out == ""


def test_help_documents_the_exit_codes_and_debug(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--help")
    text = " ".join(out.split())
    assert code == 0
    for said in ("--debug", "NAVSTREAM_DEBUG=1", "1 failed", "2 bad input", "3 Redis unreachable", "130", "141"):
        assert said in text


def test_the_operations_page_documents_every_exit_code() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    section = doc.split("## The command line", 1)[1].split("\n## ", 1)[0]
    for code in ("`0`", "`1`", "`2`", "`3`", "`130`", "`141`"):
        assert code in section
    assert "--debug" in section and "NAVSTREAM_DEBUG" in section


# --- publish ----------------------------------------------------------------------------------


def test_publish_file_with_invalid_utf8_names_file_and_byte_and_publishes_nothing(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, tmp_path: Path
) -> None:
    good = json.dumps({"type": "price", "base": "BTC", "quote": "USDT", "price": "1", "source": "m", "ts": 1})
    path = tmp_path / "in.jsonl"
    path.write_bytes(good.encode() + b"\n" + good.encode()[:20] + b"\xff\xfe" + b"\n")
    code, out, err = cli(capsys, "publish", *opts(rb), "--file", str(path))
    line = one_error_line(err)
    assert code == 2 and out == ""
    assert f"{path}: not UTF-8 at byte {len(good) + 1 + 20} (line 2)" in line
    assert r.exists(key(rb, "events"), key(rb, "orders")) == 0


def test_publish_stdin_with_invalid_utf8_as_a_subprocess(rb: Any, r: redis.Redis) -> None:
    head = b'{"type": "price", "base": "'
    proc = subprocess.run(
        [sys.executable, "-m", "navstream.cli", "publish", *opts(rb), "--file", "-"],
        input=head + b'\xe9"}\n',
        capture_output=True,
        timeout=60,
        env=env(),
    )
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode() == (
        f"navstream: error: nothing published: <stdin>: not UTF-8 at byte {len(head)} (line 1): "
        "invalid continuation byte b'\\xe9'\n"
    )
    assert r.exists(key(rb, "events")) == 0


def test_publish_without_ts_suggests_stamp(capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis) -> None:
    fields = ["type=price", "base=BTC", "quote=USDT", "price=1", "source=manual"]
    code, out, err = cli(capsys, "publish", *opts(rb), *fields)
    assert code == 2 and out == ""
    assert one_error_line(err).endswith("missing required field `ts` (--stamp sets a missing ts to now)")
    assert cli(capsys, "publish", *opts(rb), *fields, "--stamp")[0] == 0
    assert r.xlen(key(rb, "events")) == 1


def test_publish_lists_several_problems_under_one_error_line(
    capsys: pytest.CaptureFixture[str], rb: Any, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"type": "price"}\n[1]\nnot json\n{"a": {"b": 1}}\n')
    code, out, err = cli(capsys, "publish", *opts(rb), "--file", str(path))
    lines = err.splitlines()
    assert code == 2 and out == "" and "Traceback" not in err
    assert lines[0] == "navstream: error: nothing published: 3 problems:"
    assert [line[: len(f"  {path}:2: ")] for line in lines[1:]] == [f"  {path}:{n}: " for n in (2, 3, 4)]


# --- dlq --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["abc", "1-x", "1", "1-0-0", "１-0", f"{2**64}-0"])
def test_a_malformed_dlq_id_is_bad_input_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, bad: str
) -> None:
    a = add_dead(r, rb, "A")
    for action in ("replay", "purge"):
        code, out, err = cli(capsys, "dlq", action, *opts(rb), a, bad)
        assert code == 2 and out == ""
        assert f"{bad!r} is not a dead-letter id" in one_error_line(err)
    assert [i for i, _ in r.xrange(key(rb, "dlq"))] == [a] and r.exists(key(rb, "events")) == 0


def test_dlq_replay_racing_a_purge_reports_each_entry(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another operator purges between this replay's read and its move: the entry is reported
    as not replayed, the others are replayed, and the command exits 1 with one error line."""
    import navstream.ops.admin as admin

    a, b, c = (add_dead(r, rb, x) for x in "ABC")
    select = admin._select

    async def then_purged(app: Any, ids: list[str] | None) -> Any:
        rows = await select(app, ids)
        r.xdel(key(rb, "dlq"), b)  # `navstream dlq purge B`, from another terminal
        return rows

    monkeypatch.setattr(admin, "_select", then_purged)
    code, out, err = cli(capsys, "dlq", "replay", *opts(rb), "--all")
    assert code == 1
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [["replayed", a], ["replayed", c], ["not", "replayed"]]
    assert lines[2].startswith(f"not replayed {b}: gone from the DLQ meanwhile")
    assert "1 of 3 dead letters were gone" in one_error_line(err) and "2 replayed" in err
    assert [f["base"] for _, f in r.xrange(key(rb, "events"))] == ["A", "C"]
    assert r.xlen(key(rb, "dlq")) == 0


def test_dlq_replay_of_ids_all_purged_meanwhile(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import navstream.ops.admin as admin

    a = add_dead(r, rb, "A")
    move_back = admin._move_back

    async def purged_first(app: Any, entry_id: str, target: str, original: Any) -> Any:
        r.delete(key(rb, "dlq"))  # `navstream dlq purge --all`
        return await move_back(app, entry_id, target, original)

    monkeypatch.setattr(admin, "_move_back", purged_first)
    code, out, err = cli(capsys, "dlq", "replay", *opts(rb), a)
    assert code == 1 and out.startswith(f"not replayed {a}: gone")
    assert "1 of 1 dead letters were gone" in one_error_line(err)
    assert r.exists(key(rb, "events")) == 0


def test_dlq_purge_racing_a_replay_says_how_many_were_gone(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import navstream.ops.admin as admin

    a, b = (add_dead(r, rb, x) for x in "AB")
    select = admin._select

    async def then_gone(app: Any, ids: list[str] | None) -> Any:
        rows = await select(app, ids)
        r.xdel(key(rb, "dlq"), a)  # replayed from another terminal
        return rows

    monkeypatch.setattr(admin, "_select", then_gone)
    code, out, err = cli(capsys, "dlq", "purge", *opts(rb), a, b, a)
    assert (code, out, err) == (0, "purged 1 dead letters (1 gone from the DLQ meanwhile)\n", "")
    assert r.xlen(key(rb, "dlq")) == 0


# --- what a one-shot command prints beside its answer ----------------------------------------------


def test_risk_halt_prints_its_answer_and_no_json_log_line(
    capsys: pytest.CaptureFixture[str], rb: Any, r: redis.Redis
) -> None:
    code, out, err = cli(capsys, "risk", "halt", *opts(rb), "--reason", "incident 42", "--by", "ops")
    assert code == 0, err
    assert out == "trading of the desk is now halted (by ops:ops: incident 42)\n"
    assert err == ""  # the trading_state_set alert is in P:alerts, not echoed as a JSON record
    ((_, alert),) = r.xrange(key(rb, "alerts"))
    assert alert["code"] == "trading_state_set"
    cli(capsys, "risk", "resume", *opts(rb), "--reason", "done", "--by", "ops")


def _logging_command(*records: tuple[int, str]) -> Any:
    def command(args: Any) -> int:
        log = logging.getLogger("navstream.test")
        for level, message in records:
            log.log(level, message, extra={"event": "test_event", "n": 1})
        logging.getLogger("navstream.alerts").critical("an alert", extra={"event": "alert"})
        print("the answer")
        return 0

    return command


def test_a_one_shot_commands_warnings_are_short_human_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        navstream.cli,
        "cmd_plugins",
        _logging_command(
            (logging.INFO, "an info"),
            (logging.WARNING, "disk nearly\nfull at redis://u:hunter22@h/0"),
            (logging.ERROR, "a failure"),
        ),
    )
    code, out, err = cli(capsys, "plugins")
    assert code == 0 and out == "the answer\n"
    assert err == "navstream: warning: disk nearly full at redis://u:***@h/0\nnavstream: error: a failure\n"
    # --log-level says how much: INFO shows the info too, still as a human line
    code, out, err = cli(capsys, "--log-level", "INFO", "plugins")
    assert err.splitlines()[0] == "navstream: info: an info" and "{" not in err


def test_a_one_shot_command_writes_json_records_where_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(navstream.cli, "cmd_plugins", _logging_command((logging.WARNING, "to a file")))
    log = tmp_path / "cli.log"
    code, out, err = cli(capsys, "--log-file", str(log), "plugins")
    assert code == 0 and out == "the answer\n" and err == ""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["msg"], x["event"]) for x in records] == [("to a file", "test_event"), ("an alert", "alert")]
    monkeypatch.setenv("NAVSTREAM_LOG_STREAM", "stderr")
    code, out, err = cli(capsys, "plugins")
    assert [json.loads(line)["msg"] for line in err.splitlines()] == ["to a file", "an alert"]


def test_ingest_and_run_keep_their_json_logs_on_stdout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("cmd_ingest", "cmd_run"):

        async def command(args: Any) -> int:
            logging.getLogger("navstream.test").info("working", extra={"event": "test_event"})
            return 0

        monkeypatch.setattr(navstream.cli, name, command)
    for command_name in ("ingest", "run"):
        code, out, err = cli(capsys, command_name)
        assert code == 0 and err == ""
        (record,) = [json.loads(line) for line in out.splitlines()]
        assert record["msg"] == "working" and record["level"] == "info"

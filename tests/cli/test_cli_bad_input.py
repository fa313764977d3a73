"""Every command, given bad input, ends with one error line and its documented exit code: never
a traceback (docs/operations.md, "The command line").

The commands are read from the built parser, plugin commands included, so a new command is
covered as soon as it exists: :data:`SPECS` must say how to call it (the test fails until it
does). For every command and group: an unknown flag (that command's usage, exit 2); for every
command with ``--config``: a missing, a directory and a non-UTF-8 config file (exit 2); with
``--redis-url``: an unreachable Redis (exit 3); and the bad values listed in its spec. Each runs
in-process through :func:`navstream.cli.main`; a few run again as a subprocess, so nothing
escapes at the interpreter's level either.

A command that would reach Redis is always given ``redis://127.0.0.1:1/0`` (nothing listens
there), so no case can touch a real server's keys, whatever the command does with bad input.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from navstream.cli import build_parser, main

UNREACHABLE = "redis://127.0.0.1:1/0"
USAGE_ERROR = re.compile(r"^navstream( [\w-]+)*: error: ")


@dataclass(frozen=True)
class Spec:
    """How to call a command with input that is good except for what a case changes."""

    #: arguments that make it a valid call (``{tmp}`` is a directory of prepared files)
    args: tuple[str, ...] = ()
    #: the exit code with Redis unreachable; a string: why that case does not apply
    unreachable: int | str = 3
    #: further bad inputs (in place of ``args``) and their exit codes
    bad: tuple[tuple[tuple[str, ...], int], ...] = ()
    env: dict[str, str] = field(default_factory=dict)


SPECS: dict[str, Spec] = {
    "run": Spec(
        unreachable="a consumer retries an unreachable Redis until stopped (docs/operations.md)",
        bad=(
            (("--until-idle", "-1"), 2),
            (("--until-idle", "nan"), 2),  # would never be idle: a consumer that never exits
            (("--http-port", "70000"), 2),
            (("--role", "nope"), 2),
        ),
    ),
    "ingest": Spec(
        args=("--config", "{tmp}/sources.toml", "--once"),
        bad=((("--config", "{tmp}/ok.toml", "--once"), 2),),  # no source enabled
    ),
    "demo": Spec(
        bad=((("--speed", "0"), 2), (("--speed", "fast"), 2), (("--speed", "nan"), 2), (("--speed", "inf"), 2))
    ),
    "publish": Spec(
        args=("type=price", "base=BTC", "quote=USDT", "price=1", "source=manual", "--stamp"),
        bad=(
            (("--file", "{tmp}/not-utf8.jsonl"), 2),
            (("--file", "{tmp}/missing.jsonl"), 2),
            (("--file", "{tmp}/dir"), 2),
            (("--file", "{tmp}/no-ts.jsonl"), 2),
            (("type=price", "base=BTC", "quote=USDT", "price=1", "source=manual"), 2),  # no ts, no --stamp
            (("type=price", "price=1e999999", "--stamp"), 2),
            (("noequals",), 2),
            ((), 2),
            (("type=price", "--file", "{tmp}/no-ts.jsonl"), 2),
        ),
    ),
    "status": Spec(),
    "plugins": Spec(),
    "dlq list": Spec(bad=((("--limit", "0"), 2), (("--limit", "many"), 2))),
    "dlq replay": Spec(
        args=("--all",),
        bad=((("abc",), 2), (("1-x",), 2), (("1",), 2), (("1-0", "2-"), 2), ((), 2), (("1-0", "--all"), 2)),
    ),
    "dlq purge": Spec(args=("--all",), bad=((("abc",), 2), (("1-x",), 2), ((), 2))),
    "trim": Spec(args=("events",), bad=((("dlq",), 2), ((), 2))),
    "config check": Spec(
        args=("{tmp}/ok.toml",),
        bad=(
            (("{tmp}/missing.toml",), 2),
            (("{tmp}/dir",), 2),
            (("{tmp}/not-utf8.toml",), 2),
            (("{tmp}/unknown-key.toml",), 2),
            ((), 2),
        ),
    ),
    "new-plugin": Spec(
        args=("okx", "--dir", "{tmp}/dir"),
        bad=((("Bad_Name",), 2), (("okx", "--dir", "{tmp}/missing"), 2), (("",), 2)),
    ),
    "risk halt": Spec(args=("--reason", "test"), bad=(((), 2),)),
    "risk reduce": Spec(args=("--reason", "test"), bad=(((), 2),)),
    "risk resume": Spec(args=("--reason", "test"), bad=(((), 2), (("--reason", "t", "--venue", "v"), 2))),
    "risk show": Spec(),
    "risk replay": Spec(
        args=("{tmp}/audit.jsonl",),
        unreachable="replays audit log files; it does not read Redis",
        bad=((("{tmp}/missing.jsonl",), 2), (("{tmp}/dir",), 2), (("{tmp}/audit.jsonl", "--limit", "x"), 2)),
    ),
    "nav": Spec(),
    "firestore preview": Spec(env={"NAVSTREAM_ENV": "dev"}),
}


def _walk() -> tuple[list[list[str]], list[list[str]]]:
    """(commands, groups): every runnable command's path and every path that takes a subcommand."""
    commands: list[list[str]] = []
    groups: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if path:
            (groups if subs else commands).append(path)
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, [*path, name])

    walk(build_parser(), [])
    return commands, groups


COMMANDS, GROUPS = _walk()


def _options(path: list[str]) -> set[str]:
    parser = build_parser()
    for name in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[name]
    return {flag for a in parser._actions for flag in a.option_strings}


@dataclass(frozen=True)
class Case:
    path: tuple[str, ...]
    what: str
    argv: tuple[str, ...]
    code: int
    env: dict[str, str]

    def __str__(self) -> str:
        return f"{' '.join(self.path)}: {self.what}"


def _cases() -> Iterator[Case]:
    for path in GROUPS:
        yield Case(tuple(path), "unknown flag", (*path, "--bogus"), 2, {})
    for path in COMMANDS:
        spec = SPECS.get(" ".join(path))
        if spec is None:
            continue  # test_every_command_has_a_spec fails, naming it
        options = _options(path)
        # Never a real server: a command that talks to Redis always gets one where nothing listens.
        away = ("--redis-url", UNREACHABLE, "--prefix", "navstream-bad-input") if "--redis-url" in options else ()

        def case(
            what: str, args: tuple[str, ...], code: int, spec: Spec = spec, path: list[str] = path, away: Any = away
        ) -> Case:
            return Case(tuple(path), what, (*path, *args, *away), code, spec.env)

        yield case("unknown flag", (*spec.args, "--bogus"), 2)
        yield case("unknown flag before the arguments", ("--bogus=1", *spec.args), 2)
        if "--config" in options:
            for name in ("missing.toml", "dir", "not-utf8.toml", "not-toml.toml", "unknown-key.toml"):
                yield case(f"--config {name}", (*spec.args, "--config", f"{{tmp}}/{name}"), 2)
        if "--redis-url" in options and isinstance(spec.unreachable, int):
            yield case("Redis unreachable", spec.args, spec.unreachable)
        for args, code in spec.bad:
            yield case(" ".join(args) or "no arguments", args, code)


CASES = list(_cases())


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NAVSTREAM_") and name != "NAVSTREAM_REQUIRE_REDIS":
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "dir").mkdir()
    (tmp / "ok.toml").write_text("[redis]\nprefix = 'navstream-bad-input'\n")
    (tmp / "sources.toml").write_text("[sources.coingecko]\nids = { BTC = 'bitcoin' }\n")
    (tmp / "not-utf8.toml").write_bytes(b"[redis]\nprefix = '\xff'\n")
    (tmp / "not-toml.toml").write_text("[redis\n")
    (tmp / "unknown-key.toml").write_text("[redis]\nbogus = 1\n")
    (tmp / "not-utf8.jsonl").write_bytes(b'{"type": "price", "base": "BTC"}\n{"base": "\xc3\x28"}\n')
    (tmp / "no-ts.jsonl").write_text('{"type": "price", "base": "BTC", "quote": "USDT", "price": 1, "source": "m"}\n')
    (tmp / "audit.jsonl").write_text("")
    return tmp


def _argv(case: Case, files: Path) -> list[str]:
    return [arg.replace("{tmp}", str(files)) for arg in case.argv]


def check(case: Case, code: int, out: str, err: str) -> None:
    """One error line (argparse: the command's usage, then one), no traceback, the exit code."""
    assert "Traceback" not in out + err, err
    assert code == case.code, f"exit {code}, not {case.code}: {err}"
    assert out == "", "an error must not leave a partial answer on stdout"
    lines = err.splitlines()
    if err.startswith("usage: "):  # argparse: the usage of the command the input was given to
        assert lines[0].startswith(f"usage: navstream {' '.join(case.path)} "), err
        assert [line for line in lines if USAGE_ERROR.match(line)] == [lines[-1]], err
        assert lines[-1].startswith(f"navstream {' '.join(case.path)}: error: "), err
    else:
        assert len(lines) == 1 and lines[0].startswith("navstream: error: "), err


def test_every_command_has_a_spec() -> None:
    """A command nobody wrote bad input for fails here, by name (and a spec left for a command
    that is gone, too)."""
    names = {" ".join(p) for p in COMMANDS}
    assert names - set(SPECS) == set(), "commands without a bad-input spec: add them to SPECS"
    assert set(SPECS) - names == set(), "SPECS names commands the parser does not have"


def test_the_plugin_commands_are_among_them() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"nav", "risk halt", "risk show", "firestore preview"} <= names


def test_every_command_gets_an_unknown_flag_and_bad_config_cases() -> None:
    covered = {(c.path, c.what) for c in CASES}
    for path in COMMANDS:
        assert (tuple(path), "unknown flag") in covered
        if "--config" in _options(path):
            assert (tuple(path), "--config missing.toml") in covered
        if "--redis-url" in _options(path):
            spec = SPECS[" ".join(path)]
            assert isinstance(spec.unreachable, str) or (tuple(path), "Redis unreachable") in covered


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_in_process(
    case: Case, files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(_argv(case, files))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    check(case, code, out, err)


SUBPROCESS = [
    ("publish", "--file {tmp}/not-utf8.jsonl"),
    ("publish", "--file {tmp}/missing.jsonl"),
    ("dlq replay", "abc"),
    ("dlq purge", "1-x"),
    ("dlq list", "unknown flag"),
    ("risk halt", "unknown flag"),
    ("nav", "Redis unreachable"),
    ("status", "--config not-utf8.toml"),
    ("config check", "{tmp}/dir"),
    ("demo", "Redis unreachable"),
]


@pytest.mark.parametrize(("path", "what"), SUBPROCESS, ids=lambda x: x)
def test_bad_input_as_a_subprocess(path: str, what: str, files: Path) -> None:
    """As a shell runs it: whatever the interpreter itself would print (an exception that
    escaped main, one at exit) shows here."""
    (case,) = [c for c in CASES if " ".join(c.path) == path and c.what == what]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")} | case.env
    proc = subprocess.run(
        [sys.executable, "-m", "navstream.cli", *_argv(case, files)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    check(case, proc.returncode, proc.stdout, proc.stderr)

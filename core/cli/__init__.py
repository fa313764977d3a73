"""The ``navstream`` command line.

Exit codes: 0 success; 1 the operation failed (a plugin or Redis refused; or a bug, said as one);
2 bad input (usage, config, an entry that breaks the contract, a malformed id); 3 Redis
unreachable; 130 interrupted (Ctrl-C); 141 stdout's reader left before the answer was written
(``navstream nav | head -1``): nothing more is said, as a program a closed pipe ends with SIGPIPE
says nothing (a shell shows it as 141 = 128 + SIGPIPE too).

The parts: :mod:`~navstream.cli.parser` (navstream's own commands), :mod:`~navstream.cli.commands`
(what they do), :mod:`~navstream.cli.errors` (exit codes), :mod:`~navstream.cli.console` (what
an error and a one-shot command's logs look like). Here: the plugins' commands added to the
parser, and :func:`main`, which runs a command and turns whatever it raises into an exit code.
Everything callers import from ``navstream.cli`` is importable here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from navstream.cli import console
from navstream.cli.commands import (
    _settings,
    _with_app,
    cmd_config_check,
    cmd_demo,
    cmd_dlq,
    cmd_ingest,
    cmd_new_plugin,
    cmd_plugin,
    cmd_plugins,
    cmd_publish,
    cmd_run,
    cmd_status,
    cmd_trim,
)
from navstream.cli.errors import EXIT_FAILED, EXIT_PIPE, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from navstream.cli.parser import LOG_LEVELS, _redis_options, build_core_parser
from navstream.plugin import calls
from navstream.plugin.commands import connection_options
from navstream.plugin.hookspecs import CommandHandler, RegisterCommand
from navstream.plugin.manager import PluginError, build_plugin_manager

__all__ = [
    "CliError",
    "EXIT_FAILED",
    "EXIT_PIPE",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "LOG_LEVELS",
    "build_parser",
    "cmd_config_check",
    "cmd_demo",
    "cmd_dlq",
    "cmd_ingest",
    "cmd_new_plugin",
    "cmd_plugin",
    "cmd_plugins",
    "cmd_publish",
    "cmd_run",
    "cmd_status",
    "cmd_trim",
    "connection_options",
    "main",
    "_settings",
    "_with_app",
]


def build_parser() -> argparse.ArgumentParser:
    parser, sub = build_core_parser()
    _plugin_commands(sub)
    return parser


def _plugin_commands(sub: Any) -> None:
    """Subcommands that plugins add (``navstream nav``, ...) through ``navstream_commands``."""
    try:
        loaded = build_plugin_manager()
    except PluginError:
        return  # `navstream plugins` / `run` report the broken plugin with its error
    taken = set(sub.choices)

    def register_for(plugin: str) -> RegisterCommand:
        def register(name: str, handler: CommandHandler, /, **kwargs: Any) -> argparse.ArgumentParser:
            if name in taken:
                raise PluginError(f"plugin {plugin!r} registers the command `{name}`, which is already taken")
            taken.add(name)
            p = sub.add_parser(name, **kwargs)
            _redis_options(p)
            p.set_defaults(plugin_handler=handler)
            return p

        return register

    try:
        calls.contribute(loaded.manager, "navstream_commands", register_for)
    except calls.SyncHookError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; its exit code. Whatever it raises ends as one line on stderr with the
    exit code :mod:`~navstream.cli.console` gives it (the traceback too with ``--debug`` or
    ``NAVSTREAM_DEBUG=1``), never as a traceback alone; a reader of stdout that left early
    (``navstream nav | head -1``) ends it quietly with :data:`EXIT_PIPE`."""
    run = _Run(debug=console.debug_from_env())
    try:
        try:
            code = _main(argv, run)
        except SystemExit:  # argparse: --help, --version, usage errors
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # a reader that left shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # Python would try to flush stdout once more on the way out and complain: /dev/null it.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # a stdout without a file descriptor (embedded, tests)
            pass
        return EXIT_PIPE
    except KeyboardInterrupt as exc:
        return console.interrupted(exc, debug=run.debug)
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes a line and an exit code
        return console.report(exc, debug=run.debug)


@dataclass
class _Run:
    debug: bool


#: The commands that run until stopped: their logs are JSON lines for a log collector, on stdout.
LONG_RUNNING = ("run", "ingest")


def _main(argv: Sequence[str] | None, run: _Run) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run.debug = run.debug or args.debug
    try:
        _logging(args, run.debug)
        if args.command == "run":
            return asyncio.run(cmd_run(args))
        if args.command == "publish":
            return cmd_publish(args)
        if args.command == "ingest":
            return asyncio.run(cmd_ingest(args))
        if args.command == "status":
            return asyncio.run(cmd_status(args))
        if args.command == "dlq":
            return asyncio.run(cmd_dlq(args))
        if args.command == "trim":
            return asyncio.run(cmd_trim(args))
        if args.command == "plugins":
            return cmd_plugins(args)
        if args.command == "config":
            return cmd_config_check(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "new-plugin":
            return cmd_new_plugin(args)
        return asyncio.run(cmd_plugin(args))
    finally:
        from navstream.logs import stop_logging

        stop_logging()


def _logging(args: argparse.Namespace, debug: bool) -> None:
    """Long-running processes log JSON lines to stdout (what containers collect). A one-shot
    command's stdout is its answer: its warnings are short human lines on stderr, unless
    ``--log-file`` or ``NAVSTREAM_LOG_STREAM`` asks for the JSON records.

    :raises CliError: a log level, log stream or log file that cannot be used.
    """
    from navstream.logs import setup_logging

    long_running = args.command in LONG_RUNNING
    level = args.log_level or ("INFO" if long_running else "WARNING")
    if level.upper() not in LOG_LEVELS:
        raise CliError(
            f"log level {args.log_level!r} (from --log-level or NAVSTREAM_LOG_LEVEL) is not one of "
            f"{', '.join(LOG_LEVELS)}",
            EXIT_USAGE,
        )
    stream_name = os.environ.get("NAVSTREAM_LOG_STREAM")
    if stream_name not in (None, "", "stdout", "stderr"):
        raise CliError(f"NAVSTREAM_LOG_STREAM must be stdout or stderr, not {stream_name!r}", EXIT_USAGE)
    if not (long_running or stream_name or args.log_file):
        console.human_logging(level, debug=debug)
        return
    stream = sys.stdout if (stream_name or ("stdout" if long_running else "stderr")) == "stdout" else sys.stderr
    try:
        setup_logging(level, stream, file=args.log_file)
    except OSError as exc:
        raise CliError(f"cannot open log file {args.log_file}: {exc.strerror or exc}", EXIT_USAGE) from exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

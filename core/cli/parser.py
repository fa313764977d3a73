"""The ``navstream`` command line's parser: navstream's own commands, their options and the
argument types that give clear errors.

The commands plugins add (``navstream_commands``) are added by :func:`navstream.cli.build_parser`,
which loads the plugins.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from navstream.config import ROLES
from navstream.version import __version__

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _redis_options(p: argparse.ArgumentParser, group: bool = False) -> None:
    p.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: $NAVSTREAM_CONFIG or built-in defaults)"
    )
    p.add_argument(
        "--redis-url", metavar="URL", help="Redis URL, e.g. redis://127.0.0.1:6379/0 (env NAVSTREAM_REDIS_URL)"
    )
    p.add_argument("--prefix", help="key prefix P of every stream and key (env NAVSTREAM_PREFIX, default navstream)")
    if group:
        p.add_argument("--group", help="consumer group (env NAVSTREAM_GROUP, default navstream)")


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` greater than 0, or a clear error."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not value > 0 or value == math.inf:  # nan and inf too: a speed or idle time of nan never ends
            raise argparse.ArgumentTypeError("must be a finite number greater than 0")
        return value

    return parse


_positive_float = _positive(float)
_positive_int = _positive(int)


def _port(text: str) -> int:
    """An argparse type: a TCP port 0-65535 (0: no HTTP endpoint), or a clear error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535; 0 serves nothing)")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but what it prints (``--help``, ``--version``) into a pipe whose reader
    left raises, as every command's answer does, instead of being dropped with exit 0; and an
    argument it does not know is refused by the (sub)command it was given to, with that
    command's usage (``navstream dlq list --bogus`` shows ``usage: navstream dlq list ...``).
    Subparsers, the plugins' included, are of the parser's class, so this holds for them too."""

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (file or sys.stderr).write(message)

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads; the behaviour is argparse's
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # argparse hands a subcommand's leftovers up to the top-level parser, which then reports
        # them under its own usage; here the subcommand itself refuses them.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_core_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The parser of navstream's own commands, and its subparsers, to which
    :func:`navstream.cli.build_parser` adds the plugins' commands."""
    parser = _Parser(
        prog="navstream",
        description="Stream processor on Redis Streams that keeps a trading desk's NAV and risk numbers honest.",
        epilog="Start with `navstream demo` (no Redis needed). Docs: README.md and docs/. Exit codes: 0 done, "
        "1 failed, 2 bad input, 3 Redis unreachable, 130 interrupted (Ctrl-C), 141 stdout's reader left early "
        "(`| head`). An error is one line on stderr, `navstream: error: ...`; --debug (or NAVSTREAM_DEBUG=1) "
        'adds its traceback (docs/operations.md, "The command line").',
    )
    parser.add_argument("--version", action="version", version=f"navstream {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="on an error, print its traceback too (env NAVSTREAM_DEBUG=1); give it before the command",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("NAVSTREAM_LOG_LEVEL") or None,
        type=str.upper,
        choices=LOG_LEVELS,
        help="log level (env NAVSTREAM_LOG_LEVEL; default INFO for `run` and `ingest`, which log JSON lines, "
        "WARNING for the other commands, which show them as short lines on stderr)",
    )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        default=os.environ.get("NAVSTREAM_LOG_FILE") or None,
        help="append logs to PATH, rotated at 64 MiB into PATH.1.gz ... (env NAVSTREAM_LOG_FILE; "
        "default: stdout for `run` and `ingest`, stderr for the other commands)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="run a consumer of the group until stopped",
        description="Run one consumer: read P:events (and P:orders when a plugin answers "
        "orders), hand batches to the plugins, write their outputs, acknowledge. SIGTERM "
        "or SIGINT stops gracefully; a second signal exits at once.",
    )
    _redis_options(p, group=True)
    p.add_argument(
        "--consumer", help="consumer name (env NAVSTREAM_CONSUMER; default <host>-<pid>, unique per process)"
    )
    p.add_argument(
        "--role",
        choices=ROLES,
        help="what this consumer reads (env NAVSTREAM_CONSUMER_ROLE, [consumer] role; default all): all, "
        "orders (only P:orders, so orders never wait for event batches) or events (every input but P:orders)",
    )
    p.add_argument(
        "--until-idle",
        type=_positive_float,
        metavar="SECONDS",
        help="exit 0 once nothing new or reclaimed arrived for this long",
    )
    p.add_argument("--max-events", type=_positive_int, metavar="N", help="exit 0 after handling N entries")
    p.add_argument(
        "--http-port",
        type=_port,
        metavar="PORT",
        help="serve /healthz, /readyz, /metrics and the status page on PORT (env NAVSTREAM_HTTP_PORT, "
        "[http] port; 0, the default, serves nothing); the address is [http] host, default 127.0.0.1",
    )

    p = sub.add_parser(
        "ingest",
        help="run the configured sources and publish what they see",
        description="Run every [sources.<name>] of the config on its interval: write its "
        "price, balance and position events to P:events and a source_status event after "
        "every attempt. SIGTERM or SIGINT stops after the attempts in flight.",
    )
    _redis_options(p)
    p.add_argument("--once", action="store_true", help="one round of every source, then exit (1 if any source failed)")

    p = sub.add_parser(
        "demo",
        help="replay a desk scenario through the real loop (no Redis needed)",
        description="Replay a bundled trading-desk scenario through the real consumer loop "
        "and every built-in plugin, on an in-process Redis unless --redis-url is given.",
    )
    p.add_argument("--redis-url", metavar="URL", help="use this Redis instead of the in-process one")
    p.add_argument("--prefix", default=None, help="key prefix when using --redis-url (default navstream-demo)")
    p.add_argument("--speed", type=_positive_float, default=1.0, help="replay speed factor (default 1)")
    p.add_argument("--fast", action="store_true", help="no pauses between steps")

    p = sub.add_parser(
        "publish",
        help="validate entries against the contract and XADD them",
        description="Publish entries to P:events (orders to P:orders). Give key=value "
        "fields for one entry, or JSON lines with --file (- for stdin). Every entry is "
        "validated first; if any is invalid, nothing is written.",
    )
    _redis_options(p)
    p.add_argument("fields", nargs="*", metavar="KEY=VALUE", help="fields of one entry, e.g. type=price base=BTC ...")
    p.add_argument("--file", metavar="FILE", help="JSON lines, one entry per line; - reads stdin")
    p.add_argument("--stamp", action="store_true", help="set a missing ts to now")

    p = sub.add_parser("status", help="consumers, lag, pending, DLQ, alerts and plugin state")
    _redis_options(p, group=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("plugins", help="list the plugins that load and the hooks they implement")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("dlq", help="inspect, replay or purge the dead-letter stream")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    q = dsub.add_parser("list", help="show dead letters with their errors")
    _redis_options(q)
    q.add_argument("--limit", type=_positive_int, default=50)
    q.add_argument("--json", action="store_true")
    for name, text in (
        ("replay", "put dead letters back on their source stream"),
        ("purge", "delete dead letters for good"),
    ):
        q = dsub.add_parser(name, help=text)
        _redis_options(q)
        q.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids")
        q.add_argument("--all", action="store_true", help="every dead letter")

    p = sub.add_parser(
        "trim",
        help="trim an input stream up to what every group has acknowledged",
        description="Trim P:events or P:orders (exact MINID) only up to the oldest entry "
        "still pending or undelivered for any consumer group. Never loses work.",
    )
    _redis_options(p)
    p.add_argument("stream", choices=["events", "orders"])
    p.add_argument("--dry-run", action="store_true", help="show the trim point, trim nothing")

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    q = csub.add_parser("check", help="validate a config file with every plugin's sections")
    q.add_argument("file")

    p = sub.add_parser(
        "new-plugin",
        help="write the skeleton of a venue plugin package (a source, tests, README)",
        description="Write DIR/navstream-NAME/: a package with a working price source of kind "
        "NAME-prices, its hookimpl and entry point, tests against a local HTTP server on "
        "fakeredis, a README and a .gitignore. Nothing existing is overwritten. "
        "Walk-through: docs/writing-a-venue-plugin.md.",
    )
    p.add_argument(
        "name", metavar="NAME", help="the plugin's name: lowercase letters, digits and hyphens (okx, acme-fx)"
    )
    p.add_argument(
        "--dir", default=".", metavar="DIR", help="an existing directory to create the package in (default: .)"
    )
    p.add_argument("--venue", metavar="VENUE", help="source_status.venue of its sources (default: NAME)")
    return parser, sub

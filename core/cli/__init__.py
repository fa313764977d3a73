"""The ``navstream`` command line.

Exit codes: 0 success; 1 the operation failed (a plugin or Redis refused); 2 bad input (usage,
config, an entry that breaks the contract); 3 Redis unreachable; 141 stdout's reader left before
the answer was written (``navstream nav | head -1``): nothing more is said, as a program a closed
pipe ends with SIGPIPE says nothing (a shell shows it as 141 = 128 + SIGPIPE too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any, Awaitable, Callable, Sequence

from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from navstream.cli.options import connection_options
from navstream.version import __version__
from navstream.ops.admin import AdminError
from navstream.config import ConfigError, Settings, load_settings, redact_url
from navstream.loop.consumer import StartupError
from navstream.plugin import calls
from navstream.plugin.hookspecs import CommandHandler, RegisterCommand
from navstream.plugin.manager import PluginError, build_plugin_manager
from navstream.ops.publish import PublishError

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
#: stdout's reader left (``| head``): 128 + SIGPIPE, what a shell reports for a program a closed
#: pipe ended. Python ignores SIGPIPE (a Redis socket's EPIPE must stay an error it handles), so
#: the CLI ends itself that way on BrokenPipeError.
EXIT_PIPE = 128 + signal.SIGPIPE
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _redis_options(p: argparse.ArgumentParser, group: bool = False) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: $NAVSTREAM_CONFIG or built-in defaults)")
    p.add_argument("--redis-url", metavar="URL", help="Redis URL, e.g. redis://127.0.0.1:6379/0 (env NAVSTREAM_REDIS_URL)")
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
        if value <= 0:
            raise argparse.ArgumentTypeError("must be greater than 0")
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
    left raises, as every command's answer does, instead of being dropped with exit 0."""

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (file or sys.stderr).write(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="navstream",
        description="Stream processor on Redis Streams that keeps a trading desk's NAV and risk numbers honest.",
        epilog="Start with `navstream demo` (no Redis needed). Docs: README.md and docs/. Exit codes: 0 done, "
        "1 failed, 2 bad input, 3 Redis unreachable, 141 stdout's reader left early (`| head`).",
    )
    parser.add_argument("--version", action="version", version=f"navstream {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("NAVSTREAM_LOG_LEVEL", "INFO"),
                        type=str.upper, choices=LOG_LEVELS, help="log level (logs are JSON lines)")
    parser.add_argument("--log-file", metavar="PATH", default=os.environ.get("NAVSTREAM_LOG_FILE") or None,
                        help="append logs to PATH, rotated at 64 MiB into PATH.1.gz ... (env NAVSTREAM_LOG_FILE; "
                        "default: stdout for `run` and `ingest`, stderr for the other commands)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run a consumer of the group until stopped",
                       description="Run one consumer: read P:events (and P:orders when a plugin answers "
                       "orders), hand batches to the plugins, write their outputs, acknowledge. SIGTERM "
                       "or SIGINT stops gracefully; a second signal exits at once.")
    _redis_options(p, group=True)
    p.add_argument("--consumer", help="consumer name (env NAVSTREAM_CONSUMER; default <host>-<pid>, unique per process)")
    p.add_argument("--until-idle", type=_positive_float, metavar="SECONDS",
                   help="exit 0 once nothing new or reclaimed arrived for this long")
    p.add_argument("--max-events", type=_positive_int, metavar="N", help="exit 0 after handling N entries")
    p.add_argument("--http-port", type=_port, metavar="PORT",
                   help="serve /healthz, /readyz, /metrics and the status page on PORT (env NAVSTREAM_HTTP_PORT, "
                   "[http] port; 0, the default, serves nothing); the address is [http] host, default 127.0.0.1")

    p = sub.add_parser("ingest", help="run the configured sources and publish what they see",
                       description="Run every [sources.<name>] of the config on its interval: write its "
                       "price, balance and position events to P:events and a source_status event after "
                       "every attempt. SIGTERM or SIGINT stops after the attempts in flight.")
    _redis_options(p)
    p.add_argument("--once", action="store_true",
                   help="one round of every source, then exit (1 if any source failed)")

    p = sub.add_parser("demo", help="replay a desk scenario through the real loop (no Redis needed)",
                       description="Replay a bundled trading-desk scenario through the real consumer loop "
                       "and every built-in plugin, on an in-process Redis unless --redis-url is given.")
    p.add_argument("--redis-url", metavar="URL", help="use this Redis instead of the in-process one")
    p.add_argument("--prefix", default=None, help="key prefix when using --redis-url (default navstream-demo)")
    p.add_argument("--speed", type=_positive_float, default=1.0, help="replay speed factor (default 1)")
    p.add_argument("--fast", action="store_true", help="no pauses between steps")

    p = sub.add_parser("publish", help="validate entries against the contract and XADD them",
                       description="Publish entries to P:events (orders to P:orders). Give key=value "
                       "fields for one entry, or JSON lines with --file (- for stdin). Every entry is "
                       "validated first; if any is invalid, nothing is written.")
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
    for name, text in (("replay", "put dead letters back on their source stream"),
                       ("purge", "delete dead letters for good")):
        q = dsub.add_parser(name, help=text)
        _redis_options(q)
        q.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids")
        q.add_argument("--all", action="store_true", help="every dead letter")

    p = sub.add_parser("trim", help="trim an input stream up to what every group has acknowledged",
                       description="Trim P:events or P:orders (exact MINID) only up to the oldest entry "
                       "still pending or undelivered for any consumer group. Never loses work.")
    _redis_options(p)
    p.add_argument("stream", choices=["events", "orders"])
    p.add_argument("--dry-run", action="store_true", help="show the trim point, trim nothing")

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    q = csub.add_parser("check", help="validate a config file with every plugin's sections")
    q.add_argument("file")

    p = sub.add_parser("new-plugin", help="write the skeleton of a venue plugin package (a source, tests, README)",
                       description="Write DIR/navstream-NAME/: a package with a working price source of kind "
                       "NAME-prices, its hookimpl and entry point, tests against a local HTTP server on "
                       "fakeredis, a README and a .gitignore. Nothing existing is overwritten. "
                       "Walk-through: docs/writing-a-venue-plugin.md.")
    p.add_argument("name", metavar="NAME", help="the plugin's name: lowercase letters, digits and hyphens (okx, acme-fx)")
    p.add_argument("--dir", default=".", metavar="DIR", help="an existing directory to create the package in (default: .)")
    p.add_argument("--venue", metavar="VENUE", help="source_status.venue of its sources (default: NAME)")
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

    calls.contribute(loaded.manager, "navstream_commands", register_for)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "redis": {"url": getattr(args, "redis_url", None), "prefix": getattr(args, "prefix", None),
                  "group": getattr(args, "group", None)},
        "consumer": {"name": getattr(args, "consumer", None)},
        "http": {"port": getattr(args, "http_port", None)},
    }
    return load_settings(getattr(args, "config", None), overrides=overrides)


async def _with_app(args: argparse.Namespace, fn: Callable[[Any], Awaitable[int]]) -> int:
    from navstream.app import App

    app = App.create(_settings(args))
    try:
        return await fn(app)
    except BrokenPipeError:
        raise  # stdout's reader left (redis-py reports its own sockets' EPIPE as ConnectionError)
    except AuthenticationError as exc:
        raise CliError(f"Redis at {redact_url(app.settings.redis.url)} refused the credentials: {exc}",
                       EXIT_UNREACHABLE) from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise CliError(f"Redis at {redact_url(app.settings.redis.url)} is unreachable: {exc}",
                       EXIT_UNREACHABLE) from exc
    finally:
        await app.aclose()


# --- commands ---------------------------------------------------------------------------------


async def cmd_run(args: argparse.Namespace) -> int:
    from navstream.app import App
    from navstream.loop.consumer import Consumer

    app = App.create(_settings(args))
    consumer = Consumer(app, until_idle_s=args.until_idle, max_events=args.max_events)
    loop = asyncio.get_running_loop()
    seen = 0

    def on_signal(signum: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            consumer.request_stop()
        else:  # a second signal: exit at once; pending entries are reclaimed by others
            os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await consumer.run()
    finally:
        await app.aclose()


async def cmd_ingest(args: argparse.Namespace) -> int:
    from navstream.app import default_connect
    from navstream.ingest.runner import Ingest, IngestError
    from navstream.plugin.manager import build_plugin_manager

    settings = _settings(args)
    loaded = build_plugin_manager(disabled=settings.plugins.disabled, modules=settings.plugins.modules)
    redis = default_connect(settings)(True)
    try:
        try:
            ingest = Ingest(settings, loaded.source_kinds, redis)
        except IngestError as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
        try:
            await redis.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await ingest.aclose()
            raise CliError(f"Redis at {redact_url(settings.redis.url)} is unreachable: {exc}",
                           EXIT_UNREACHABLE) from exc
        try:
            if args.once:
                results = await ingest.run_once()
                failed = sorted(name for name, ok in results.items() if not ok)
                for name in failed:
                    run = ingest.runs[name]
                    print(f"navstream: source {name} failed: "
                          f"{run.last_error or 'its events could not be written to Redis'}", file=sys.stderr)
                return EXIT_FAILED if failed else 0
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, ingest.request_stop)
            await ingest.run()
            return 0
        finally:
            await ingest.aclose()
    finally:
        await redis.aclose()


async def cmd_publish(args: argparse.Namespace) -> int:
    from navstream.ops.publish import parse_json_lines, parse_kv, prepare, publish

    if bool(args.fields) == bool(args.file):
        raise CliError("give either KEY=VALUE fields or --file, not both or neither")
    if args.file:
        if args.file == "-":
            entries = parse_json_lines(sys.stdin, "<stdin>")
        else:
            try:
                with open(args.file, encoding="utf-8") as fh:
                    entries = parse_json_lines(fh, args.file)
            except OSError as exc:
                raise CliError(f"cannot read {args.file}: {exc.strerror}") from exc
    else:
        entries = [parse_kv(args.fields)]
    if not entries:
        raise CliError("no entries to publish")

    async def go(app: Any) -> int:
        prepared = prepare(app, entries, stamp=args.stamp)
        for item, new_id in zip(prepared, await publish(app, prepared)):
            print(f"{item.stream} {new_id}")
        return 0

    return await _with_app(args, go)


async def cmd_status(args: argparse.Namespace) -> int:
    from navstream.ops.admin import collect_status
    from navstream.cli.render import render_status

    async def go(app: Any) -> int:
        status = await collect_status(app)
        print(json.dumps(status, indent=2, default=str) if args.json else render_status(status))
        return 0

    return await _with_app(args, go)


async def cmd_dlq(args: argparse.Namespace) -> int:
    from navstream.ops.admin import dlq_list, dlq_purge, dlq_replay
    from navstream.cli.render import render_dlq

    if args.dlq_command in ("replay", "purge") and bool(args.ids) == bool(args.all):
        raise CliError(f"dlq {args.dlq_command}: give dead-letter ids or --all, not both or neither")

    async def go(app: Any) -> int:
        if args.dlq_command == "list":
            rows = await dlq_list(app, limit=args.limit)
            print(json.dumps(rows, indent=2) if args.json else render_dlq(rows))
        elif args.dlq_command == "replay":
            for dlq_id, stream, new_id in await dlq_replay(app, None if args.all else args.ids):
                print(f"replayed {dlq_id} -> {stream} {new_id}")
        else:
            print(f"purged {await dlq_purge(app, None if args.all else args.ids)} dead letters")
        return 0

    return await _with_app(args, go)


async def cmd_trim(args: argparse.Namespace) -> int:
    from navstream.ops.admin import trim_input

    async def go(app: Any) -> int:
        stream = app.keys.events if args.stream == "events" else app.keys.orders
        result = await trim_input(app, stream, dry_run=args.dry_run)
        verb = "would trim" if args.dry_run else f"trimmed {result['removed']} entries of"
        print(f"{verb} {stream} below {result['minid']} (length was {result['length_before']})")
        for g in result["groups"]:
            print(f"  group {g['group']}: {g['why']} {g['bound']}")
        return 0

    return await _with_app(args, go)


def cmd_plugins(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    loaded = build_plugin_manager(disabled=settings.plugins.disabled, modules=settings.plugins.modules)
    rows: list[dict[str, Any]] = [{"name": p.name, "module": p.module, "version": p.version,
                                   "origin": p.origin, "hooks": p.hooks, "loaded": True} for p in loaded.info]
    rows += [{"name": p.name, "module": p.module, "version": p.version, "origin": p.origin,
              "hooks": [], "loaded": False} for p in loaded.disabled]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins")
    for row in rows:
        state = "loaded  " if row["loaded"] else "disabled"
        print(f"{state} {row['name']:<20} {row['module']} ({row['origin']}"
              f"{', ' + row['version'] if row['version'] else ''})")
        if row["hooks"]:
            print(f"         hooks: {', '.join(row['hooks'])}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from navstream.config import validate_plugin_sections
    from navstream.ingest.runner import configure

    settings = load_settings(args.file, env={})
    # The file alone is checked: neither the environment's overrides nor NAVSTREAM_PLUGINS
    # (which would leave the sections of the plugins it excludes unchecked) take part.
    loaded = build_plugin_manager(disabled=settings.plugins.disabled, modules=settings.plugins.modules, env={})
    sections = validate_plugin_sections(settings, loaded.sections, loaded.disabled_sections)
    sources = configure(settings, loaded.source_kinds)  # [sources.*], as `navstream ingest` reads them
    print(f"{args.file}: ok")
    print(f"  redis: {redact_url(settings.redis.url)} prefix={settings.redis.prefix} group={settings.redis.group}")
    print(f"  plugins: {', '.join(p.name for p in loaded.info) or 'none'}")
    for name in sorted(sections):
        print(f"  [{name}] ok")
    for name, (kind, _) in sorted(sources.items()):
        print(f"  [sources.{name}] ok (kind {kind.kind})")
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from navstream.cli.scaffold import ScaffoldError, next_steps, write_plugin

    try:
        written = write_plugin(args.name, args.dir, venue=args.venue)
    except ScaffoldError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    except OSError as exc:  # e.g. a read-only --dir; the partial package was removed
        raise CliError(f"could not write the package: {exc}; nothing was written", EXIT_FAILED) from exc
    n = written.names
    print(f"wrote {written.root}/: plugin `{n.name}` (package {n.dist}, module {n.module}), "
          f"source kind `{n.kind}`, venue `{n.venue}`")
    for path in written.files:
        print(f"  {path}")
    print("next:")
    for line in next_steps(written):
        print(f"  {line}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from navstream.demo import run_demo
    except ModuleNotFoundError as exc:  # the container image ships without the demo's in-process Redis
        print(f"navstream: error: the demo needs {exc.name}, which this installation leaves out (the "
              "container image does); run it where `pip install navstream` installed everything",
              file=sys.stderr)
        return 1
    return asyncio.run(run_demo(redis_url=args.redis_url, prefix=args.prefix, speed=args.speed, fast=args.fast))


async def cmd_plugin(args: argparse.Namespace) -> int:
    handler = args.plugin_handler
    module = getattr(handler, "__module__", "")

    async def go(app: Any) -> int:
        loaded = [p.module for p in app.plugins.info]
        if module and not any(module == name or module.startswith(f"{name}.") for name in loaded):
            raise CliError(f"`navstream {args.command}` belongs to a plugin that this configuration "
                           "does not load (see `navstream plugins`)", EXIT_USAGE)
        return int(await handler(app, args))

    return await _with_app(args, go)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; its exit code. Whatever the command, a reader of stdout that left early
    (``navstream nav | head -1``) ends it quietly with :data:`EXIT_PIPE`."""
    try:
        try:
            code = _main(argv)
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


def _main(argv: Sequence[str] | None) -> int:
    from navstream.logs import setup_logging

    try:
        parser = build_parser()
    except PluginError as exc:
        return _fail(str(exc), EXIT_USAGE)
    args = parser.parse_args(argv)
    if args.log_level.upper() not in LOG_LEVELS:
        return _fail(f"log level {args.log_level!r} (from --log-level or NAVSTREAM_LOG_LEVEL) is not one of "
                     f"{', '.join(LOG_LEVELS)}", EXIT_USAGE)
    # Long-running processes log to stdout (what containers collect); a one-shot command's
    # stdout is its answer, so its logs go to stderr. NAVSTREAM_LOG_STREAM overrides.
    stream_name = os.environ.get("NAVSTREAM_LOG_STREAM") or ("stdout" if args.command in ("run", "ingest") else "stderr")
    if stream_name not in ("stdout", "stderr"):
        return _fail(f"NAVSTREAM_LOG_STREAM must be stdout or stderr, not {stream_name!r}", EXIT_USAGE)
    try:
        setup_logging(args.log_level, sys.stdout if stream_name == "stdout" else sys.stderr, file=args.log_file)
    except OSError as exc:
        return _fail(f"cannot open log file {args.log_file}: {exc.strerror or exc}", EXIT_USAGE)
    try:
        if args.command == "run":
            return asyncio.run(cmd_run(args))
        if args.command == "publish":
            return asyncio.run(cmd_publish(args))
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
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except (ConfigError, PluginError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except PublishError as exc:
        return _fail("nothing published:\n  " + "\n  ".join(exc.problems), EXIT_USAGE)
    except (AdminError, StartupError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        return _fail(f"Redis is unreachable: {exc}", EXIT_UNREACHABLE)
    except RedisError as exc:
        return _fail(f"Redis refused the operation: {exc}", EXIT_FAILED)
    finally:
        from navstream.logs import stop_logging

        stop_logging()


def _fail(message: str, code: int) -> int:
    print(f"navstream: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

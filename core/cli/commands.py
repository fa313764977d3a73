"""The ``navstream`` commands that navstream itself provides (``run``, ``ingest``, ``publish``,
``status``, ``dlq``, ``trim``, ``plugins``, ``config check``, ``new-plugin``, ``demo``) and the one
that runs a plugin's command.

Each takes the parsed arguments and returns the exit code; bad input and an unreachable Redis
are raised as :class:`~navstream.cli.errors.CliError` with their exit code. What a command needs
beyond that is imported where used: every command pays only for its own imports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from navstream import display
from navstream.cli.errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from navstream.config import Settings, load_settings, redact_url
from navstream.plugin.manager import build_plugin_manager


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "redis": {
            "url": getattr(args, "redis_url", None),
            "prefix": getattr(args, "prefix", None),
            "group": getattr(args, "group", None),
        },
        "consumer": {"name": getattr(args, "consumer", None), "role": getattr(args, "role", None)},
        "http": {"port": getattr(args, "http_port", None)},
    }
    settings = load_settings(getattr(args, "config", None), overrides=overrides)
    display.use(settings.display)
    return settings


async def _with_app(args: argparse.Namespace, fn: Callable[[Any], Awaitable[int]]) -> int:
    from navstream.app import App

    app = App.create(_settings(args))
    try:
        return await fn(app)
    except BrokenPipeError:
        raise  # stdout's reader left (redis-py reports its own sockets' EPIPE as ConnectionError)
    except AuthenticationError as exc:
        raise CliError(
            f"Redis at {redact_url(app.settings.redis.url)} refused the credentials: {exc}", EXIT_UNREACHABLE
        ) from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise CliError(
            f"Redis at {redact_url(app.settings.redis.url)} is unreachable: {exc}", EXIT_UNREACHABLE
        ) from exc
    finally:
        await app.aclose()


async def cmd_run(args: argparse.Namespace) -> int:
    from navstream.app import App
    from navstream.loop.consumer import Consumer

    app = App.create(_settings(args))
    try:
        consumer = Consumer(app, until_idle_s=args.until_idle, max_events=args.max_events)  # checks the role
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
            raise CliError(
                f"Redis at {redact_url(settings.redis.url)} is unreachable: {exc}", EXIT_UNREACHABLE
            ) from exc
        try:
            if args.once:
                results = await ingest.run_once()
                failed = sorted(name for name, ok in results.items() if not ok)
                for name in failed:
                    run = ingest.runs[name]
                    print(
                        f"navstream: source {name} failed: "
                        f"{run.last_error or 'its events could not be written to Redis'}",
                        file=sys.stderr,
                    )
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


def cmd_publish(args: argparse.Namespace) -> int:
    """Read the entries, then publish them. Reading comes before the event loop starts: asyncio
    turns a Ctrl-C into cancelling its task, which a blocking read of stdin never sees."""
    from navstream.ops.publish import decode_text, parse_json_lines, parse_kv, prepare, publish

    if bool(args.fields) == bool(args.file):
        raise CliError("give either KEY=VALUE fields or --file, not both or neither")
    if args.file:
        if args.file == "-":
            origin = "<stdin>"
            binary = getattr(sys.stdin, "buffer", None)  # None: a text stream put there (embedded)
            lines = decode_text(binary.read(), origin) if binary is not None else list(sys.stdin)
        else:
            origin = args.file
            try:
                with open(args.file, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
            lines = decode_text(data, origin)
        entries = parse_json_lines(lines, origin)
    else:
        entries = [parse_kv(args.fields)]
    if not entries:
        raise CliError("no entries to publish")

    async def go(app: Any) -> int:
        prepared = prepare(app, entries, stamp=args.stamp)
        for item, new_id in zip(prepared, await publish(app, prepared)):
            print(f"{item.stream} {new_id}")
        return 0

    return asyncio.run(_with_app(args, go))


async def cmd_status(args: argparse.Namespace) -> int:
    from navstream.ops.admin import collect_status
    from navstream.render import render_status

    async def go(app: Any) -> int:
        status = await collect_status(app)
        print(json.dumps(status, indent=2, default=str) if args.json else render_status(status))
        return 0

    return await _with_app(args, go)


async def cmd_dlq(args: argparse.Namespace) -> int:
    from navstream.ops.admin import dlq_list, dlq_purge, dlq_replay
    from navstream.render import render_dlq

    if args.dlq_command in ("replay", "purge") and bool(args.ids) == bool(args.all):
        raise CliError(f"dlq {args.dlq_command}: give dead-letter ids or --all, not both or neither")

    async def go(app: Any) -> int:
        if args.dlq_command == "list":
            rows = await dlq_list(app, limit=args.limit)
            print(json.dumps(rows, indent=2) if args.json else render_dlq(rows))
        elif args.dlq_command == "replay":
            done = await dlq_replay(app, None if args.all else args.ids)
            for dlq_id, stream, new_id in done.moved:
                print(f"replayed {dlq_id} -> {stream} {new_id}")
            for dlq_id in done.gone:
                print(f"not replayed {dlq_id}: gone from the DLQ meanwhile (purged or replayed by someone else)")
            if done.gone:
                raise CliError(
                    f"{len(done.gone)} of {len(done.moved) + len(done.gone)} dead letters were gone from the DLQ "
                    f"before they could be replayed (listed above); {len(done.moved)} replayed",
                    EXIT_FAILED,
                )
        else:
            count = await dlq_purge(app, None if args.all else args.ids)
            asked = count if args.all else len(set(args.ids))
            # fewer than asked: replayed or purged by someone else after the ids were checked
            gone = f" ({asked - count} gone from the DLQ meanwhile)" if count < asked else ""
            print(f"purged {count} dead letters{gone}")
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
    rows: list[dict[str, Any]] = [
        {"name": p.name, "module": p.module, "version": p.version, "origin": p.origin, "hooks": p.hooks, "loaded": True}
        for p in loaded.info
    ]
    rows += [
        {"name": p.name, "module": p.module, "version": p.version, "origin": p.origin, "hooks": [], "loaded": False}
        for p in loaded.disabled
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins")
    for row in rows:
        state = "loaded  " if row["loaded"] else "disabled"
        print(
            f"{state} {row['name']:<20} {row['module']} ({row['origin']}"
            f"{', ' + row['version'] if row['version'] else ''})"
        )
        if row["hooks"]:
            print(f"         hooks: {', '.join(row['hooks'])}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from navstream.config import validate_plugin_sections
    from navstream.ingest.runner import configure
    from navstream.loop.roles import check_role

    settings = load_settings(args.file, env={})
    # The file alone is checked: neither the environment's overrides nor NAVSTREAM_PLUGINS
    # (which would leave the sections of the plugins it excludes unchecked) take part.
    loaded = build_plugin_manager(disabled=settings.plugins.disabled, modules=settings.plugins.modules, env={})
    sections = validate_plugin_sections(settings, loaded.sections, loaded.disabled_sections)
    check_role(settings, loaded)  # a role the plugins cannot fill fails `run` too
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
    print(
        f"wrote {written.root}/: plugin `{n.name}` (package {n.dist}, module {n.module}), "
        f"source kind `{n.kind}`, venue `{n.venue}`"
    )
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
        print(
            f"navstream: error: the demo needs {exc.name}, which this installation leaves out (the "
            "container image does); run it where `pip install navstream` installed everything",
            file=sys.stderr,
        )
        return 1
    return asyncio.run(run_demo(redis_url=args.redis_url, prefix=args.prefix, speed=args.speed, fast=args.fast))


async def cmd_plugin(args: argparse.Namespace) -> int:
    handler = args.plugin_handler
    module = getattr(handler, "__module__", "")

    async def go(app: Any) -> int:
        loaded = [p.module for p in app.plugins.info]
        if module and not any(module == name or module.startswith(f"{name}.") for name in loaded):
            raise CliError(
                f"`navstream {args.command}` belongs to a plugin that this configuration "
                "does not load (see `navstream plugins`)",
                EXIT_USAGE,
            )
        return int(await handler(app, args))

    return await _with_app(args, go)

"""Container health check: is this container's navstream consumer alive?

When the consumer serves HTTP (``[http] port``, ``NAVSTREAM_HTTP_PORT`` or ``--http-port``; the
image sets ``NAVSTREAM_HTTP_PORT=8080``), ask its ``/healthz`` on the local address: exit 0 on
200, exit 1 with the status and the reason it gave, or why it could not be asked. This does not
depend on Redis: a consumer riding out a Redis outage is alive, and restarting it would not
help (``/readyz`` says it is not ready, for the orchestrator and the dashboards).

Without an HTTP port, read its heartbeat instead: exit 0 when the hash
``<prefix>:heartbeat:<consumer>`` exists and its ``status`` is ``running``; exit 1 otherwise,
with one line saying why (Docker keeps it in ``docker inspect``):

- the key is missing: the consumer has not ticked for its heartbeat TTL (max(10 s, 5 ticks)),
  so it is hung, dead, or has never started;
- ``status`` is ``stopped`` (shutting down) or ``reconnecting`` (just lost Redis);
- Redis cannot be reached, or the configuration does not load.

The consumer name is ``[consumer] name`` / ``NAVSTREAM_CONSUMER`` / ``--consumer`` if set, else
``<hostname>-<pid>`` as navstream makes it; in the image navstream is PID 1, so
``<hostname>-1`` (``--pid`` changes that, e.g. behind ``docker run --init``). Settings are
resolved as ``navstream run`` resolves them: the ``NAVSTREAM_CONFIG`` file, the environment,
then the flags on the consumer's own command line, read from ``/proc/<pid>/cmdline``.

Usage: ``python healthcheck.py [--pid N]``. Needs the navstream package (the image's venv).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HEALTHY, UNHEALTHY = 0, 1


class Unhealthy(Exception):
    pass


def consumer_argv(pid: int, proc: Path = Path("/proc")) -> list[str] | None:
    """The arguments after ``navstream`` on process ``pid``'s command line.

    ``None`` when the command line cannot be read or is not navstream's (then only the config
    file and the environment apply).
    """
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    argv = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "navstream":
            return argv[i + 1 :]
    return None


def settings_for(argv: list[str] | None) -> Any:
    """Settings as ``navstream <argv>`` loads them (``argv`` ``None``: file and env only)."""
    from navstream.cli import build_parser
    from navstream.config import load_settings

    if argv is None:
        return load_settings()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        raise Unhealthy(f"cannot parse the consumer's command line: navstream {' '.join(argv)}") from None
    if args.command != "run":
        raise Unhealthy(f"the process is `navstream {args.command}`, not a consumer (`navstream run`)")
    overrides = {
        "redis": {"url": args.redis_url, "prefix": args.prefix, "group": args.group},
        "consumer": {"name": args.consumer},
        "http": {"port": getattr(args, "http_port", None)},
    }
    return load_settings(args.config, overrides=overrides)


def check_http(host: str, port: int, timeout_s: float = 4.0) -> str:
    """``/healthz`` of the consumer listening on ``host``:``port``, asked from this host."""
    from navstream.serve.http import local_url

    url = local_url(host, port, "/healthz")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(url, timeout=timeout_s) as response:
            body = response.read(2000).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        body = exc.read(2000).decode("utf-8", "replace").strip()
        raise Unhealthy(f"{url} answered {exc.code}: {body}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unhealthy(f"{url} cannot be reached: {getattr(exc, 'reason', exc)}") from None
    return f"ok: {url} {body}"


def check(pid: int) -> str:
    """Return a one-line summary when healthy; raise :class:`Unhealthy` otherwise."""
    import redis

    from navstream.app import redis_auth_options
    from navstream.config import ConfigError, redact_url
    from navstream.contract.keys import Keys

    try:
        settings = settings_for(consumer_argv(pid))
    except ConfigError as exc:
        raise Unhealthy(f"configuration does not load: {exc}") from None
    if settings.http.port:
        return check_http(settings.http.host, settings.http.port)
    name = settings.consumer.name or f"{socket.gethostname()}-{pid}"
    key = Keys(settings.redis.prefix, cluster=settings.redis.cluster).heartbeat(name)
    url = settings.redis.url
    client = redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=3, socket_timeout=3, **redis_auth_options(settings)
    )
    try:
        beat = client.hgetall(key)
    except redis.RedisError as exc:
        raise Unhealthy(f"Redis at {redact_url(url)} is unreachable: {exc}") from None
    finally:
        client.close()
    if not beat:
        raise Unhealthy(f"no heartbeat at {key}: the consumer has not ticked within its heartbeat TTL")
    status = beat.get("status", "")
    if status != "running":
        raise Unhealthy(f"{key} status is {status or 'missing'!r}, not 'running'")
    return f"ok: {key} running, processed={beat.get('processed', '?')} dead_lettered={beat.get('dead_lettered', '?')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Docker health check of a navstream consumer.")
    parser.add_argument("--pid", type=int, default=1, help="PID of `navstream run` (default 1)")
    args = parser.parse_args(argv)
    try:
        print(check(args.pid))
        return HEALTHY
    except Unhealthy as exc:
        print(f"unhealthy: {exc}")
        return UNHEALTHY
    except Exception as exc:  # noqa: BLE001 - any surprise is unhealthy, never a 2 or a traceback
        print(f"unhealthy: {type(exc).__name__}: {exc}")
        return UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())

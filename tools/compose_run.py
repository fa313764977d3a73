"""Turn one service of docker-compose.yml into `docker run` arguments, so CI runs the image with
the compose file's own settings instead of a hand-copied imitation of them.

Applied: ``read_only``, ``tmpfs``, ``cap_drop``, ``cap_add``, ``security_opt``, ``environment``,
``env_file``, ``volumes``, ``command``, ``entrypoint``, ``user``, ``init``, ``stop_signal``,
``stop_grace_period``, ``healthcheck``. Left out, each for a stated reason (``IGNORED``):
``build``, ``image`` (CI passes the image it built), ``deploy`` and ``restart`` (the caller
starts the replicas and wants to see each exit code), ``depends_on``, ``expose``, ``ports``,
``profiles`` (no bridge network: every container runs with ``--network host``). Any other key
is an error, so a setting added to the compose file later cannot be silently skipped here.

What the caller changes on purpose is explicit and printed: ``--env K=V`` overrides (the Redis
URL, a unique key prefix, a free HTTP port: under ``--network host`` every replica shares the
host's ports), ``--volume NAME=REPLACEMENT`` for a named volume or a bind source, and
``--hostname`` (under ``--network host`` a container has the host's name, so replicas would
share one consumer name, ``<hostname>-1``).

Usage::

    python tools/compose_run.py docker-compose.yml consumer --image navstream:ci \\
        --name ci-consumer-1 --hostname ci-consumer-1 --env NAVSTREAM_HTTP_PORT=18080 \\
        --volume navstream-state=ci-state-volume -0

prints the arguments after ``docker run`` (``-0``: NUL-separated, for ``mapfile -d ''``;
otherwise one shell-quoted line), and the changes it made to stderr.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

APPLIED = {
    "read_only",
    "tmpfs",
    "cap_drop",
    "cap_add",
    "security_opt",
    "environment",
    "env_file",
    "volumes",
    "command",
    "entrypoint",
    "user",
    "init",
    "stop_signal",
    "stop_grace_period",
    "healthcheck",
}
IGNORED = {
    "build": "CI passes the image it built (--image)",
    "image": "CI passes the image it built (--image)",
    "deploy": "the caller starts each replica itself",
    "restart": "the caller wants each container's own exit code",
    "depends_on": "CI's Redis is already up",
    "expose": "no bridge network: --network host",
    "ports": "no bridge network: --network host",
    "profiles": "the caller names the service",
}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ComposeError(Exception):
    pass


def seconds(value: Any) -> float:
    """A compose duration (``30s``, ``1m30s``, ``500ms``, or a bare number of seconds)."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ComposeError(f"not a compose duration: {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def docker_duration(value: Any) -> str:
    """A duration as `docker run --health-*` takes it (Go's syntax)."""
    total = seconds(value)
    return f"{int(total * 1000)}ms"


def as_list(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


def environment(value: Any) -> dict[str, str]:
    """``environment:`` as a mapping or a list of ``K=V`` (a bare ``K`` passes the caller's)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    env: dict[str, str] = {}
    for item in value:
        key, sep, val = str(item).partition("=")
        env[key] = val if sep else ""
    return env


def volume_args(value: Any, base: Path, replace: dict[str, str]) -> list[str]:
    """``volumes:`` (short or long syntax) as ``-v`` / ``--mount`` arguments."""
    args: list[str] = []
    used: set[str] = set()
    for item in as_list(value):
        if isinstance(item, str):
            fields = item.split(":")
            if len(fields) == 1:
                args += ["-v", fields[0]]  # an anonymous volume
                continue
            source, target, mode = fields[0], fields[1], ":".join(fields[2:])
        elif isinstance(item, dict):
            source, target = str(item.get("source", "")), str(item["target"])
            mode = "ro" if item.get("read_only") else ""
            unknown = set(item) - {"type", "source", "target", "read_only"}
            if unknown:
                raise ComposeError(f"volume {item!r}: unsupported keys {sorted(unknown)}")
        else:
            raise ComposeError(f"unsupported volume entry {item!r}")
        if source in replace:
            used.add(source)
            source = replace[source]
        elif source.startswith((".", "/", "~")):
            source = str((base / Path(source).expanduser()).resolve())
        else:
            raise ComposeError(
                f"named volume {source!r}: give CI's own with --volume {source}=NAME, never the deployment's"
            )
        args += ["-v", f"{source}:{target}" + (f":{mode}" if mode else "")]
    unused = set(replace) - used
    if unused:
        raise ComposeError(f"--volume {sorted(unused)}: the service mounts no such volume or bind source")
    return args


def healthcheck_args(value: Any) -> list[str]:
    if value is None:
        return []
    if value.get("disable"):
        return ["--no-healthcheck"]
    args: list[str] = []
    test = value.get("test")
    if test is not None:
        if isinstance(test, str):
            args += ["--health-cmd", test]
        elif test and test[0] == "NONE":
            return ["--no-healthcheck"]
        elif test and test[0] == "CMD-SHELL":
            args += ["--health-cmd", " ".join(test[1:])]
        elif test and test[0] == "CMD":
            args += ["--health-cmd", shlex.join(test[1:])]  # docker run only takes a shell form
        else:
            raise ComposeError(f"healthcheck test {test!r}: expected CMD, CMD-SHELL, NONE or a string")
    for key, flag in (
        ("interval", "--health-interval"),
        ("timeout", "--health-timeout"),
        ("start_period", "--health-start-period"),
    ):
        if key in value:
            args += [flag, docker_duration(value[key])]
    if "retries" in value:
        args += ["--health-retries", str(int(value["retries"]))]
    unknown = set(value) - {"test", "interval", "timeout", "start_period", "retries", "disable"}
    if unknown:
        raise ComposeError(f"healthcheck: unsupported keys {sorted(unknown)}")
    return args


def run_args(
    compose_file: Path,
    service: str,
    *,
    image: str,
    name: str,
    hostname: str | None,
    env_overrides: dict[str, str],
    volumes: dict[str, str],
) -> tuple[list[str], list[str]]:
    """The ``docker run`` arguments for ``service``, and a line per change made to it."""
    doc = yaml.safe_load(compose_file.read_text())
    try:
        svc = doc["services"][service]
    except (KeyError, TypeError):
        raise ComposeError(f"{compose_file} has no service {service!r}") from None
    base = compose_file.resolve().parent
    notes: list[str] = []
    unknown = set(svc) - APPLIED - set(IGNORED)
    if unknown:
        raise ComposeError(
            f"service {service!r}: {sorted(unknown)} not handled by {Path(__file__).name}; teach it, do not skip it"
        )
    for key in sorted(set(svc) & set(IGNORED)):
        notes.append(f"not applied: {key} ({IGNORED[key]})")

    args = ["--name", name, "--network", "host"]
    if hostname:
        args += ["--hostname", hostname]
        notes.append(f"hostname {hostname} (under --network host a container has the host's name)")
    if svc.get("read_only"):
        args.append("--read-only")
    for mount in as_list(svc.get("tmpfs")):
        args += ["--tmpfs", str(mount)]
    for cap in as_list(svc.get("cap_drop")):
        args += ["--cap-drop", str(cap)]
    for cap in as_list(svc.get("cap_add")):
        args += ["--cap-add", str(cap)]
    for opt in as_list(svc.get("security_opt")):
        args += ["--security-opt", str(opt)]
    if svc.get("user") is not None:
        args += ["--user", str(svc["user"])]
    if svc.get("init"):
        args.append("--init")
    for entry in as_list(svc.get("env_file")):
        path, required = (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required", True))
        full = (base / path).resolve()
        if full.is_file():
            args += ["--env-file", str(full)]  # its values are never printed
            notes.append(f"env_file {path} (present)")
        elif required:
            raise ComposeError(f"env_file {path} is required and missing")
        else:
            notes.append(f"env_file {path} (optional, absent)")
    env = environment(svc.get("environment"))
    for key, value in env_overrides.items():
        notes.append(f"env {key}={value}" + (f" (compose: {env[key]})" if key in env else " (added)"))
        env[key] = value
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    for source, replacement in volumes.items():
        notes.append(f"volume {source} -> {replacement}")
    args += volume_args(svc.get("volumes"), base, volumes)
    if "stop_signal" in svc:
        args += ["--stop-signal", str(svc["stop_signal"])]
    if "stop_grace_period" in svc:
        args += ["--stop-timeout", str(int(seconds(svc["stop_grace_period"])))]
    args += healthcheck_args(svc.get("healthcheck"))
    entrypoint = svc.get("entrypoint")
    if entrypoint is not None:
        parts = shlex.split(entrypoint) if isinstance(entrypoint, str) else [str(p) for p in entrypoint]
        if len(parts) != 1:
            raise ComposeError("an entrypoint of more than one word cannot be given to docker run; teach this script")
        args += ["--entrypoint", parts[0]]
    args.append(image)
    command = svc.get("command")
    if command is not None:
        args += shlex.split(command) if isinstance(command, str) else [str(p) for p in command]
    return args, notes


def pairs(values: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise ComposeError(f"{what} {value!r}: expected KEY=VALUE")
        out[key] = val
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compose_file", type=Path)
    parser.add_argument("service")
    parser.add_argument("--image", required=True)
    parser.add_argument("--name", required=True, help="container name")
    parser.add_argument("--hostname")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="override or add a variable")
    parser.add_argument(
        "--volume",
        action="append",
        default=[],
        metavar="SOURCE=REPLACEMENT",
        help="replace a named volume or a bind source (as written in the compose file)",
    )
    parser.add_argument("--stop-grace", action="store_true", help="print only the stop grace period in seconds")
    parser.add_argument("--print-env", metavar="KEY", help="print only the service's value of KEY (empty if unset)")
    parser.add_argument("-0", dest="nul", action="store_true", help="NUL-separated output")
    args = parser.parse_args(argv)
    try:
        if args.stop_grace or args.print_env:
            svc = yaml.safe_load(args.compose_file.read_text())["services"][args.service]
            if args.stop_grace:  # Docker's default when the service sets none
                print(int(seconds(svc.get("stop_grace_period", "10s"))))
            else:
                print(environment(svc.get("environment")).get(args.print_env, ""))
            return 0
        run, notes = run_args(
            args.compose_file,
            args.service,
            image=args.image,
            name=args.name,
            hostname=args.hostname,
            env_overrides=pairs(args.env, "--env"),
            volumes=pairs(args.volume, "--volume"),
        )
    except (ComposeError, OSError, yaml.YAMLError) as exc:
        print(f"compose_run: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"compose_run: {args.service}: {note}", file=sys.stderr)
    if args.nul:
        sys.stdout.write("".join(a + "\0" for a in run))
    else:
        print(shlex.join(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())

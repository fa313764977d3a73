"""What the benches share: the machine they ran on, the plugins they must load, the keys they
delete, the environment of their workers, peak memory and percentiles.

The benches run as scripts (``python bench/bench_loop.py``), so bench/ is ``sys.path[0]`` and
they import this module as ``common``; so do the workers they spawn from the same script.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import sys
from typing import Any

#: The entry-point group plugins are loaded from.
ENTRY_POINT_GROUP = "navstream"
HERE = os.path.dirname(os.path.abspath(__file__))


# --- the machine and the tree -------------------------------------------------------------------


def machine(client: Any) -> dict[str, str]:
    """CPUs, Python, the Redis server behind ``client`` and the versions of what is measured."""
    from importlib.metadata import version

    info = client.info("server")
    out = {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "redis-server": str(info.get("redis_version")),
        "platform": platform.platform(),
    }
    for dist in ("redis", "hiredis", "msgspec", "navstream"):
        try:
            out[dist] = version(dist)
        except Exception:  # noqa: BLE001 - informational only
            out[dist] = "?"
    return out


def git_tree() -> str | None:
    """``abc1234`` or ``abc1234+changes``: the commit of this checkout, None outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "") if head else None


# --- plugins and workers ------------------------------------------------------------------------


def builtin_plugins() -> tuple[set[str], set[str]]:
    """Plugin names in the installed entry points, and in the pyproject.toml of this checkout."""
    from importlib.metadata import entry_points

    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    declared: set[str] = set()
    pyproject = os.path.join(HERE, os.pardir, "pyproject.toml")
    try:
        import tomllib

        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
        declared = set(data.get("project", {}).get("entry-points", {}).get(ENTRY_POINT_GROUP, {}))
    except (OSError, ValueError):
        pass
    return installed, declared


def worker_env() -> dict[str, str]:
    """The environment of a worker: the caller's, without NAVSTREAM_* (NAVSTREAM_PLUGINS from
    the caller's shell would silently drop plugins)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}


def side_order(run: int) -> list[str]:
    """Which side goes first in the ``run``-th run: they alternate, the baseline first."""
    return ["baseline", "navstream"] if run % 2 == 0 else ["navstream", "baseline"]


# --- Redis keys ---------------------------------------------------------------------------------


def delete_matching(client: Any, pattern: str) -> int:
    """UNLINK every key matching ``pattern`` (SCAN, 500 keys a call); how many were deleted."""
    deleted = 0
    batch = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def delete_matching_url(url: str, pattern: str) -> int:
    """:func:`delete_matching` on a connection of its own to ``url``."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(delete_matching(client, pattern))
    finally:
        client.close()


# --- figures ------------------------------------------------------------------------------------


def rss_kb() -> int:
    """Resident memory of this process now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return 0


def maxrss_kb() -> int:
    """Peak RSS of this process.

    ``VmHWM`` where Linux has it: ``getrusage(RUSAGE_SELF).ru_maxrss`` survives ``execve``, so a
    worker spawned by the driver would report the driver's own peak (the generated events).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" else value  # bytes on macOS, KiB on Linux


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]

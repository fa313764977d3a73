"""What the CLI tests pass to a command to reach their own Redis keys."""

from __future__ import annotations

from typing import Any


def opts(rb: Any) -> list[str]:
    return ["--redis-url", rb.url, "--prefix", rb.prefix]


def key(rb: Any, name: str) -> str:
    return f"{rb.prefix}:{name}"

"""What the ccxt source tests of every exchange check the same way."""

from __future__ import annotations

from typing import Any


def by_type(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def secret_free(rig: Any, *texts: str) -> None:
    """No credential of the rig's environment in any of ``texts``."""
    for text in texts:
        for name, secret in rig.ctx.env.items():
            assert secret not in text, f"{name} leaked"

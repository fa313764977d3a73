"""How the CLI tests run a command, and what they pass it to reach their own Redis keys."""

from __future__ import annotations

from typing import Any

import pytest

from navstream.cli import main


def opts(rb: Any) -> list[str]:
    return ["--redis-url", rb.url, "--prefix", rb.prefix]


def key(rb: Any, name: str) -> str:
    return f"{rb.prefix}:{name}"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``navstream ARGS`` in-process; return (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err

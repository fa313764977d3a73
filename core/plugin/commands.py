"""Options a plugin's own subcommands share with navstream's (``navstream risk replay --config F``)."""

from __future__ import annotations

import argparse


def connection_options(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--redis-url`` and ``--prefix`` for a plugin command's own subcommands:
    given there, they win; not given, the values given before the subcommand stand."""
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file")
    p.add_argument("--redis-url", metavar="URL", default=argparse.SUPPRESS, help="Redis URL")
    p.add_argument("--prefix", default=argparse.SUPPRESS, help="key prefix of every stream and key")

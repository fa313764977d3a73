"""``navstream firestore preview`` and the plugin's ``navstream status`` section.

The preview prints the documents the sink would write now, from Redis state, and writes
nothing: it needs neither the Google package nor credentials, so a desk can look before it
enables the sink.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from navstream import AppProtocol
from navstream.plugins.nav.api import read_latest
from navstream.plugins.risk.api import read_records

from .config import FirestoreConfig, TargetError, resolve_target
from .coordination import Coordination
from .documents import history_bucket, history_document, with_data
from .sink import utc_day
from .sync import shared_documents

EXIT_USAGE = 2


def register_commands(register: Any) -> None:
    p = register(
        "firestore",
        command,
        help="the Firestore sink: preview the documents it would write",
        description="The Firestore sink (docs/firestore.md).",
    )
    sub = p.add_subparsers(dest="firestore_command", required=True, metavar="{preview}")
    from navstream import connection_options

    preview_parser = sub.add_parser(
        "preview",
        help="print the documents the sink would write now, from Redis state; writes nothing",
        description="Print the NAV, risk (and history) documents the sink would write now, built from "
        "Redis state exactly as a running consumer builds them. Nothing is written and Firestore is not "
        "contacted. Heartbeat documents are each running consumer's own and are not shown.",
    )
    preview_parser.add_argument("--json", action="store_true", help="one JSON object: full path -> document")
    connection_options(preview_parser)


async def command(app: AppProtocol, args: argparse.Namespace) -> int:
    return await preview(app, args)


async def preview(app: AppProtocol, args: argparse.Namespace) -> int:
    cfg = app.plugin_config("firestore", FirestoreConfig)
    try:
        target = resolve_target(cfg, os.environ, writing=False)
    except TargetError as exc:
        print(f"navstream: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    now = app.clock.now_ms()
    latest = await read_latest(app)
    docs = shared_documents(latest, await read_records(app), now)
    if cfg.history_every_s:
        bucket = history_bucket(now, cfg.history_every_s)
        docs += [history_document(snap, bucket, now) for snap in with_data(latest)]
    shown = {
        target.path(d.path): {
            **(d.data or {}),
            "written_at": "<server time of the commit>",
            "written_by": "<the consumer holding the lease>",
        }
        for d in docs
    }
    if args.json:
        print(json.dumps(shown, indent=2, sort_keys=True))
    else:
        where = f"project {target.project or '(not set)'}, {len(shown)} documents"
        print(f"# navstream firestore preview: nothing is written ({where})")
        if not cfg.enabled:
            print("# [firestore] enabled = false: a consumer writes none of these")
        for path, data in shown.items():
            print(path)
            print("  " + json.dumps(data, sort_keys=True, indent=2).replace("\n", "\n  "))
    return 0


async def status(app: AppProtocol, cfg: FirestoreConfig) -> Mapping[str, Any]:
    if not cfg.enabled:
        return {"enabled": False}
    try:
        target = resolve_target(cfg, os.environ, writing=False)
    except TargetError as exc:
        return {"enabled": True, "error": str(exc)}
    coordination = Coordination(app)
    day, _ = utc_day(app.clock.now_ms())
    return {
        "enabled": True,
        "project": target.project,
        "path": target.base,
        "dry_run": cfg.dry_run,
        "leader": await coordination.holder() or "none",
        "writes_today": await coordination.used(day),
        "max_writes_per_day": cfg.max_writes_per_day,
    }

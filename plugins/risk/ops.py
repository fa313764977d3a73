"""``navstream risk``: set the trading state by hand, show it, and replay the audit log.

``halt``, ``reduce`` and ``resume`` change the record of one account (``--account``) or of the
desk by compare-and-set, so a drawdown stored by a consumer at the same moment is never
overwritten unseen (the command reads again and retries). Each change records the reason, who
made it and when, and raises a ``trading_state_set`` alert. ``replay`` re-decides every logged
order from its logged inputs under the current config and reports each decision that differs.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from navstream import (
    AppProtocol,
    Outputs,
    as_str,
    as_str_list,
    connection_options,
    format_money,
    unescape_name,
    write_now,
)
from navstream.plugins.nav.api import ACCOUNTS

from .decide import TradingState
from .trading import TradingRecord, set_by_ops

#: Reasons that veto whatever the rules: a record with one of these and no inputs replays as itself.
VETO_ALWAYS = ("bad_order", "order_id_reused", "state_unreadable")
EXIT_DIFFERS = 1
EXIT_USAGE = 2
#: Attempts at a compare-and-set that keeps losing to concurrent writers before giving up.
CAS_ATTEMPTS = 20


unescape = unescape_name


def split_member(member: str) -> tuple[str, str]:
    venue, _, account = member.partition("/")
    return unescape(venue), unescape(account)


def describe_member(member: str) -> str:
    from .state import DESK

    if member == DESK:
        return "the desk"
    venue, account = split_member(member)
    return f"account {venue}/{account}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ms else ""


def status_row(member: str, record: TradingRecord) -> dict[str, str]:
    from .state import DESK

    scope = "desk" if member == DESK else "/".join(split_member(member))
    return {
        "scope": scope,
        "state": record.state,
        "reason": record.reason,
        "by": record.by,
        "since": _when(record.at),
        "high_water": record.high_water,
    }


def register_commands(register: Any) -> None:
    p = register(
        "risk",
        command,
        help="risk gate: halt, reduce or resume trading; show it; replay the audit log",
        description="Set the risk gate's trading state by hand (recorded with reason, who and when, "
        "seen by every consumer), show it, or replay an audit log against the current rules.",
    )
    sub = p.add_subparsers(dest="risk_command", required=True, metavar="{halt,reduce,resume,show,replay}")
    for name, text in (
        ("halt", "let no order through"),
        ("reduce", "let only orders that shrink a position through"),
        ("resume", "trade normally again (restarts the drawdown high-water mark)"),
    ):
        s = sub.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}: for one account with --account, else for the whole desk.",
        )
        s.add_argument("--account", help="the account (default: the whole desk)")
        s.add_argument("--venue", help="the account's venue (needed only when two venues have that account)")
        s.add_argument("--reason", required=True, help="why (recorded and shown by `navstream status`)")
        s.add_argument("--by", default=None, help="who (default: $NAVSTREAM_OPERATOR, else the login name)")
        connection_options(s)
    connection_options(sub.add_parser("show", help="the trading state of the desk and every account"))
    r = sub.add_parser(
        "replay",
        help="re-decide every logged order from its logged inputs",
        description="Re-decide every order in the audit log(s) from its logged inputs with the "
        "current [risk] and [nav] config, and report each decision that would differ. Exit 1 "
        "if any differs or a line cannot be read.",
    )
    r.add_argument("logs", nargs="+", metavar="LOG", help="audit log file(s): risk-<consumer>.jsonl[.N]")
    r.add_argument("--json", action="store_true", help="machine-readable report")
    r.add_argument("--limit", type=int, default=50, help="differences listed in full (default 50)")
    connection_options(r)


async def command(app: AppProtocol, args: argparse.Namespace) -> int:
    if args.risk_command == "replay":
        return replay(app, args)
    if args.risk_command == "show":
        return await show(app)
    return await set_state(app, args)


async def show(app: AppProtocol) -> int:
    from navstream import table, terminal_width

    from .state import read_records

    records = await read_records(app)
    rows = [status_row(m, r) for m, (_, r) in sorted(records.items())]
    if not rows:
        print("the desk and every account are active (no trading record stored)")
        return 0
    quote = _quote(app)
    for row in rows:  # for a person: the exact mark stays in the record and `navstream status --json`
        row["high_water"] = format_money(row["high_water"], quote) if row["high_water"] else ""
    columns = ["scope", "state", "reason", "by", "since", "high_water"]
    print(table(columns, [[row[c] for c in columns] for row in rows], width=terminal_width(), shrink=[2]))
    return 0


def _quote(app: AppProtocol) -> str:
    """The NAV's report currency, that of every high-water mark ("" without the nav plugin)."""
    from .gate import nav_config

    try:
        return nav_config(app).quote
    except RuntimeError:
        return ""


async def resolve_member(app: AppProtocol, venue: str | None, account: str | None) -> str:
    from .state import DESK, account_member

    if account is None:
        if venue is not None:
            raise ValueError("--venue needs --account (trading state is per account or for the whole desk)")
        return DESK
    if venue is not None:
        return account_member(venue, account)
    known = as_str_list(await app.redis.hkeys(app.keys.state(*ACCOUNTS)))
    matches = sorted({split_member(m)[0] for m in known if split_member(m)[1] == account})
    if len(matches) == 1:
        return account_member(matches[0], account)
    if not matches:
        raise ValueError(f"no account {account!r} is known to the nav plugin; give --venue to set it anyway")
    raise ValueError(f"account {account!r} exists on {', '.join(matches)}; say which with --venue")


async def set_state(app: AppProtocol, args: argparse.Namespace) -> int:
    from .state import TRADING, compare_and_set, decode_record

    states: dict[str, TradingState] = {"halt": "halted", "reduce": "reducing", "resume": "active"}
    state = states[args.risk_command]
    who = args.by or os.environ.get("NAVSTREAM_OPERATOR") or getpass.getuser()
    try:
        member = await resolve_member(app, args.venue, args.account)
        for _ in range(CAS_ATTEMPTS):
            seen = as_str(await app.redis.hget(app.keys.state(TRADING), member) or "")
            record = set_by_ops(decode_record(member, seen), state, args.reason, who, app.clock.now_ms())
            if await compare_and_set(app, member, seen, record):
                break
        else:
            print(
                f"navstream: error: {TRADING} {member!r} kept changing under {CAS_ATTEMPTS} attempts; try again",
                file=sys.stderr,
            )
            return 1
    except ValueError as exc:
        print(f"navstream: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    where = describe_member(member)
    out = Outputs(app.clock.now_ms())
    venue, account = (None, None) if args.account is None else split_member(member)
    out.alert(
        "trading_state_set",
        "critical" if state == "halted" else "warning",
        f"trading of {where} set to {state} by {record.by}: {record.reason}",
        venue=venue,
        account=account,
    )
    await write_now(app, out)
    print(f"trading of {where} is now {state} (by {record.by}: {record.reason})")
    return 0


# --- replay -----------------------------------------------------------------------------------


class Difference(msgspec.Struct):
    file: str
    line: int
    order_id: str
    logged: dict[str, str]
    now: dict[str, str]
    note: str = ""


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                yield number, line


def replay(app: AppProtocol, args: argparse.Namespace) -> int:
    from .gate import AuditRecord, config, nav_config
    from .inputs import RULES, input_hash, judge

    cfg, navcfg = config(app), nav_config(app)
    decoder = msgspec.json.Decoder(AuditRecord)
    replayed = same = 0
    differences: list[Difference] = []
    unreadable: list[str] = []
    for name in args.logs:
        path = Path(name)
        try:
            lines = list(_lines(path))
        except OSError as exc:
            print(f"navstream: error: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        for number, line in lines:
            try:
                record = decoder.decode(line)
            except (msgspec.DecodeError, ValueError) as exc:
                unreadable.append(f"{name}:{number}: {exc}")
                continue
            replayed += 1
            logged = record.decision.fields()
            note = ""
            if record.order is not None and record.inputs is not None:
                if record.input_hash and input_hash(record.order, record.inputs) != record.input_hash:
                    note = "input hash does not match the logged inputs (edited or corrupted record)"
                again = judge(record.order, record.inputs, cfg, navcfg).fields()
                if "order_hash" not in logged:  # logged before decisions named their order's content
                    again.pop("order_hash", None)
                if again != logged and record.rules < RULES:
                    note = f"logged under rules {record.rules}, re-decided under rules {RULES}"
            else:  # vetoed whatever the rules (a bad order, a reused id, unreadable state)
                held = logged.get("reasons", "")
                kept = held if held in VETO_ALWAYS else "bad_order"
                again = {**logged, "decision": "veto", "reasons": kept}
            if again == logged and not note:
                same += 1
            else:
                differences.append(Difference(name, number, record.order_id, logged, again, note))
    if args.json:
        print(
            json.dumps(
                {
                    "replayed": replayed,
                    "same": same,
                    "differ": len(differences),
                    "unreadable": unreadable,
                    "differences": msgspec.to_builtins(differences),
                },
                indent=2,
            )
        )
    else:
        print(
            f"replayed {replayed} decisions: {same} the same, {len(differences)} different"
            + (f", {len(unreadable)} unreadable lines" if unreadable else "")
        )
        for d in differences[: max(0, args.limit)]:
            changed = [
                f"{k}: {d.logged.get(k, '')!r} -> {d.now.get(k, '')!r}"
                for k in d.logged.keys() | d.now.keys()
                if d.logged.get(k) != d.now.get(k)
            ]
            print(
                f"  {d.file}:{d.line} order {d.order_id}: " + "; ".join(sorted(changed) + ([d.note] if d.note else []))
            )
        if len(differences) > args.limit:
            print(f"  ... and {len(differences) - args.limit} more (--limit, --json)")
        for problem in unreadable[:10]:
            print(f"  unreadable: {problem}")
    return EXIT_DIFFERS if differences or unreadable else 0

"""``navstream nav``: why a NAV is what it is, read from the state the plugin wrote.

It never recomputes: the answer is the NAV the risk gate and the dashboards see, with every
holding's inputs and the reasons for its status. Ages are shown against the clock now, and
the age of the evaluation itself is shown, so a NAV nobody has re-evaluated lately stands out.
Every snapshot is shown as a reader must take it now (:func:`~.valuation.as_read`): an ``ok``
past its ``fresh_until`` is ``stale``, whether or not a tick has said so yet.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from navstream import AppProtocol, format_amount, format_money, table, terminal_width

from .readers import ReaderLimit, read_reader_limits, seconds
from .state import StateError, read_detailed, read_latest, read_positions
from .valuation import Snapshot, as_read, counted_from, money

ORDER = {"account": 0, "venue": 1, "exchange": 2, "total": 3}
EXIT_NOT_FOUND = 1


def ordered(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    return sorted(snapshots, key=lambda s: (ORDER.get(s.scope, 9), s.venue, s.account))


def _age(now_ms: int, ts: int) -> str:
    if not ts:
        return "never"
    seconds = (now_ms - ts) / 1000
    return f"{seconds:.0f}s" if seconds < 600 else f"{seconds / 60:.0f}min"


def _name(s: Snapshot) -> str:
    if s.scope == "account":
        return f"{s.venue}/{s.account}"
    if s.scope == "venue":
        return s.venue
    return s.scope


def summary_row(s: Snapshot, now_ms: int) -> dict[str, Any]:
    """One scope for ``navstream status``, as read now (:func:`as_read`)."""
    s = as_read(s, now_ms)
    return {
        "scope": s.scope,
        "name": _name(s),
        "nav": money(s.nav),
        "status": s.status,
        "as_of_age_s": round((now_ms - s.as_of) / 1000, 1) if s.as_of else None,
        "computed_age_s": round((now_ms - s.computed_at) / 1000, 1),
        "missing": s.missing,
        "stale_sources": s.stale_sources,
    }


def select(latest: dict[str, Snapshot], venue: str | None, account: str | None) -> list[Snapshot]:
    chosen = []
    for s in latest.values():
        if venue is not None and s.venue != venue:
            continue
        if account is not None and s.account != account:
            continue
        if (venue is not None or account is not None) and s.scope in ("exchange", "total"):
            continue
        if account is not None and s.scope != "account":
            continue
        chosen.append(s)
    return ordered(chosen)


def as_json(
    s: Snapshot,
    now_ms: int,
    positions: dict[str, Any] | None,
    detailed: Snapshot | None = None,
    readers: Iterable[ReaderLimit] = (),
) -> dict[str, Any]:
    """The latest snapshot; for an account, ``breakdown``: the last tick's valuation of it,
    holding by holding (its ``computed_at`` says when); ``readers``: each declared reader of
    its scope, its limit, the age it judges and whether it refuses the NAV for it."""
    data: dict[str, Any] = msgspec.to_builtins(s)
    if detailed is not None:
        data["breakdown"] = as_json(detailed, now_ms, None)
    read_by = [
        {
            "reader": r.reader,
            "max_age_ms": r.max_age_ms,
            "age_ms": r.age_ms(s, now_ms),
            "refuses_for_age": r.refuses(s, now_ms),
        }
        for r in readers
        if r.reads(s)
    ]
    if read_by:
        data["readers"] = read_by
    data["nav"] = money(s.nav)
    data["computed_age_s"] = round((now_ms - s.computed_at) / 1000, 3)
    data["as_of_age_s"] = round((now_ms - s.as_of) / 1000, 3) if s.as_of else None
    for h in data.get("holdings", []):
        h["age_s"] = _input_age_s(now_ms, h)
        _plain(h, "balance", "unrealized_pnl", "unit", "value")
        for p in h.get("prices", []):
            p["age_s"] = _input_age_s(now_ms, p)
            _plain(p, "price")
    if positions is not None:
        data["positions"] = positions
    return data


def _input_age_s(now_ms: int, data: dict[str, Any]) -> float:
    """An input's age, counted from when it counts from: its ``ts``, or its ``received`` if
    earlier (a stamp ahead of the clock is not fresher)."""
    received = data.get("received")
    counted = data["ts"] if received is None else counted_from(data["ts"], received)
    return round((now_ms - counted) / 1000, 3)


def _plain(data: dict[str, Any], *names: str) -> None:
    """Decimal strings as exact plain decimals (``1E-8`` -> ``0.00000001``)."""
    for name in names:
        if data.get(name) is not None:
            data[name] = money(Decimal(data[name]))


def shown_asset(asset: str, venue_asset: str, venue: str) -> str:
    """The desk's name of an asset, with the venue's own beside it when a source renamed it:
    ``BTC (kraken: XXBT)``, so ops can see where a name came from."""
    return f"{asset} ({venue}: {venue_asset})" if venue_asset and venue_asset != asset else asset


def _m(value: Decimal | None) -> str:
    return "-" if value is None else money(value)


def _read_by(s: Snapshot, now_ms: int, readers: Iterable[ReaderLimit]) -> list[str]:
    """Each declared reader of the scope: its limit, and whether it refuses this NAV for its age."""
    said = []
    for r in readers:
        if not r.reads(s):
            continue
        limit = seconds(r.max_age_ms)
        if s.status == "ok" and r.refuses(s, now_ms):
            said.append(f"the {r.reader} REFUSES it: {r.age_ms(s, now_ms) / 1000:.0f}s old, past its {limit}")
        else:
            said.append(f"the {r.reader} vetoes at age > {limit}")
    return said


def render(
    s: Snapshot,
    now_ms: int,
    positions: dict[str, Any] | None,
    detailed: Snapshot | None = None,
    readers: Iterable[ReaderLimit] = (),
) -> str:
    """One scope for a person: NAVs and values as money in the one format (``format_money``);
    the inputs being explained (balances, unrealized PnL, prices, unit values) exact."""
    head = (
        f"{s.scope} {_name(s)}"
        + (f" ({s.kind}{', ' + s.label if s.label else ''})" if s.kind else "")
        + f": {format_money(s.nav, s.quote)}  status {s.status.upper()}"
    )
    ages = f"  evaluated {_age(now_ms, s.computed_at)} ago; oldest input {_age(now_ms, s.as_of)} old"
    lines = [head, "; ".join([ages, *_read_by(s, now_ms, readers)])]
    lines.extend(f"  why: {r}" for r in s.reasons)  # the first reason right under the status
    if detailed is not None:
        if detailed.computed_at != s.computed_at:
            lines.append(
                f"  holdings as the last tick valued them, {_age(now_ms, detailed.computed_at)} ago: "
                f"{format_money(detailed.nav, detailed.quote)} {detailed.status.upper()}"
            )
        s = msgspec.structs.replace(s, holdings=detailed.holdings)
    if s.holdings:
        rows = []
        for h in s.holdings:
            price = (
                "; ".join(f"{p.pair} {money(p.price)} @{p.source} ({_age(now_ms, p.seen)})" for p in h.prices) or "-"
            )
            rows.append(
                [
                    shown_asset(h.asset, h.venue_asset, s.venue),
                    money(h.balance),
                    money(h.unrealized_pnl),
                    _age(now_ms, h.seen),
                    _m(h.unit),
                    " -> ".join(h.route) or "-",
                    price,
                    "NOT VALUED" if h.value is None else format_amount(h.value, s.quote),
                    h.missing or ("; ".join(h.stale) if h.stale else ""),
                ]
            )
        lines.append(
            table(
                ["asset", "balance", "upnl", "age", "unit value", "route", "prices used", f"value ({s.quote})", "note"],
                rows,
                width=terminal_width(),
                shrink=[5, 6, 8],  # free text; amounts and names are never cut
            )
        )
    if positions:
        lines.append(
            table(
                ["symbol", "qty", "entry", "mark", "upnl", "age"],
                [
                    [
                        sym,
                        p["qty"],
                        p["entry_price"],
                        p.get("mark_price", "-"),
                        p.get("unrealized_pnl", "-"),
                        _age(now_ms, p["ts"]),
                    ]
                    for sym, p in sorted(positions.items())
                ],
            )
        )
    if s.accounts:
        lines.append(f"  adds up: {', '.join(s.accounts)}")
    if s.missing:
        lines.append(f"  missing (not in the NAV): {', '.join(s.missing)}")
    if s.stale_sources:
        lines.append(f"  stale: {', '.join(s.stale_sources)}")
    return "\n".join(lines)


def _position(p: Any, ts: int) -> dict[str, Any]:
    data: dict[str, Any] = {**msgspec.to_builtins(p), "ts": ts}
    _plain(data, "qty", "entry_price", "mark_price", "unrealized_pnl")
    return data


async def command(app: AppProtocol, args: argparse.Namespace) -> int:
    try:
        return await _explain(app, args)
    except StateError as exc:  # say which member is broken, not a traceback
        print(f"navstream: error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND


async def _explain(app: AppProtocol, args: argparse.Namespace) -> int:
    now = app.clock.now_ms()
    latest = {sid: as_read(s, now) for sid, s in (await read_latest(app)).items()}
    detailed = {sid: as_read(s, now) for sid, s in (await read_detailed(app)).items()}
    chosen = select(latest, args.venue, args.account)
    if not chosen:
        what = " ".join(f"--{k} {v}" for k, v in (("venue", args.venue), ("account", args.account)) if v)
        message = (
            f"no NAV for {what}" if what else "no NAV computed yet"
        ) + f" under {app.keys.state('nav', 'latest')} (is a consumer with the nav plugin running?)"
        if args.json:
            print(json.dumps({"error": message, "scopes": []}))
        else:
            print(message)
        return EXIT_NOT_FOUND
    readers, unreadable = await read_reader_limits(app, now)
    for problem in unreadable[:5]:  # shows no limit, and says so
        print(f"navstream: warning: a reader's declared NAV age limit is unreadable: {problem}", file=sys.stderr)
    positions: dict[str, dict[str, Any]] = {}
    for s in chosen:
        if s.scope == "account":
            raw = await read_positions(app, s.venue, s.account)
            positions[s.scope_id] = {sym: _position(p, ts) for sym, (ts, p) in raw.items()}
    if args.json:
        print(
            json.dumps(
                [as_json(s, now, positions.get(s.scope_id), detailed.get(s.scope_id), readers) for s in chosen],
                indent=2,
            )
        )
    else:
        print("\n\n".join(render(s, now, positions.get(s.scope_id), detailed.get(s.scope_id), readers) for s in chosen))
    return 0

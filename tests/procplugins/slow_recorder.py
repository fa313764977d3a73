"""``procplugins.slow_recorder``: a test plugin for the process-level tests on real Redis.

Loaded by dotted path through ``[plugins] modules = ["procplugins.slow_recorder"]`` (the tests
put ``tests/`` on ``PYTHONPATH``), exactly like an entry-point plugin. Per batch it:

- sleeps ``[slow_recorder] delay_s``, so a signal lands while a batch is in flight;
- raises ``RuntimeError`` if any Balance's asset is in ``fail_assets`` (a plugin that raises
  on poison entries);
- records every Balance as ``P:state:rec:<venue>:<account>:<asset>`` with its ``balance``,
  last ``ts`` winning, so the tests can check what was processed by reading Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from navstream import App, Balance, Event, Outputs, hookimpl

SECTION = "slow_recorder"


class SlowRecorderConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Seconds to sleep per batch, before anything is recorded.
    delay_s: float = 0.0
    #: Assets whose Balance events make the whole call raise.
    fail_assets: list[str] = []


@hookimpl
def navstream_config_sections(register: Any) -> None:
    register(SECTION, SlowRecorderConfig)


@hookimpl
async def navstream_events(app: App, events: Sequence[Event], out: Outputs) -> None:
    config: SlowRecorderConfig = app.plugin_config(SECTION)
    if config.delay_s > 0:
        await asyncio.sleep(config.delay_s)
    poison = sorted({e.asset for e in events if isinstance(e, Balance) and e.asset in config.fail_assets})
    if poison:
        raise RuntimeError(f"slow_recorder refuses poison asset(s) {', '.join(poison)}")
    for e in events:
        if isinstance(e, Balance):
            out.put_latest(f"rec:{e.venue}:{e.account}:{e.asset}", e.ts, {"balance": str(e.balance)})

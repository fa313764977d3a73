"""``navstream demo``: a bundled trading-desk scenario replayed through the real consumer loop.

Why it exists: the quickest way to see what navstream does, how it behaves when sources fail,
and how the risk gate answers the trading engine's orders through it all, is to watch it process
a realistic feed, with no Redis to install. Nothing in the loop is simulated: entries go through
XADD, XREADGROUP, every loaded plugin, the writer and XACK exactly as in production. Only the
clock is (a :class:`~navstream.app.ManualClock`), so ten desk minutes take seconds.

One job a module, each importing only those above it:

- :mod:`~navstream.demo.settings`: :data:`DEMO_CONFIG` (config/demo.toml's values) decoded as a
  config file is, and the demo's own audit directory;
- :mod:`~navstream.demo.backend`: the Redis it runs on (in-process, or a real one on an unused
  prefix) and deleting its keys;
- :mod:`~navstream.demo.scenario`: ``demo_scenario.jsonl``, its format, parsed and checked;
- :mod:`~navstream.demo.stubs`: the stub venue and the demo's real sources it answers;
- :mod:`~navstream.demo.replay`: the real consumer driven step by step on the simulated clock,
  and what each step wrote, read back from Redis;
- :mod:`~navstream.demo.show`: the live table; :mod:`~navstream.demo.summary`: the summary;
- :mod:`~navstream.demo.run`: :func:`run_demo`, the command itself.
"""

from __future__ import annotations

# The in-process Redis: without it (the container image leaves it out) importing the demo fails
# at once, and `navstream demo` says so in one line. Imported here, not only in .backend, so that
# holds even when the submodules were imported before.
import fakeredis  # noqa: F401

from navstream.demo.backend import delete_prefix, make_backend
from navstream.demo.replay import Replay, StepRow
from navstream.demo.run import MAX_PAUSE_S, pause_s, run_demo
from navstream.demo.scenario import ScenarioError, SourceAttempt, Step, VenueAnswer, load_scenario
from navstream.demo.settings import DEMO_CONFIG, demo_settings, with_audit_dir
from navstream.demo.stubs import COINGECKO_429_BODY, StubVenue

__all__ = [
    "COINGECKO_429_BODY",
    "DEMO_CONFIG",
    "MAX_PAUSE_S",
    "Replay",
    "ScenarioError",
    "SourceAttempt",
    "Step",
    "StepRow",
    "StubVenue",
    "VenueAnswer",
    "delete_prefix",
    "demo_settings",
    "load_scenario",
    "make_backend",
    "pause_s",
    "run_demo",
    "with_audit_dir",
]

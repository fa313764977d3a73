"""The plugin API: every hook navstream calls, with its exact contract.

A plugin is a module or object with functions marked ``@hookimpl`` and named like the specs
below. It may implement any subset, and accept any subset of each hook's arguments. Every hook
except ``navstream_config_sections`` may be ``async`` (return an awaitable); navstream awaits it.

Batch hooks (``navstream_events``, ``navstream_orders``, ``navstream_tick``) are called once per
plugin with the plugin's own :class:`~navstream.contract.outputs.Outputs`, so that a plugin that raises
loses only its own outputs: the other plugins keep running, the entries it failed are retried
and, after ``max_deliveries``, dead-lettered with its error. For the same reason they cannot be
wrapped (``wrapper=True``); navstream rejects such a plugin at startup.

Plugins must be idempotent: at-least-once delivery means an entry can be seen more than once,
and an entry a plugin failed is shown again to every plugin. Absolute snapshots and
last-``ts``-wins state (:meth:`Outputs.put_latest`) make that free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence

import pluggy

if TYPE_CHECKING:
    import argparse

    import msgspec

    from navstream.app import App
    from navstream.contract.events import Event, InvalidOrder, Order
    from navstream.contract.outputs import Outputs
    from navstream.sources import SourceFactory, SourceSettings

PROJECT = "navstream"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------------------------
# Setup
# -------------------------------------------------------------------------------------------


@hookspec(historic=True)
def navstream_config_sections(register: Callable[[str, type[msgspec.Struct]], None]) -> None:
    """Declare the config sections this plugin reads.

    Call ``register("nav", NavConfig)`` for a ``[nav]`` table decoded into ``NavConfig`` (use
    ``forbid_unknown_fields=True`` so typos fail). The decoded value is available from
    :meth:`App.plugin_config`. A section declared twice is an error.

    :param register: ``register(section_name, struct_type)``.
    """


@hookspec
def navstream_startup(app: App) -> Awaitable[None] | None:
    """The consumer is connected and the group exists; no entry has been read yet.

    Load state, check credentials, open clients. Raising here stops navstream from starting,
    with the error shown: a plugin that cannot work must not pretend to.

    :param app: the running application.
    """


@hookspec(historic=True)
def navstream_sources(register: Callable[[str, type[SourceSettings], SourceFactory], None]) -> None:
    """Contribute source kinds to ``navstream ingest`` (see :mod:`navstream.sources`).

    Call ``register("coingecko", CoinGeckoSettings, CoinGeckoSource)``: ``[sources.<name>]``
    sections whose ``kind`` (default: the name) is ``"coingecko"`` are decoded into
    ``CoinGeckoSettings`` (a :class:`~navstream.sources.SourceSettings` subclass) and built
    with ``factory(name, settings, context)`` once, when the ingest process starts: raise
    :class:`~navstream.sources.SourceConfigError` there for a missing credential. A kind
    registered twice is an error.

    :param register: ``register(kind, settings_type, factory)``.
    """


# -------------------------------------------------------------------------------------------
# The loop
# -------------------------------------------------------------------------------------------


@hookspec
def navstream_events(
    app: App, events: Sequence[Event], out: Outputs
) -> Awaitable[None] | None:
    """A batch of decoded ``P:events`` entries, in stream order.

    Write what you derive to ``out``; navstream writes every plugin's outputs and state in one
    step that acknowledges the batch last. Raising fails the batch for this plugin only.

    :param app: the running application.
    :param events: ``Balance``, ``Position``, ``Price`` and ``SourceStatus`` events.
    :param out: this plugin's output buffer for the batch.
    """


@hookspec
def navstream_orders(
    app: App, orders: Sequence[Order | InvalidOrder], out: Outputs
) -> Awaitable[None] | None:
    """A batch of order intents from ``P:orders``, in stream order.

    Every order must get a decision on ``P:decisions``. An ``InvalidOrder`` is an entry that
    failed to decode but has an ``order_id``: answer it (veto, ``bad_order``). While no plugin
    implements this hook, navstream does not read ``P:orders`` at all, so orders wait for a
    gate instead of being acknowledged unanswered.

    :param app: the running application.
    :param orders: decoded orders and invalid ones with their reason.
    :param out: this plugin's output buffer for the batch.
    """


@hookspec
def navstream_tick(app: App, now_ms: int, out: Outputs) -> Awaitable[None] | None:
    """Time-based work, every ``[consumer] tick_ms``, whether or not events arrive.

    This is where freshness is judged against the clock: with no events at all, a value must
    still turn stale on time.

    :param app: the running application.
    :param now_ms: the clock, epoch milliseconds (the demo and tests drive a simulated clock).
    :param out: this plugin's output buffer for the tick.
    """


@hookspec
def navstream_shutdown(app: App) -> Awaitable[None] | None:
    """The loop has stopped and the last batch is acknowledged: flush and close.

    :param app: the application that is stopping.
    """


# -------------------------------------------------------------------------------------------
# Reporting
# -------------------------------------------------------------------------------------------


@hookspec
def navstream_commands(register: Callable[..., argparse.ArgumentParser]) -> None:
    """Add subcommands to the ``navstream`` command line (``navstream nav``, ...).

    ``register(name, handler, help="...", description="...")`` returns the subcommand's
    ``argparse`` parser, which already has ``--config``, ``--redis-url`` and ``--prefix``; add
    your own arguments to it. ``handler`` is ``async def handler(app, args) -> int`` (the exit
    code), called with an :class:`App` connected to Redis as ``navstream status`` has. A name
    taken by navstream or by another plugin is an error. The CLI loads plugins before it parses
    arguments, from the entry points and ``NAVSTREAM_PLUGINS``; a plugin a config file disables
    still lists its command, which then says the plugin is not loaded.

    :param register: ``register(name, handler, **parser_kwargs)``.
    """


@hookspec
def navstream_health(app: App) -> Mapping[str, str | int | float] | None:
    """This consumer's view of the plugin's health, for its heartbeat (every tick).

    Return ``{"status": "ok"}`` or ``{"status": "degraded", "reason": "..."}`` plus any
    counters worth seeing (``writes``, ``last_failure``, ...). They are written into
    ``P:heartbeat:<consumer>`` as ``<plugin>.<key>``; any plugin ``degraded`` makes the
    heartbeat's ``health`` field ``degraded`` with every reason in ``health_reasons``. Called
    in the loop, between batches: synchronous, no I/O (report what you already know).

    :param app: the running application.
    :return: the plugin's health fields, or ``None`` for nothing to report.
    """


@hookspec
def navstream_status(app: App) -> Mapping[str, Any] | Awaitable[Mapping[str, Any]] | None:
    """Contribute to ``navstream status``: a JSON-able mapping shown under the plugin's name.

    Called by the CLI, not the loop, so read what you need from Redis through ``app.redis``.

    :param app: an application connected to Redis (its loop is not running).
    :return: the plugin's section, or ``None`` for nothing to show.
    """

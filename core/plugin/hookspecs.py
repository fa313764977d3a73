"""The plugin API: every hook navstream calls, with its exact contract.

A plugin is a class (instantiated once per application, so its attributes are that app's
state), a module, or any object, with methods or functions marked ``@hookimpl`` and named like
the specs below. It may implement any subset, and accept any subset of each hook's arguments.
Every call goes through :mod:`navstream.plugin.calls`.

Which hooks may be ``async``: the loop and reporting hooks that say so in their return type
(``navstream_startup``, ``navstream_events``, ``navstream_orders``, ``navstream_tick``,
``navstream_shutdown``, ``navstream_status``, and the reporting hooks below) may return an
awaitable (or a callable returning one), which navstream awaits. The ``register`` hooks
(``navstream_config_sections``, ``navstream_sources``, ``navstream_commands``) and
``navstream_health`` must answer synchronously: they run before any loop exists or between
batches; an awaitable from them is an error that names the plugin.

Batch hooks (``navstream_events``, ``navstream_orders``, ``navstream_tick``) are called once per
plugin with the plugin's own :class:`~navstream.contract.outputs.Outputs`, so that a plugin
that raises loses only its own outputs: the other plugins keep running, the entries it failed
are retried and, after ``max_deliveries``, dead-lettered with its error. For the same reason
they cannot be wrapped (``wrapper=True``); navstream rejects such a plugin at startup.

Plugins must be idempotent: at-least-once delivery means an entry can be seen more than once,
and an entry a plugin failed is shown again to every plugin. Absolute snapshots and
last-``ts``-wins state (:meth:`Outputs.put_latest`) make that free.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import argparse

    import msgspec

    from navstream.contract.events import Event, InvalidOrder, Order
    from navstream.contract.outputs import Outputs
    from navstream.plugin.protocol import AppProtocol as App
    from navstream.sources import SourceFactory, SourceSettings

PROJECT = "navstream"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RegisterSection(Protocol):
    """``register("nav", NavConfig)``: the ``[nav]`` table is decoded into ``NavConfig``."""

    def __call__(self, name: str, type_: type[msgspec.Struct], /) -> None: ...


class RegisterSource(Protocol):
    """``register("coingecko", CoinGeckoSettings, CoinGeckoSource)``: a source kind."""

    def __call__(self, kind: str, settings: type[SourceSettings], factory: SourceFactory, /) -> None: ...


#: ``async def handler(app, args) -> int``: a command's body, given a connected app.
CommandHandler = Callable[["App", "argparse.Namespace"], Awaitable[int]]


class RegisterCommand(Protocol):
    """``register("nav", handler, help="...")``: a subcommand; returns its parser."""

    def __call__(self, name: str, handler: CommandHandler, /, **parser_kwargs: Any) -> argparse.ArgumentParser: ...


# -------------------------------------------------------------------------------------------
# Setup
# -------------------------------------------------------------------------------------------


@hookspec
def navstream_config_sections(register: RegisterSection) -> None:
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


@hookspec
def navstream_sources(register: RegisterSource) -> None:
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
def navstream_events(app: App, events: Sequence[Event], out: Outputs) -> Awaitable[None] | None:
    """A batch of decoded ``P:events`` entries, in stream order.

    Write what you derive to ``out``; navstream writes every plugin's outputs and state in one
    step that acknowledges the batch last. Raising fails the batch for this plugin only.

    :param app: the running application.
    :param events: ``Balance``, ``Position``, ``Price`` and ``SourceStatus`` events.
    :param out: this plugin's output buffer for the batch.
    """


@hookspec
def navstream_orders(app: App, orders: Sequence[Order | InvalidOrder], out: Outputs) -> Awaitable[None] | None:
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

    Which consumers call it follows ``[consumer] role`` and the hooks the plugin implements: a
    consumer of role ``all`` ticks every plugin; one of role ``orders`` (it reads only
    ``P:orders``) only the plugins that implement ``navstream_orders``; one of role ``events``
    only those that implement no ``navstream_orders``, or ``navstream_events`` too. So an
    orders consumer never runs an event plugin's time-based work between two orders, and a
    plugin's tick runs where the entries it keeps state for are read. A plugin with both batch
    hooks is ticked by both kinds (as by every replica of role ``all``: ticks run in every
    consumer at once, so they must be idempotent anyway).

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
def navstream_commands(register: RegisterCommand) -> None:
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


if TYPE_CHECKING:
    from navstream.serve.report import Metric, PluginMetrics, StatusSection


@hookspec
def navstream_status(app: App) -> Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None:
    """The plugin's section of ``navstream status``, and of the consumer's ``/api/status``:
    a JSON-able mapping shown under the plugin's name (``"status": {"<plugin>": ...}`` there).

    On the status page it is drawn as it is (numbers and text as facts, lists of flat mappings
    as tables), unless the plugin draws its own panels (:func:`navstream_status_page`). Called
    by the CLI and on a request to the endpoint, never by the loop: read what you need from
    Redis through ``app.redis``; the endpoint waits at most a couple of seconds for it.

    :param app: an application connected to Redis (a CLI's, or a running consumer's).
    :return: the plugin's section, or ``None`` for nothing to show.
    """


@hookspec
def navstream_status_page(app: App, now_ms: int) -> StatusSection | Awaitable[StatusSection | None] | None:
    """The plugin's panels on the consumer's status page (``/``, drawn from ``/api/status``).

    A :class:`~navstream.serve.report.StatusSection` holds :class:`~navstream.serve.report.Panel`
    documents of tables, facts, text and charts that the page draws whoever sent them; they go
    to ``/api/status`` as ``"sections": {"<plugin>": {"panels": [...]}}``, and its ``fields``
    to the top level of that document. Called on request (at most every couple of seconds,
    shared by every open page), bounded in time; a plugin that raises shows its error in its
    place, and the other plugins' panels are drawn as usual.

    :param app: the running consumer's application.
    :param now_ms: the moment the page's reads are taken at (judge freshness against it).
    :return: the plugin's panels, or ``None`` to draw its ``navstream_status`` section as it is.
    """


@hookspec
def navstream_metrics(
    app: App, now_ms: int
) -> PluginMetrics | Sequence[Metric] | Awaitable[PluginMetrics | Sequence[Metric] | None] | None:
    """The plugin's metric families on ``/metrics``, built at scrape time.

    Return prometheus_client families (:func:`~navstream.serve.report.gauge`,
    :func:`~navstream.serve.report.counter`), or a :class:`~navstream.serve.report.PluginMetrics`
    that also says which keys of the plugin's ``navstream_health`` report are running counts
    (``navstream_plugin_counter_total``) or not exported. Name families ``navstream_<plugin>_...``
    and list them in your docs: a name navstream or another plugin exports is left out. May
    read Redis; bounded in time with the rest of the scrape. A plugin that raises or runs out
    of time loses its families for that scrape (``navstream_plugin_report_errors_total``
    counts it); the rest of the scrape is unaffected.

    :param app: the running consumer's application.
    :param now_ms: the moment the scrape is taken at.
    :return: the plugin's families, or ``None`` for none.
    """


@hookspec
def navstream_readiness(
    app: App, now_ms: int, ready_on_stale_data: bool
) -> Sequence[str] | Awaitable[Sequence[str] | None] | None:
    """Why this consumer is not ready to do its work, in this plugin's view: reasons for
    ``/readyz`` (503 while any plugin gives one), in words a person on call can act on.

    Readiness is about this process. Data that is stale for every replica alike (an input past
    its age limit) makes it not ready only when ``ready_on_stale_data`` is false (``[http]
    ready_on_stale_data = false``); give such reasons only then. A plugin's own trouble that it
    already reports in ``navstream_health`` (``degraded``) is a reason already: do not repeat it.
    At most five reasons of a plugin are listed, the rest counted. A plugin that raises is
    a reason itself (``plugin <name>: readiness unknown: ...``). Not called while Redis is
    unreachable (that is the reason then).

    :param app: the running consumer's application.
    :param now_ms: the moment the probe is answered at.
    :param ready_on_stale_data: false when stale data must make the consumer not ready.
    :return: the reasons, empty or ``None`` for none.
    """

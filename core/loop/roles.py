"""Consumer roles: which input streams a consumer reads, and whose ticks it runs.

A consumer of role ``all`` reads events and, when a plugin answers them, orders, in one
``XREADGROUP``: an order that arrives while an event batch is in the plugins waits for it. Role
``orders`` reads only ``P:orders`` and role ``events`` every other input, so a deployment that
runs both answers orders whatever the event flow costs (docs/deployment.md). Group, delivery,
reclaim and dead-letter rules are the same in every role; each consumer applies them to the
streams it reads.

Ticks follow the hooks a plugin implements, a rule core states without knowing any plugin: an
orders consumer ticks the plugins that answer orders (their time-based work serves the orders'
answers), an events consumer those that do not answer orders or that also handle events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from navstream.config import ConfigError, Role, Settings
from navstream.plugin import calls

if TYPE_CHECKING:  # `navstream config check` checks the role too, without the app's imports
    from navstream.app import App
    from navstream.plugin.manager import LoadedPlugins

__all__ = ["check_role", "read_streams", "tick_plugins"]


def _implementers(app: App, hook_name: str) -> set[str]:
    return {impl.plugin_name for impl in calls.impls(app.pm, hook_name)}


def check_role(settings: Settings, plugins: LoadedPlugins) -> None:
    """Refuse a role that cannot work with the plugins loaded, before anything connects
    (``navstream run``, and ``navstream config check`` for a role set in the file).

    :raises ConfigError: role ``orders`` and no plugin implements ``navstream_orders``: the
        consumer would read orders that nothing answers.
    """
    if settings.consumer.role == "orders" and not calls.has_impls(plugins.manager, "navstream_orders"):
        loaded = ", ".join(p.name for p in plugins.info) or "none"
        raise ConfigError(
            f'{settings.source}: [consumer] role is "orders", but no loaded plugin implements '
            f"navstream_orders (loaded: {loaded}), so nothing would answer them; load the order "
            'plugin or run this consumer as role "all" or "events"'
        )


def read_streams(app: App) -> list[str]:
    """The input streams this consumer reads, by its role and the plugins loaded."""
    keys, role = app.keys, app.settings.consumer.role
    if role == "orders":
        return [keys.orders]
    if role == "events":
        return [s for s in keys.inputs if s != keys.orders]
    return [keys.events] + ([keys.orders] if app.has_impls("navstream_orders") else [])


def tick_plugins(app: App, role: Role | None = None) -> frozenset[str] | None:
    """Names of the plugins whose ``navstream_tick`` this consumer calls; None: every one.

    ``orders``: those that implement ``navstream_orders``. ``events``: those that implement no
    ``navstream_orders``, or ``navstream_events`` too. ``all``: every plugin.
    """
    role = role or app.settings.consumer.role
    if role == "all":
        return None
    answers_orders = _implementers(app, "navstream_orders")
    if role == "orders":
        return frozenset(answers_orders)
    ticking = _implementers(app, "navstream_tick")
    return frozenset(ticking - (answers_orders - _implementers(app, "navstream_events")))

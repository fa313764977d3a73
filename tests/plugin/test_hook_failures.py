"""A plugin's failure stays its own, and stops what it must stop: a startup that fails stops
navstream before any later plugin starts; a health report that cannot be read is that plugin's
``degraded``, never the loop's crash; a ``register`` hook that is async is a plugin error."""

from __future__ import annotations

from typing import Any

import pytest

from navstream import hookimpl
from navstream.loop.consumer import Consumer, StartupError
from navstream.plugin.manager import PluginError, build_plugin_manager


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text for this one")


async def test_a_failed_startup_stops_before_the_next_plugin_starts(make_app: Any) -> None:
    started: list[str] = []

    class First:
        @hookimpl(tryfirst=True)
        def navstream_startup(self) -> None:
            started.append("first")
            raise RuntimeError("no credentials")

    class Second:
        @hookimpl
        async def navstream_startup(self) -> None:
            started.append("second")  # would open a client nobody shuts down

    app = make_app(plugins=[("second", Second()), ("first", First())])
    with pytest.raises(StartupError, match="plugin 'first' failed to start: RuntimeError: no credentials"):
        await Consumer(app).setup()
    assert started == ["first"]


async def test_an_unreadable_health_report_is_that_plugins_degraded_state(make_app: Any) -> None:
    class Odd:
        @hookimpl
        def navstream_health(self) -> dict[str, Any]:
            return {"status": "ok", "queue": Unprintable()}

    class Fine:
        @hookimpl
        def navstream_health(self) -> dict[str, Any]:
            return {"status": "ok", "writes": 3}

    app = make_app(plugins=[("odd", Odd()), ("fine", Fine())])
    consumer = Consumer(app)
    await consumer.setup()
    health = consumer.health()
    assert health["health"] == "degraded"
    assert health["odd.status"] == "degraded" and "no text for this one" in health["odd.reason"]
    assert "odd.queue" not in health
    assert health["fine.status"] == "ok" and health["fine.writes"] == "3"
    await consumer.tick()  # the heartbeat is written, the loop goes on


def test_an_async_register_hook_is_a_plugin_error_naming_the_plugin() -> None:
    class AsyncSections:
        @hookimpl
        async def navstream_config_sections(self, register: Any) -> None:
            register("x", dict)

    with pytest.raises(PluginError, match="'late'.*must be synchronous"):
        build_plugin_manager(load_entrypoints=False, extra=[("late", AsyncSections())], env={})

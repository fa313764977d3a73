"""``navstream_health``: each plugin's health in its consumer's heartbeat, and one ``health``
field that says ``degraded`` (with every reason) when any plugin is, or cannot say."""

from __future__ import annotations

from typing import Any

from navstream import hookimpl
from navstream.loop.consumer import Consumer


class Healthy:
    @hookimpl
    def navstream_health(self, app: Any) -> dict[str, Any]:
        return {"status": "ok", "writes": 12, "last_failure": ""}


class Degraded:
    @hookimpl
    def navstream_health(self) -> dict[str, Any]:
        return {"status": "degraded", "reason": "sink unreachable for 30s", "failures": 3}


class Broken:
    @hookimpl
    def navstream_health(self) -> Any:
        raise RuntimeError("no idea")


class Silent:
    @hookimpl
    def navstream_health(self) -> None:
        return None


async def beat(make_app: Any, plugins: list[tuple[str, object]]) -> dict[str, str]:
    app = make_app(plugins=plugins)
    consumer = Consumer(app)
    await consumer.setup()
    await consumer.tick()
    return await app.redis.hgetall(app.keys.heartbeat(app.consumer_name))  # type: ignore[no-any-return]


async def test_healthy_plugins_report_their_fields_and_health_is_ok(make_app: Any) -> None:
    fields = await beat(make_app, [("healthy", Healthy()), ("silent", Silent())])
    assert (fields["healthy.status"], fields["healthy.writes"], fields["healthy.last_failure"]) == ("ok", "12", "")
    assert (fields["health"], fields["health_reasons"]) == ("ok", "")
    assert not [k for k in fields if k.startswith("silent.")]


async def test_one_degraded_or_broken_plugin_makes_the_consumer_degraded_with_reasons(make_app: Any) -> None:
    fields = await beat(make_app, [("healthy", Healthy()), ("sink", Degraded()), ("broken", Broken())])
    assert fields["health"] == "degraded"
    assert fields["sink.reason"] == "sink unreachable for 30s" and fields["sink.failures"] == "3"
    assert fields["broken.status"] == "degraded"
    assert fields["broken.reason"] == "health report failed: RuntimeError: no idea"
    assert sorted(fields["health_reasons"].split("; ")) == [
        "broken: health report failed: RuntimeError: no idea",
        "sink: sink unreachable for 30s",
    ]

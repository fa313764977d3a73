"""Every hook navstream declares is called, with the arguments its spec names, by the real
loop, endpoint and command line; and every hook's documented example registers against its spec.

The spy below implements every hook in :mod:`navstream.plugin.hookspecs`, built from the specs
themselves: a hook added to the specs but never called (or called with other arguments) fails
here, whatever the other tests say.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from support import ROOT, START_MS
from support.serving import serving

from navstream import Event, InvalidOrder, Order, Outputs, Price, SourceSettings, hookimpl
from navstream.contract.events import encode_fields
from navstream.plugin import hookspecs
from navstream.plugin.manager import PluginError, build_plugin_manager

HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("navstream_"))


class SpyConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    loud: bool = False


class SpySettings(SourceSettings, frozen=True, kw_only=True):
    pass


async def spy_command(app: Any, args: Any) -> int:
    return 0


def _spy_class() -> type:
    """A class with one ``@hookimpl`` method per hook spec, taking exactly the spec's arguments."""
    namespace: dict[str, Any] = {}
    for hook in HOOKS:
        params = list(inspect.signature(getattr(hookspecs, hook)).parameters)
        kwargs = ", ".join(f"{p!r}: {p}" for p in params)
        source = f"def {hook}(self, {', '.join(params)}):\n    return self.called({hook!r}, {{{kwargs}}})\n"
        exec(source, namespace)
        namespace[hook] = hookimpl(namespace[hook])
    namespace.pop("__builtins__", None)
    return type("Spy", (), {k: v for k, v in namespace.items() if k.startswith("navstream_")})


class Spy(_spy_class()):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, Any]]] = {}

    def called(self, hook: str, kwargs: dict[str, Any]) -> Any:
        self.calls.setdefault(hook, []).append(kwargs)
        answers: dict[str, Callable[[], Any]] = {
            "navstream_config_sections": lambda: kwargs["register"]("spy", SpyConfig),
            "navstream_sources": lambda: kwargs["register"]("spy-kind", SpySettings, lambda *a: None),
            "navstream_commands": lambda: kwargs["register"]("spy", spy_command, help="the spy's command"),
            "navstream_health": lambda: {"status": "ok", "seen": len(self.calls)},
            "navstream_status": lambda: {"hooks_seen": len(self.calls)},
        }
        answer = answers.get(hook)
        return answer() if answer is not None else None


async def test_every_hook_is_called_with_the_arguments_its_spec_names(make_app: Any, monkeypatch: Any) -> None:
    spy = Spy()
    app = make_app(plugins=[("spy", spy)], consumer={"tick_ms": 50})
    assert app.plugin_config("spy") == SpyConfig() and "spy-kind" in app.plugins.source_kinds

    price = Price(base="BTC", quote="USDT", price=Decimal("65000.5"), source="s", ts=START_MS)
    async with serving(app) as (consumer, client):
        await app.redis.xadd(app.keys.events, encode_fields(price))
        await app.redis.xadd(
            app.keys.orders,
            {
                "type": "order",
                "order_id": "o-1",
                "venue": "v",
                "account": "a",
                "symbol": "BTCUSDT",
                "side": "buy",
                "qty": "1",
                "ts": str(START_MS),
            },
        )
        await app.redis.xadd(app.keys.orders, {"type": "order", "order_id": "o-2", "side": "hold", "ts": "x"})
        for _ in range(200):
            if {"navstream_events", "navstream_orders"} <= spy.calls.keys():
                break
            await __import__("asyncio").sleep(0.02)
        for path in ("/api/status", "/metrics", "/readyz"):
            assert (await client.get(path)).status_code in (200, 503)

    import navstream.cli as cli

    monkeypatch.setattr(
        cli,
        "build_plugin_manager",
        lambda **_: build_plugin_manager(load_entrypoints=False, extra=[("spy", spy)], env={}),
    )
    assert cli.build_parser().parse_args(["spy"]).plugin_handler is spy_command

    assert sorted(spy.calls) == HOOKS, f"never called: {sorted(set(HOOKS) - set(spy.calls))}"
    for hook, calls in spy.calls.items():
        params = set(inspect.signature(getattr(hookspecs, hook)).parameters)
        for kwargs in calls:
            assert set(kwargs) == params
            if "app" in kwargs:
                assert kwargs["app"] is app
            if "out" in kwargs:
                assert isinstance(kwargs["out"], Outputs)
            if "now_ms" in kwargs:
                assert isinstance(kwargs["now_ms"], int) and kwargs["now_ms"] >= START_MS
            if "register" in kwargs:
                assert callable(kwargs["register"])
    (events,) = [c["events"] for c in spy.calls["navstream_events"] if c["events"]][:1]
    assert all(isinstance(e, Event) for e in events) and events[0] == price
    orders = [o for c in spy.calls["navstream_orders"] for o in c["orders"]]
    assert [type(o) for o in orders] == [Order, InvalidOrder] and [o.order_id for o in orders] == ["o-1", "o-2"]


def _documented_examples() -> dict[str, tuple[str, str]]:
    """``hook -> (heading, first python example)`` of each hook's section in docs/plugins.md."""
    doc = (ROOT / "docs" / "plugins.md").read_text()
    out = {}
    for match in re.finditer(r"^### `(navstream_\w+)\(([^)]*)\)`\n(.*?)(?=^#{2,3} |\Z)", doc, re.M | re.S):
        hook, params, body = match.groups()
        example = re.search(r"```python\n(.*?)```", body, re.S)
        out[hook] = (params, example.group(1) if example else "")
    return out


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature_and_an_example_that_registers(hook: str) -> None:
    documented = _documented_examples()
    assert hook in documented, f"docs/plugins.md has no section `### `{hook}(...)``"
    params, example = documented[hook]
    assert params == ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert example, f"the section on {hook} has no python example"
    namespace: dict[str, Any] = {"__name__": f"doc_example_{hook}"}
    exec(compile(example, f"docs/plugins.md ({hook})", "exec"), namespace)
    plugins = [
        obj
        for name, obj in namespace.items()
        if not name.startswith("__") and (getattr(obj, hook, None) is not None or name == hook)
    ]
    assert plugins, f"the example for {hook} implements no {hook}"
    for n, obj in enumerate(plugins):
        plugin = (
            obj() if isinstance(obj, type) else namespace_module(namespace, hook) if inspect.isfunction(obj) else obj
        )
        try:
            loaded = build_plugin_manager(load_entrypoints=False, extra=[(f"doc{n}", plugin)], env={})
        except PluginError as exc:
            pytest.fail(f"the documented example for {hook} does not match its spec: {exc}")
        assert f"doc{n}" in [i.name for i in loaded.info if hook in i.hooks]


def namespace_module(namespace: dict[str, Any], hook: str) -> Any:
    """The example's functions as a module-like plugin object."""
    import types

    module = types.ModuleType(f"doc_example_{hook}")
    for name, value in namespace.items():
        if not name.startswith("__"):
            setattr(module, name, value)
    return module

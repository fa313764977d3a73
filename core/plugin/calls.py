"""The one place navstream calls plugin hooks.

Every call goes through here, so every hook gets the same treatment: implementations in
pluggy's order (``tryfirst``/``trylast`` respected), each given the subset of arguments it
asks for, a value, a callable or an awaitable resolved (as datasette's ``await_me_maybe``), an
awaitable bounded by a timeout when the caller gives one, and one plugin's failure kept from
the others. Batch hooks add per-entry isolation on top (:mod:`navstream.plugin.dispatch`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy


class HookTimeout(TimeoutError):
    """An async hook did not finish within its time limit (``[consumer] hook_timeout_s``)."""


class SyncHookError(TypeError):
    """A hook that must be synchronous returned an awaitable; ``plugin`` names it."""

    def __init__(self, message: str, plugin: str) -> None:
        super().__init__(message)
        self.plugin = plugin


@dataclass(frozen=True)
class Called:
    """One implementation's answer: its ``value``, or the ``error`` it raised (then ``value``
    is None). ``exc`` keeps the exception for callers that re-raise it."""

    plugin: str
    value: Any = None
    error: str = ""
    exc: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.exc is None


def impls(pm: pluggy.PluginManager, hook_name: str) -> list[pluggy.HookImpl]:
    """Implementations of a hook in pluggy's call order (tryfirst/trylast respected)."""
    return list(reversed(getattr(pm.hook, hook_name).get_hookimpls()))


def has_impls(pm: pluggy.PluginManager, hook_name: str) -> bool:
    return bool(getattr(pm.hook, hook_name).get_hookimpls())


def call_impl(impl: pluggy.HookImpl, kwargs: Mapping[str, Any]) -> Any | Awaitable[Any]:
    """Call one implementation with the subset of arguments it asks for, as pluggy would."""
    return impl.function(*[kwargs[name] for name in impl.argnames])


async def resolve(value: Any, timeout: float | None = None, setting: float | None = None) -> Any:
    """A hook's result: a value, an awaitable, or a callable returning either.

    :param timeout: seconds an awaitable may take; None for no limit.
    :param setting: the configured limit the error names, when ``timeout`` is a share of it.
    :raises HookTimeout: the awaitable did not finish in time (a plugin's own TimeoutError,
        from a client of its own, is raised as it is).
    """
    if callable(value):
        value = value()
    if not inspect.isawaitable(value):
        return value
    if timeout is None:
        return await value
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await value
    except TimeoutError:
        if not deadline.expired():
            raise
        raise HookTimeout(f"did not finish within hook_timeout_s = {setting or timeout:g}s") from None


async def call(
    impl: pluggy.HookImpl, kwargs: Mapping[str, Any], timeout: float | None = None, setting: float | None = None
) -> Any:
    """One implementation, its result resolved (:func:`resolve`); what it raises propagates."""
    return await resolve(call_impl(impl, kwargs), timeout, setting)


def call_sync(impl: pluggy.HookImpl, kwargs: Mapping[str, Any]) -> Any:
    """One implementation of a hook that must answer at once (``navstream_health``: called in
    the loop, between batches; the ``register`` hooks: called before any loop runs).

    :raises SyncHookError: it returned an awaitable (closed, so it never runs half-way).
    """
    value = call_impl(impl, kwargs)
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise SyncHookError(
            f"{impl.plugin_name}.{impl.function.__name__} must be synchronous, it returned an awaitable",
            impl.plugin_name,
        )
    return value


def describe(exc: BaseException, plugin: str) -> str:
    """``plugin 'name': Type: message``, at most 1000 characters (it goes into dead letters)."""
    text = f"plugin {plugin!r}: {type(exc).__name__}: {exc}"
    return text if len(text) <= 1000 else text[:997] + "..."


async def collect(
    pm: pluggy.PluginManager, hook_name: str, kwargs: Mapping[str, Any], timeout: float | None = None
) -> list[Called]:
    """Every implementation, each awaited, their answers in pluggy's order; one that raises is
    reported in its :class:`Called` and the others still run. With a ``timeout`` they run
    concurrently, so the whole read is bounded by one timeout, not one per plugin (what the
    HTTP endpoint needs); without one, one after the other. ``BaseException`` (cancellation)
    propagates."""
    found = impls(pm, hook_name)
    if timeout is None:
        return [await _called(impl, kwargs, None) for impl in found]
    return list(await asyncio.gather(*(_called(impl, kwargs, timeout) for impl in found)))


async def _called(impl: pluggy.HookImpl, kwargs: Mapping[str, Any], timeout: float | None) -> Called:
    try:
        return Called(impl.plugin_name, await call(impl, kwargs, timeout))
    except Exception as exc:  # noqa: BLE001 - one plugin must not hide the others
        return Called(impl.plugin_name, error=describe(exc, impl.plugin_name), exc=exc)


async def call_in_turn(pm: pluggy.PluginManager, hook_name: str, kwargs: Mapping[str, Any]) -> None:
    """Every implementation, one after the other, stopping at the first that raises (with
    :class:`HookFailed`): ``navstream_startup``, where a plugin that cannot work must stop
    navstream before the plugins after it start anything."""
    for impl in impls(pm, hook_name):
        try:
            await call(impl, kwargs)
        except Exception as exc:
            raise HookFailed(impl.plugin_name, exc) from exc


class HookFailed(Exception):
    """A hook implementation raised; ``plugin`` names it, ``error`` is what it raised."""

    def __init__(self, plugin: str, error: Exception) -> None:
        super().__init__(f"plugin {plugin!r}: {type(error).__name__}: {error}")
        self.plugin = plugin
        self.error = error


def collect_sync(pm: pluggy.PluginManager, hook_name: str, kwargs: Mapping[str, Any]) -> list[Called]:
    """:func:`collect` for a hook that must be synchronous (:func:`call_sync`)."""
    out = []
    for impl in impls(pm, hook_name):
        try:
            out.append(Called(impl.plugin_name, call_sync(impl, kwargs)))
        except Exception as exc:  # noqa: BLE001
            out.append(Called(impl.plugin_name, error=describe(exc, impl.plugin_name), exc=exc))
    return out


def contribute(pm: pluggy.PluginManager, hook_name: str, register_for: Any) -> None:
    """Call a ``register`` hook (``navstream_config_sections``, ``navstream_sources``,
    ``navstream_commands``) once per implementation, each with ``register_for(plugin_name)``,
    so that what is registered is checked in one place and an error names the plugin.

    Errors propagate: a plugin that cannot declare what it contributes must not half-load.
    """
    for impl in impls(pm, hook_name):
        call_sync(impl, {"register": register_for(impl.plugin_name)})


async def call_plugin(
    pm: pluggy.PluginManager, hook_name: str, plugin: str, kwargs: Mapping[str, Any], timeout: float | None = None
) -> Called | None:
    """One named plugin's implementation of a hook (what ``navstream demo`` shows of nav's
    section); None when that plugin is not loaded or does not implement it."""
    for impl in impls(pm, hook_name):
        if impl.plugin_name == plugin:
            try:
                return Called(plugin, await call(impl, kwargs, timeout))
            except Exception as exc:  # noqa: BLE001 - the caller decides what a failure means
                return Called(plugin, error=describe(exc, plugin), exc=exc)
    return None

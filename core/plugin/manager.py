"""Loading plugins: built-in and third-party alike, from the ``navstream`` entry-point group.

A plugin is a class, instantiated here once per manager (so once per
:class:`~navstream.app.App`: its attributes are that app's typed state), or a module or object
registered as it is (a stateless plugin). ``NAVSTREAM_PLUGINS`` limits what loads (unset: all;
``a,b``: only those; empty: none), and ``[plugins] disabled`` in config removes plugins by name.
``[plugins] modules`` adds plugin modules by dotted path, for a desk's own plugins that are not
packaged.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, cast

import pluggy

from navstream.plugin import calls, hookspecs
from navstream.sources import SourceKind, SourceSettings

ENTRY_POINT_GROUP = "navstream"
#: Sections no plugin may declare: the core's own, and ``[sources.*]``, which source kinds
#: (``navstream_sources``) decode one instance at a time.
RESERVED_SECTIONS = ("redis", "consumer", "plugins", "http", "sources")
BATCH_HOOKS = ("navstream_events", "navstream_orders", "navstream_tick")


class PluginError(RuntimeError):
    """A plugin could not be loaded or does not fit the hook specs."""


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str | None
    hooks: list[str] = field(default_factory=list)
    origin: str = "entry point"


@dataclass
class LoadedPlugins:
    manager: pluggy.PluginManager
    info: list[PluginInfo]
    disabled: list[PluginInfo]
    sections: dict[str, type] = field(default_factory=dict)
    #: Sections declared by plugins that are installed but disabled.
    disabled_sections: set[str] = field(default_factory=set)
    #: Source kinds contributed through ``navstream_sources``, by kind.
    source_kinds: dict[str, SourceKind] = field(default_factory=dict)


def _allowed(env: Mapping[str, str]) -> set[str] | None:
    raw = env.get("NAVSTREAM_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


Candidate = tuple[str, str, "str | None", str, Callable[[], Any]]


def _candidates(modules: Iterable[str], load_entrypoints: bool) -> list[Candidate]:
    """(name, module path, version, origin, loader) for every plugin on offer."""
    found: list[Candidate] = []
    if load_entrypoints:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            version = ep.dist.version if ep.dist is not None else None
            found.append((ep.name, ep.module, version, "entry point", ep.load))
    for path in modules:  # the cast: mypy cannot infer a lambda with a default argument
        found.append((path, path, None, "config", cast("Callable[[], Any]", lambda p=path: importlib.import_module(p))))
    return found


def instantiate(loaded: object) -> object:
    """The plugin object to register: a class is instantiated (no arguments), anything else
    (a module, an instance) is the plugin itself."""
    return loaded() if isinstance(loaded, type) else loaded


def _declared_sections(plugin: object) -> dict[str, type]:
    """Sections a plugin declares, read without registering it (for disabled plugins)."""
    out: dict[str, type] = {}
    fn = getattr(plugin, "navstream_config_sections", None)
    if fn is not None:
        try:
            fn(lambda name, type_: out.setdefault(name, type_))
        except Exception:  # noqa: BLE001 - a disabled plugin's broken hook must not stop startup
            return {}
    return out


def build_plugin_manager(
    *,
    disabled: Iterable[str] = (),
    modules: Iterable[str] = (),
    load_entrypoints: bool = True,
    env: Mapping[str, str] | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> LoadedPlugins:
    """A plugin manager with every allowed plugin registered and checked against the specs.

    :param disabled: plugin names not to register.
    :param modules: extra plugin modules by dotted path.
    :param load_entrypoints: ``False`` skips the entry-point group (tests, embedding).
    :param env: the environment, for ``NAVSTREAM_PLUGINS``.
    :param extra: ``(name, plugin)`` pairs registered as given (tests register inline plugins).
    :raises PluginError: a plugin that fails to import, a name clash, a hook that does not
        match its spec, or a wrapper on a batch hook.
    """
    env = os.environ if env is None else env
    allowed = _allowed(env)
    disabled_names = set(disabled)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    info: list[PluginInfo] = []
    skipped: list[PluginInfo] = []
    disabled_sections: set[str] = set()

    for name, module, version, origin, loader in _candidates(modules, load_entrypoints):
        if (allowed is not None and name not in allowed) or name in disabled_names:
            plugin_info = PluginInfo(name, module, version, origin=origin)
            skipped.append(plugin_info)
            try:
                disabled_sections |= set(_declared_sections(instantiate(loader())))
            except Exception:  # noqa: BLE001 - a disabled plugin that fails to import is fine
                pass
            continue
        try:
            plugin = instantiate(loader())
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} ({module}) failed to load: {type(exc).__name__}: {exc}. "
                f"Disable it with [plugins] disabled = [{name!r}] or NAVSTREAM_PLUGINS."
            ) from exc
        _register(pm, plugin, name)
        info.append(PluginInfo(name, module, version, origin=origin))
    for name, given in extra:
        plugin = instantiate(given)
        _register(pm, plugin, name)
        info.append(PluginInfo(name, getattr(plugin, "__module__", repr(plugin)), None, origin="inline"))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc

    for item in info:
        plugin = pm.get_plugin(item.name)
        item.hooks = sorted(
            caller.name for caller in pm.get_hookcallers(plugin) or [] if caller.name.startswith("navstream_")
        )
    _reject_batch_wrappers(pm)
    sections = _collect_sections(pm)
    return LoadedPlugins(pm, info, skipped, sections, disabled_sections - set(sections), _collect_source_kinds(pm))


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    if pm.has_plugin(name):
        raise PluginError(f"two plugins are named {name!r}")
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} does not match the hook specs: {exc}") from exc
    except ValueError as exc:
        raise PluginError(f"plugin {name!r} could not be registered: {exc}") from exc


def _reject_batch_wrappers(pm: pluggy.PluginManager) -> None:
    for hook_name in BATCH_HOOKS:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} wraps {hook_name}; batch hooks are called per "
                    "plugin for isolation and cannot be wrapped"
                )


def _collect_sections(pm: pluggy.PluginManager) -> dict[str, type]:
    sections: dict[str, type] = {}

    def register_for(plugin: str) -> hookspecs.RegisterSection:
        def register(name: str, type_: type[Any]) -> None:
            if name in sections or name in RESERVED_SECTIONS:
                raise PluginError(f"config section [{name}] is declared twice")
            sections[name] = type_

        return register

    _contribute(pm, "navstream_config_sections", register_for)
    return sections


def _collect_source_kinds(pm: pluggy.PluginManager) -> dict[str, SourceKind]:
    kinds: dict[str, SourceKind] = {}

    def register_for(plugin: str) -> hookspecs.RegisterSource:
        def register(kind: str, settings: type[Any], factory: Callable[..., Any]) -> None:
            if not isinstance(kind, str) or not kind:
                raise PluginError(f"plugin {plugin!r} registers a source kind with an invalid name {kind!r}")
            if kind in kinds:
                raise PluginError(f"source kind {kind!r} is registered twice ({kinds[kind].plugin!r} and {plugin!r})")
            if not (isinstance(settings, type) and issubclass(settings, SourceSettings)):
                raise PluginError(
                    f"source kind {kind!r}: its settings type must subclass navstream.sources.SourceSettings"
                )
            kinds[kind] = SourceKind(kind, settings, factory, plugin)

        return register

    _contribute(pm, "navstream_sources", register_for)
    return kinds


def _contribute(pm: pluggy.PluginManager, hook_name: str, register_for: Any) -> None:
    """:func:`calls.contribute`, with a ``register`` hook that is async a :class:`PluginError`."""
    try:
        calls.contribute(pm, hook_name, register_for)
    except calls.SyncHookError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc

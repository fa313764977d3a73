"""Plugin loading, isolation rules, config sections, and the docs of every hook."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from navstream import hookimpl
from navstream.app import App
from navstream.config import ConfigError, Settings, load_settings, validate_plugin_sections
from navstream.loop.consumer import Consumer, StartupError
from navstream.plugin.manager import PluginError, build_plugin_manager


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a plugin module to a temp dir on sys.path: ``plugin_module("name", "source")``."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        return name

    yield write


def test_builtins_load_through_the_entry_point_group() -> None:
    loaded = build_plugin_manager(env={})
    names = [p.name for p in loaded.info]
    assert "source_monitor" in names
    info = next(p for p in loaded.info if p.name == "source_monitor")
    assert info.module == "navstream.plugins.source_monitor" and info.origin == "entry point"
    assert "navstream_events" in info.hooks and "navstream_tick" in info.hooks
    assert "source_monitor" in loaded.sections


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("source_monitor", True), ("other", False), ("", False)])
def test_navstream_plugins_env_limits_what_loads(value: str | None, expected: bool) -> None:
    env = {} if value is None else {"NAVSTREAM_PLUGINS": value}
    loaded = build_plugin_manager(env=env)
    assert ("source_monitor" in [p.name for p in loaded.info]) is expected
    if not expected:
        assert "source_monitor" in [p.name for p in loaded.disabled]
        # its section is still known, so a config file that configures it stays valid
        assert "source_monitor" in loaded.disabled_sections


def test_config_can_disable_a_plugin() -> None:
    loaded = build_plugin_manager(disabled=["source_monitor"], env={})
    assert "source_monitor" not in [p.name for p in loaded.info]
    assert not loaded.manager.has_plugin("source_monitor")


def test_extra_modules_load_like_entry_points(plugin_module: Any) -> None:
    name = plugin_module(
        "desk_local",
        """
        from navstream import hookimpl

        @hookimpl
        def navstream_tick(now_ms, out):
            out.alert("local", "info", "hi")
    """,
    )
    loaded = build_plugin_manager(modules=[name], load_entrypoints=False, env={})
    assert [(p.name, p.origin, p.hooks) for p in loaded.info] == [(name, "config", ["navstream_tick"])]


def test_a_plugin_that_fails_to_import_names_itself(plugin_module: Any) -> None:
    name = plugin_module("broken_plugin", "raise ImportError('needs google-cloud-firestore')")
    with pytest.raises(PluginError, match="broken_plugin.*needs google-cloud-firestore.*disabled"):
        build_plugin_manager(modules=[name], load_entrypoints=False, env={})


def test_a_misspelled_hook_is_rejected() -> None:
    class Typo:
        @hookimpl
        def navstream_event(self, events: Any) -> None: ...

    with pytest.raises(PluginError, match="unknown hook"):
        build_plugin_manager(load_entrypoints=False, extra=[("typo", Typo())], env={})


def test_a_hook_asking_for_an_unknown_argument_is_rejected() -> None:
    class Wrong:
        @hookimpl
        def navstream_events(self, events: Any, batch: Any) -> None: ...

    with pytest.raises(PluginError, match="does not match the hook specs"):
        build_plugin_manager(load_entrypoints=False, extra=[("wrong", Wrong())], env={})


def test_wrappers_on_batch_hooks_are_rejected() -> None:
    class Wraps:
        @hookimpl(wrapper=True)
        def navstream_events(self, events: Any) -> Any:
            return (yield)

    with pytest.raises(PluginError, match="cannot be wrapped"):
        build_plugin_manager(load_entrypoints=False, extra=[("wraps", Wraps())], env={})


def test_two_plugins_with_one_name_are_rejected() -> None:
    class A:
        pass

    with pytest.raises(PluginError, match="two plugins are named"):
        build_plugin_manager(load_entrypoints=False, extra=[("a", A()), ("a", A())], env={})


class VenueConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    api_key_env: str
    interval_s: float = 5.0


class Venue:
    @hookimpl
    def navstream_config_sections(self, register: Any) -> None:
        register("venue", VenueConfig)


def test_plugin_sections_are_validated_with_the_file_named(tmp_path: Path) -> None:
    loaded = build_plugin_manager(load_entrypoints=False, extra=[("venue", Venue())], env={})
    good = tmp_path / "good.toml"
    good.write_text('[venue]\napi_key_env = "VENUE_KEY"\n')
    configs = validate_plugin_sections(load_settings(good, env={}), loaded.sections)
    assert configs["venue"] == VenueConfig(api_key_env="VENUE_KEY")

    typo = tmp_path / "typo.toml"
    typo.write_text('[venue]\napi_key_env = "K"\ninterval = 3\n')
    with pytest.raises(ConfigError, match=r"typo\.toml.*\[venue\].*interval"):
        validate_plugin_sections(load_settings(typo, env={}), loaded.sections)

    missing = tmp_path / "missing.toml"
    missing.write_text("")
    with pytest.raises(ConfigError, match="api_key_env"):  # mandatory keys fail at startup
        validate_plugin_sections(load_settings(missing, env={}), loaded.sections)

    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[venue]\napi_key_env = "K"\n[venu]\nx = 1\n')
    with pytest.raises(ConfigError, match=r"unknown section \[venu\]"):
        validate_plugin_sections(load_settings(unknown, env={}), loaded.sections)


def test_a_section_declared_twice_is_rejected() -> None:
    with pytest.raises(PluginError, match=r"\[venue\] is declared twice"):
        build_plugin_manager(load_entrypoints=False, extra=[("a", Venue()), ("b", Venue())], env={})


def test_a_plugin_may_not_take_a_core_section() -> None:
    class Grabs:
        @hookimpl
        def navstream_config_sections(self, register: Any) -> None:
            register("redis", VenueConfig)

    with pytest.raises(PluginError, match=r"\[redis\]"):
        build_plugin_manager(load_entrypoints=False, extra=[("g", Grabs())], env={})


async def test_plugin_config_reaches_the_plugin(make_app: Any) -> None:
    seen: list[Any] = []

    class Reads(Venue):
        @hookimpl
        def navstream_startup(self, app: App) -> None:
            seen.append(app.plugin_config("venue"))

    app = make_app(plugins=[("reads", Reads())], extra={"venue": {"api_key_env": "X", "interval_s": 2}})
    await Consumer(app).setup()
    assert seen == [VenueConfig(api_key_env="X", interval_s=2.0)]
    with pytest.raises(KeyError, match="no plugin declared"):
        app.plugin_config("nope")


async def test_a_startup_hook_that_raises_stops_startup(make_app: Any) -> None:
    class NoCredential:
        @hookimpl
        async def navstream_startup(self) -> None:
            raise RuntimeError("environment variable VENUE_KEY is not set")

    app = make_app(plugins=[("nc", NoCredential())])
    with pytest.raises(StartupError, match="plugin 'nc' failed to start: RuntimeError: .*VENUE_KEY"):
        await Consumer(app).setup()


async def test_shutdown_hooks_run_even_when_one_fails(make_app: Any) -> None:
    calls: list[str] = []

    class Flush:
        @hookimpl
        async def navstream_shutdown(self, app: App) -> None:
            calls.append("flush")

    class Bad:
        @hookimpl
        def navstream_shutdown(self) -> None:
            calls.append("bad")
            raise OSError("disk full")

    app = make_app(plugins=[("flush", Flush()), ("bad", Bad())], consumer={"block_ms": 5, "claim_idle_ms": 50})
    assert await Consumer(app, until_idle_s=0.05).run() == 0
    assert sorted(calls) == ["bad", "flush"]


async def test_tryfirst_orders_plugins_like_pluggy(make_app: Any) -> None:
    order: list[str] = []

    class First:
        @hookimpl(tryfirst=True)
        def navstream_tick(self) -> None:
            order.append("first")

    class Plain:
        @hookimpl
        def navstream_tick(self) -> None:
            order.append("plain")

    app = make_app(plugins=[("first", First()), ("plain", Plain())])
    consumer = Consumer(app)
    await consumer.setup()
    await consumer.tick()
    assert order == ["first", "plain"]


def test_defaults_need_no_config_file() -> None:
    assert load_settings(env={}) == Settings()


def test_plugin_command_hook(
    plugin_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``navstream_commands``: a plugin's subcommand parses, runs against Redis with the App its
    configuration loads, and a name already taken stops the CLI with a clear error."""
    import fakeredis
    from support import Backend

    import navstream.app
    import navstream.cli
    from navstream.cli import build_parser, main

    name = plugin_module(
        "desk_hello",
        """
        from navstream import hookimpl

        async def hello(app, args):
            await app.redis.set(app.keys.state("hello"), args.who)
            print(f"hello {args.who} at {app.keys.prefix}")
            return 7

        @hookimpl
        def navstream_commands(register):
            p = register("hello", hello, help="greet someone", description="Greets.")
            p.add_argument("--who", default="world")
    """,
    )
    taker = plugin_module(
        "desk_taker",
        """
        from navstream import hookimpl

        async def handler(app, args):
            return 0

        @hookimpl
        def navstream_commands(register):
            register("status", handler, help="clashes with navstream status")
    """,
    )
    for var in ("NAVSTREAM_PLUGINS", "NAVSTREAM_CONFIG", "NAVSTREAM_PREFIX", "NAVSTREAM_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    modules = [name]
    real_build = build_plugin_manager
    monkeypatch.setattr(
        navstream.cli, "build_plugin_manager", lambda **kw: real_build(**{"modules": list(modules), "env": {}, **kw})
    )
    backend = Backend("fake")
    monkeypatch.setattr(navstream.app, "default_connect", lambda settings: backend.connect)
    config = tmp_path / "desk.toml"
    config.write_text(f'[plugins]\nmodules = ["{name}"]\n')

    args = build_parser().parse_args(["hello", "--who", "desk", "--prefix", "pfx", "--config", str(config)])
    assert args.command == "hello" and args.who == "desk" and args.prefix == "pfx"
    assert args.plugin_handler.__module__ == name
    assert "hello" in build_parser().format_help()

    assert main(["hello", "--who", "desk", "--prefix", "pfx", "--config", str(config)]) == 7
    assert capsys.readouterr().out == "hello desk at pfx\n"
    assert fakeredis.FakeRedis(server=backend._server, decode_responses=True).get("pfx:state:hello") == "desk"

    # a configuration that does not load the plugin: its command says so instead of running
    assert main(["hello", "--prefix", "pfx"]) == 2
    assert "does not load" in capsys.readouterr().err

    # a name navstream already uses: the CLI refuses to start, naming the command
    modules.append(taker)
    assert main(["status", "--prefix", "pfx"]) == 2
    err = capsys.readouterr().err
    assert "navstream: error:" in err and "`status`" in err and "already taken" in err


def test_a_plugin_reads_its_section_typed_and_a_wrong_type_is_refused(make_app: Any) -> None:
    """``app.plugin_config(section, Type)`` returns the decoded section as that type; asking
    for another type is a TypeError naming both, never a silently wrong object."""

    class Cfg(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
        limit: int = 3

    class Other(msgspec.Struct, frozen=True):
        pass

    class Typed:
        @hookimpl
        def navstream_config_sections(self, register: Any) -> None:
            register("typed", Cfg)

    app = make_app(plugins=[("typed", Typed())], extra={"typed": {"limit": 7}})
    assert app.plugin_config("typed", Cfg) == Cfg(limit=7)
    assert app.plugin_config("typed") == Cfg(limit=7)
    with pytest.raises(TypeError, match="Other"):
        app.plugin_config("typed", Other)
    with pytest.raises(KeyError, match="nope"):
        app.plugin_config("nope", Cfg)

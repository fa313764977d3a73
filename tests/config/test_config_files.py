"""The shipped config files, the container image, the compose file and their docs, checked.

- every TOML in config/ loads and passes every plugin's section validation; navstream.toml lists
  every key and decodes to exactly the defaults;
- docker-compose.yml and the Dockerfile keep the properties deployment relies on;
- docs/configuration.md names only environment variables the code reads, and all of them;
- docker/healthcheck.py against a real Redis, and against a real consumer process;
- the image's install (``pip install .`` into a fresh venv) gives a working ``navstream``.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
import redis
from support import ROOT

from navstream.cli import build_parser, main
from navstream.config import (
    ENV_OVERRIDES,
    ConsumerSettings,
    HttpSettings,
    PluginSettings,
    RedisSettings,
    Settings,
    load_settings,
    validate_plugin_sections,
)
from navstream.display import DisplaySettings
from navstream.plugin.manager import build_plugin_manager

CONFIG_DIR = ROOT / "config"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.toml"))
DEFAULT_CONFIG = CONFIG_DIR / "navstream.toml"
PRODUCTION_CONFIG = CONFIG_DIR / "production.example.toml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
DEPLOY_DOC = ROOT / "docs" / "deployment.md"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

CORE_TYPES: dict[str, type] = {
    "redis": RedisSettings,
    "consumer": ConsumerSettings,
    "plugins": PluginSettings,
    "http": HttpSettings,
    "display": DisplaySettings,
}


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus every NAVSTREAM_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    env.update(extra)
    return env


def _plugins_for(settings: Settings) -> Any:
    # env={}: every installed plugin loads (NAVSTREAM_PLUGINS of the caller does not narrow it).
    return build_plugin_manager(disabled=settings.plugins.disabled, modules=settings.plugins.modules, env={})


# --- config/*.toml ----------------------------------------------------------------------------


def test_config_dir_has_the_documented_files() -> None:
    assert DEFAULT_CONFIG in CONFIG_FILES
    assert PRODUCTION_CONFIG in CONFIG_FILES


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_loads_and_validates(path: Path) -> None:
    settings = load_settings(path, env={})
    assert settings.source == str(path)
    loaded = _plugins_for(settings)
    sections = validate_plugin_sections(settings, loaded.sections, loaded.disabled_sections)
    # Every plugin section in the file belongs to a plugin that loads: none accepted unchecked;
    # [sources.*] is checked table by table with its kind's settings, as `navstream ingest` does.
    assert set(settings.extra) - {"sources"} <= set(sections)
    from navstream.ingest.runner import configure

    assert set(configure(settings, loaded.source_kinds)) == set(settings.extra.get("sources", {}))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_passes_config_check(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAVSTREAM_PLUGINS", raising=False)
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok")
    assert "[source_monitor] ok" in out


def test_default_config_decodes_to_exactly_the_defaults() -> None:
    settings = load_settings(DEFAULT_CONFIG, env={})
    defaults = Settings()
    assert settings.redis == defaults.redis
    assert settings.consumer == defaults.consumer
    assert settings.plugins == defaults.plugins
    loaded = _plugins_for(settings)
    sections = validate_plugin_sections(settings, loaded.sections, loaded.disabled_sections)
    assert "source_monitor" in sections
    for name, type_ in loaded.sections.items():
        assert sections[name] == type_(), f"[{name}] in {DEFAULT_CONFIG.name} is not the default"


def test_default_config_lists_every_key() -> None:
    """Not just "decodes to the defaults" (an empty file does that): every key is written out."""
    raw = msgspec.toml.decode(DEFAULT_CONFIG.read_bytes())
    loaded = _plugins_for(load_settings(DEFAULT_CONFIG, env={}))
    expected = {**CORE_TYPES, **loaded.sections}
    assert set(raw) == set(expected), (
        f"{DEFAULT_CONFIG.name} must have exactly the sections {sorted(expected)}; a new plugin "
        "section belongs in it too, with its defaults and comments"
    )
    for name, type_ in expected.items():
        assert set(raw[name]) == set(type_.__struct_fields__), f"[{name}] keys differ from {type_.__name__}"
        # Written as the default's own type (120.0, not 120), so the file reads like the code.
        default = type_()
        for key, value in raw[name].items():
            held = getattr(default, key)
            if isinstance(held, Decimal):  # money is written as a decimal string, never a float
                assert isinstance(value, str) and Decimal(value) == held, f"[{name}] {key}"
                continue
            assert type(value) is type(held), f"[{name}] {key}"


def test_default_config_comments_every_key() -> None:
    lines = DEFAULT_CONFIG.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+\s*=", line):
            assert lines[number - 1].startswith("#"), f"{DEFAULT_CONFIG.name}:{number + 1} has no comment"


def test_production_example_keeps_secrets_out() -> None:
    settings = load_settings(PRODUCTION_CONFIG, env={})
    assert settings.redis.url.startswith("rediss://")
    assert "@" not in settings.redis.url, "credentials belong in NAVSTREAM_REDIS_URL, never in the file"
    assert "NAVSTREAM_REDIS_URL" in PRODUCTION_CONFIG.read_text()
    assert settings.consumer.name == "", "replicas need the automatic unique name"
    # Tuned, not a copy of the defaults.
    assert settings.consumer != ConsumerSettings()
    # The environment still wins over the file.
    env_url = "rediss://navstream:secret@redis.example:6380/0"
    assert load_settings(PRODUCTION_CONFIG, env={"NAVSTREAM_REDIS_URL": env_url}).redis.url == env_url


# --- docker-compose.yml -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip(
        "yaml",
        reason="PyYAML is not installed: add `pyyaml` to the [test] extra in pyproject.toml "
        "to check docker-compose.yml",
    )
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
        total += float(number) * units[unit]
    return total


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "consumer"} <= set(services)

    redis_svc = services["redis"]
    assert redis_svc["image"].startswith("redis:7")
    command = redis_svc["command"]
    command = command if isinstance(command, list) else command.split()
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis_svc["volumes"])
    assert "redis-cli" in redis_svc["healthcheck"]["test"] and "ping" in redis_svc["healthcheck"]["test"]


def test_compose_consumer_scales(compose: dict[str, Any]) -> None:
    consumer = compose["services"]["consumer"]
    assert "build" in consumer
    assert consumer["deploy"]["replicas"] >= 2
    # Each of these would stop scaling or give replicas one shared consumer name.
    assert "container_name" not in consumer
    assert "hostname" not in consumer
    assert "NAVSTREAM_CONSUMER" not in consumer.get("environment", {})
    assert consumer["depends_on"]["redis"]["condition"] == "service_healthy"
    assert consumer["restart"] == "unless-stopped"
    assert not consumer.get("init"), "navstream must be PID 1 for its heartbeat name <hostname>-1"


def test_compose_consumer_config_and_stop(compose: dict[str, Any]) -> None:
    consumer = compose["services"]["consumer"]
    env = consumer["environment"]
    assert env["NAVSTREAM_REDIS_URL"] == "redis://redis:6379/0"
    mounts = {}
    for volume in consumer["volumes"]:
        source, target, *mode = volume.split(":")
        mounts[target] = (source, mode)
    config_path = Path(env["NAVSTREAM_CONFIG"])
    source, mode = mounts[str(config_path.parent)]
    assert source == "./config" and mode == ["ro"]
    mounted = CONFIG_DIR / config_path.name
    assert mounted.is_file()
    # The grace period covers a blocked read plus a batch, with room to spare.
    block_ms = load_settings(mounted, env={}).consumer.block_ms
    assert _duration_s(consumer["stop_grace_period"]) * 1000 >= block_ms + 10_000


# --- Dockerfile and .dockerignore -------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for k, args in stage if k == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def _copy_sources(args: str) -> list[str]:
    parts = [p for p in args.split() if not p.startswith("--")]
    return parts[:-1]


def test_dockerfile_is_multi_stage_with_a_clean_final_stage() -> None:
    stages = _stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder[0][1].split()[0] == "python:3.11-slim"
    assert final[0][1].split()[0] == "python:3.11-slim"
    builder_runs = " ".join(args for k, args in builder if k == "RUN")
    # the locked dependencies with their hashes, then the package alone and non-editable (never
    # the test extra)
    assert "pip install --require-hashes" in builder_runs and "requirements/runtime.lock" in builder_runs
    assert re.search(r"pip install --no-deps (--no-build-isolation )?\.(\s|$)", builder_runs), (
        "the builder installs the package non-editable, its dependencies from the lock"
    )
    assert "-e ." not in builder_runs and "--editable" not in builder_runs
    final_text = " ".join(args for _, args in final)
    # No test extra anywhere, no installs or compilers in the final stage: only the built venv.
    every_instruction = " ".join(args for _, args in _instructions(DOCKERFILE.read_text()))
    assert "[test]" not in every_instruction and "pytest" not in every_instruction
    for word in ("pip install", "apt-get", "gcc", "build-essential", "pytest"):
        assert word not in final_text, f"{word!r} in the final stage"
    copies = [args for k, args in final if k == "COPY"]
    assert any(args.startswith("--from=builder") and "/opt/venv" in args for args in copies)


def test_dockerfile_runtime_settings() -> None:
    final = _stages()[-1]
    user = _one(final, "USER").split(":")[0]
    assert user not in ("root", "0", ""), "the final stage runs as a non-root user"
    assert json.loads(_one(final, "ENTRYPOINT")) == ["navstream"]
    assert json.loads(_one(final, "CMD")) == ["run"]
    assert _one(final, "STOPSIGNAL") == "SIGTERM"
    env = " ".join(args for k, args in final if k == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    healthcheck = _one(final, "HEALTHCHECK")
    assert "CMD" in healthcheck
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    script = command[-1]
    assert command[0].endswith("python") and script.endswith("healthcheck.py")
    copied = [args for k, args in final if k == "COPY" and "docker/healthcheck.py" in args]
    assert copied and copied[0].split()[-1] == script


def _dockerignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line.lstrip("!").rstrip("/")))
    return rules


def _ignored(path: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, pattern in rules:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            hit = any(fnmatch.fnmatchcase(c.split("/")[-1], tail) for c in candidates)
        else:
            hit = any(fnmatch.fnmatchcase(c, pattern) and c.count("/") == pattern.count("/") for c in candidates)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_junk_and_credentials_out() -> None:
    rules = _dockerignore_rules()
    for path in (
        ".git/config",
        ".venv/bin/python",
        "venv/lib/x.py",
        "core/__pycache__/app.cpython-311.pyc",
        ".pytest_cache/v",
        ".hypothesis/x",
        ".mypy_cache/x",
        "navstream.egg-info/PKG-INFO",
        "build/lib/x",
        "dist/x.whl",
        "tests/test_x.py",
        "htmlcov/index.html",
        ".coverage",
        "key.pem",
        "core/tls.key",
        "plugins/client.pem",
        ".env",
        ".env.production",
        "core/.env",
        "service-account-prod.json",
        "docker/service-account.json",
    ):
        assert _ignored(path, rules), f"{path} would enter the build context"


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    rules = _dockerignore_rules()
    for stage in _stages():
        for keyword, args in stage:
            if keyword != "COPY" or "--from=" in args:
                continue
            for source in _copy_sources(args):
                matches = glob.glob(source, root_dir=ROOT)
                if not matches and glob.has_magic(source):
                    continue  # an optional file (README.m[d])
                assert matches, f"COPY source {source} does not exist"
                for match in matches:
                    files = (
                        [match]
                        if (ROOT / match).is_file()
                        else [str(p.relative_to(ROOT)) for p in (ROOT / match).rglob("*.py")]
                    )
                    for file in files:
                        assert not _ignored(file, rules), f"{file} is COPYed but .dockerignore excludes it"


# --- docs/configuration.md --------------------------------------------------------------------


def _code_text() -> str:
    # core/, the built-in plugins (NAVSTREAM_STATE_DIR: the risk audit log's directory) and the
    # Dockerfile (its build arguments, e.g. NAVSTREAM_EXTRAS)
    files = [*sorted((ROOT / "core").rglob("*.py")), *sorted((ROOT / "plugins").rglob("*.py")), ROOT / "Dockerfile"]
    return "\n".join(p.read_text() for p in files)


@pytest.mark.parametrize("doc", [CONFIG_DOC, DEPLOY_DOC], ids=lambda p: p.name)
def test_env_vars_in_docs_exist_in_the_code(doc: Path) -> None:
    code = _code_text()
    named = set(re.findall(r"\bNAVSTREAM_[A-Z_]+\b", doc.read_text()))
    assert named
    missing = sorted(v for v in named if not re.search(rf"\b{v}\b", code))
    assert not missing, f"{doc.name} documents variables no code (core/, plugins/, Dockerfile) reads: {missing}"


def test_every_env_override_is_documented() -> None:
    text = CONFIG_DOC.read_text()
    for var in [*ENV_OVERRIDES, "NAVSTREAM_CONFIG", "NAVSTREAM_PLUGINS", "NAVSTREAM_LOG_LEVEL"]:
        assert f"`{var}`" in text, f"{var} is missing from {CONFIG_DOC.name}"


def test_every_setting_is_in_the_table() -> None:
    text = CONFIG_DOC.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `[")]
    documented = {tuple(re.match(r"\| `\[([a-z_]+)\] ([a-z_]+)`", row).groups()) for row in rows}  # type: ignore[union-attr]
    loaded = _plugins_for(Settings())
    expected = {
        (section, key)
        for section, type_ in {**CORE_TYPES, **loaded.sections}.items()
        for key in type_.__struct_fields__
    }
    assert documented == expected
    # Each env var sits in the row of the key it overrides.
    for var, (section, key) in ENV_OVERRIDES.items():
        row = next(r for r in rows if r.startswith(f"| `[{section}] {key}`"))
        assert f"`{var}`" in row


def _all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--flag`` of the parser and of all its subcommands."""
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _all_flags(sub)
    return flags


def test_cli_flags_in_docs_exist() -> None:
    named = set(re.findall(r"`(--[a-z][a-z-]*)", CONFIG_DOC.read_text()))
    assert {"--config", "--redis-url", "--prefix", "--group", "--consumer", "--log-level"} <= named
    assert named <= _all_flags(build_parser())


# --- docker/healthcheck.py --------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("navstream_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_healthcheck(env: dict[str, str], *args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(HEALTHCHECK), *args], env=env, capture_output=True, text=True, timeout=60, cwd="/"
    )


@pytest.fixture
def heartbeat_prefix() -> Iterator[str]:
    prefix = f"nstest-hc-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.real_redis
def test_healthcheck_reads_this_containers_heartbeat(heartbeat_prefix: str) -> None:
    key = f"{heartbeat_prefix}:heartbeat:{socket.gethostname()}-1"
    env = _clean_env(NAVSTREAM_REDIS_URL=REDIS_URL, NAVSTREAM_PREFIX=heartbeat_prefix)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        missing = _run_healthcheck(env)
        assert missing.returncode == 1, missing
        assert "no heartbeat" in missing.stdout

        client.hset(key, mapping={"status": "running", "processed": "7", "consumer": key.rsplit(":", 1)[1]})
        client.pexpire(key, 60_000)
        running = _run_healthcheck(env)
        assert running.returncode == 0, running
        assert running.stdout.startswith("ok:") and "processed=7" in running.stdout

        for status in ("stopped", "reconnecting", ""):
            client.hset(key, "status", status)
            result = _run_healthcheck(env)
            assert result.returncode == 1, (status, result)
            assert "not 'running'" in result.stdout

        # Another prefix (or consumer name) is another key: not this container's heartbeat.
        client.hset(key, "status", "running")
        other = _run_healthcheck({**env, "NAVSTREAM_PREFIX": heartbeat_prefix + "-other"})
        assert other.returncode == 1
        named = _run_healthcheck({**env, "NAVSTREAM_CONSUMER": "someone-else"})
        assert named.returncode == 1
    finally:
        client.delete(key)
        client.close()


def test_healthcheck_fails_without_redis_or_config(tmp_path: Path) -> None:
    unreachable = _run_healthcheck(_clean_env(NAVSTREAM_REDIS_URL="redis://127.0.0.1:1/0"))
    assert unreachable.returncode == 1
    assert "unreachable" in unreachable.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[consumer]\nbatch_sze = 1\n")
    broken = _run_healthcheck(_clean_env(NAVSTREAM_CONFIG=str(bad)))
    assert broken.returncode == 1
    assert "batch_sze" in broken.stdout and "Traceback" not in broken.stderr


def test_healthcheck_follows_the_consumers_command_line(healthcheck: ModuleType, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    cmdline = (
        b"\0".join(
            [
                b"/opt/venv/bin/python",
                b"/opt/venv/bin/navstream",
                b"--log-level",
                b"DEBUG",
                b"run",
                b"--prefix",
                b"desk2",
                b"--group",
                b"g2",
                b"--consumer",
                b"c9",
            ]
        )
        + b"\0"
    )
    (proc / "1" / "cmdline").write_bytes(cmdline)
    argv = healthcheck.consumer_argv(1, proc)
    assert argv == ["--log-level", "DEBUG", "run", "--prefix", "desk2", "--group", "g2", "--consumer", "c9"]
    settings = healthcheck.settings_for(argv)
    assert (settings.redis.prefix, settings.redis.group, settings.consumer.name) == ("desk2", "g2", "c9")

    assert healthcheck.consumer_argv(2, proc) is None  # unreadable: file and environment only
    (proc / "3").mkdir()
    (proc / "3" / "cmdline").write_bytes(b"/sbin/init\0")
    assert healthcheck.consumer_argv(3, proc) is None
    with pytest.raises(healthcheck.Unhealthy, match="not a consumer"):
        healthcheck.settings_for(["status"])


@pytest.mark.real_redis
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_healthcheck_against_a_running_consumer(heartbeat_prefix: str, tmp_path: Path) -> None:
    """A real ``navstream run`` (prefix given by flag only) is healthy; once stopped, it is not."""
    navstream = Path(sys.executable).parent / "navstream"
    assert navstream.is_file()
    log = (tmp_path / "consumer.log").open("w")
    # Like the image: the console script's interpreter runs it, so /proc/<pid>/cmdline is
    # `python .../navstream run ...`.
    consumer = subprocess.Popen(
        [
            sys.executable,
            str(navstream),
            "run",
            "--redis-url",
            REDIS_URL,
            "--prefix",
            heartbeat_prefix,
            "--group",
            "hc",
        ],
        env=_clean_env(),
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    env = _clean_env(NAVSTREAM_REDIS_URL=REDIS_URL)
    try:
        deadline = time.monotonic() + 30
        result = _run_healthcheck(env, "--pid", str(consumer.pid))
        while result.returncode != 0 and time.monotonic() < deadline and consumer.poll() is None:
            time.sleep(0.5)
            result = _run_healthcheck(env, "--pid", str(consumer.pid))
        assert result.returncode == 0, (result.stdout, consumer.poll(), (tmp_path / "consumer.log").read_text())
        assert f"{heartbeat_prefix}:heartbeat:{socket.gethostname()}-{consumer.pid}" in result.stdout

        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=30) == 0
        stopped = _run_healthcheck(env, "--pid", str(consumer.pid))
        assert stopped.returncode == 1
        # The process is gone, so its flags are too: the check falls back to the environment.
        stopped_by_flag = _run_healthcheck({**env, "NAVSTREAM_PREFIX": heartbeat_prefix}, "--pid", str(consumer.pid))
        assert stopped_by_flag.returncode == 1
        assert "'stopped'" in stopped_by_flag.stdout
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=10)
        log.close()


# --- the image's install, simulated -----------------------------------------------------------


def _builder_copy_sources() -> list[str]:
    builder = _stages()[0]
    sources: list[str] = []
    for keyword, args in builder:
        if keyword == "COPY" and "--from=" not in args:
            sources += _copy_sources(args)
    return sources


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_non_editable_install_gives_a_working_navstream(tmp_path: Path) -> None:
    # Build from exactly what the builder stage COPYs, as the image does (and without writing
    # build/ into the work tree): a file the build needs but the Dockerfile omits fails here.
    src = tmp_path / "src"
    src.mkdir()
    for source in _builder_copy_sources():
        for match in glob.glob(source, root_dir=ROOT):
            origin = ROOT / match
            if origin.is_dir():
                shutil.copytree(origin, src / match, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                (src / match).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, src / match)
    venv = tmp_path / "venv"
    env = _clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(src)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    navstream = str(venv / "bin" / "navstream")
    helped = subprocess.run([navstream, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "navstream" in helped.stdout and "run" in helped.stdout
    plugins = subprocess.run(
        [navstream, "plugins", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert plugins.returncode == 0, plugins.stderr
    rows = {row["name"]: row for row in json.loads(plugins.stdout)}
    assert rows["source_monitor"]["loaded"] is True
    assert rows["source_monitor"]["module"] == "navstream.plugins.source_monitor"

    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    site = Path(purelib)
    assert (site / "navstream" / "__init__.py").is_file()
    assert (site / "navstream" / "plugins" / "source_monitor" / "__init__.py").is_file()
    assert not (site / "core").exists() and not (site / "plugins").exists()
    # Not an editable install pointing back at the work tree.
    assert not list(site.glob("__editable__*"))
    assert all(str(ROOT) not in pth.read_text() for pth in site.glob("*.pth"))
    # Runtime dependencies only: the [test] extra is not installed.
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    names = {row["name"].lower() for row in json.loads(listed)}
    assert not names & {"pytest", "pytest-asyncio", "pytest-timeout", "hypothesis"}

    # The health-check script runs on that venv alone (only the image's dependencies).
    result = _run_healthcheck(_clean_env(NAVSTREAM_REDIS_URL="redis://127.0.0.1:1/0"), python=python)
    assert result.returncode == 1 and "unreachable" in result.stdout, (result.stdout, result.stderr)

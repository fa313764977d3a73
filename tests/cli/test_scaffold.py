"""``navstream new-plugin``: what it writes, what it refuses, and the proof that the skeleton works.

The proof (the ``slow`` tests, in the default run) installs the generated package into a fresh
venv layered on the current environment and runs the package's *own* tests there, then
``navstream plugins`` and ``navstream ingest --once`` with it, as a venue plugin's author would.

Why a layered venv and not ``--system-site-packages``: that flag shows the *base* interpreter's
site-packages, and when the tests run in a venv (CI's ``.venv``, a developer's) navstream and
pytest live in that venv, not in the base. A ``.pth`` file in the new venv adds the current
environment's site directories after the new venv's own, so navstream, pytest and pip are
visible, nothing is downloaded for them, and the generated package is installed only into the
new venv. The package is built with ``--no-build-isolation`` when the current environment can
build a wheel offline (setuptools >= 70.1, or setuptools with ``wheel``); otherwise pip builds
it in isolation, fetching setuptools from its configured index.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import site
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import uuid
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from support import REDIS_URL, ROOT

from navstream import SourceSettings, __version__
from navstream.cli import main
from navstream.cli.scaffold import FILES, ScaffoldError, write_plugin
from navstream.testing import load_plugins

EXPECTED_FILES = {
    "pyproject.toml",
    "README.md",
    ".gitignore",
    "src/navstream_acme_fx/__init__.py",
    "tests/test_source.py",
}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


# --- what it writes --------------------------------------------------------------------------------


def test_writes_the_package_and_says_what_next(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "new-plugin", "acme-fx", "--dir", str(tmp_path))
    assert code == 0, err
    root = tmp_path / "navstream-acme-fx"
    assert os.listdir(tmp_path) == ["navstream-acme-fx"]  # no staging directory left behind
    assert tree(root) == EXPECTED_FILES
    for relative in EXPECTED_FILES:
        assert str(root / relative) in out
    assert "source kind `acme-fx-prices`" in out
    assert "pip install -e '.[test]'" in out and "pytest" in out and "navstream ingest" in out

    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    assert meta["project"]["name"] == "navstream-acme-fx"
    assert meta["project"]["dependencies"] == [f"navstream>={__version__}"]
    assert meta["project"]["entry-points"]["navstream"] == {"acme-fx": "navstream_acme_fx"}
    assert meta["tool"]["setuptools"]["packages"]["find"]["where"] == ["src"]

    for relative in EXPECTED_FILES:
        text = (root / relative).read_text()
        assert "{{" not in text and "}}" not in text, f"{relative}: a template field was not filled in"
        if relative.endswith(".py"):
            compile(text, relative, "exec")
    readme = (root / "README.md").read_text()
    assert '[sources.acme-fx]\nkind = "acme-fx-prices"' in readme
    assert "navstream ingest --config navstream.toml --once" in readme and "pytest" in readme
    assert "__pycache__/" in (root / ".gitignore").read_text()
    # The generated tests are self-contained: nothing from navstream's own test suite, no
    # conftest.py; their harness is navstream.testing (the pytest plugin navstream installs).
    test_text = (root / "tests" / "test_source.py").read_text()
    assert not re.search(r"^\s*(from|import) (conftest|tests|support)\b", test_text, re.MULTILINE)
    assert re.search(r"^from navstream\.testing import ", test_text, re.MULTILINE)
    # The plugin and its tests import navstream's plugin API and its test harness, nothing else
    # of navstream: its internal modules may move, those two are promised.
    for relative in ("src/navstream_acme_fx/__init__.py", "tests/test_source.py"):
        imported = set(
            re.findall(
                r"^\s*(?:from|import) ((?:navstream|fakeredis|pluggy)(?:\.[\w.]+)?)(?=[\s,])",
                (root / relative).read_text(),
                re.MULTILINE,
            )
        )
        assert imported <= {"navstream", "navstream.testing"}, f"{relative} imports {sorted(imported)}"


def test_the_generated_module_registers_a_working_source_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_plugin("acme-fx", tmp_path, venue="acme")
    path = written.root / "src" / "navstream_acme_fx" / "__init__.py"
    spec = importlib.util.spec_from_file_location("navstream_acme_fx", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "navstream_acme_fx", module)  # msgspec resolves annotations there
    spec.loader.exec_module(module)

    kind = load_plugins([("acme-fx", module)]).source_kinds["acme-fx-prices"]
    assert kind.plugin == "acme-fx" and issubclass(kind.settings, SourceSettings)
    settings = msgspec.convert({"base_url": "http://127.0.0.1:1", "pairs": ["BTC/USDT"]}, kind.settings)
    assert (module.VENUE, settings.weight_per_minute, settings.interval_s) == ("acme", 1200, 30.0)


def test_every_template_is_used_and_ships_as_package_data() -> None:
    folder = ROOT / "core" / "cli" / "templates"
    on_disk = {str(p.relative_to(ROOT / "core" / "cli")) for p in folder.rglob("*") if p.is_file()}
    used = {f"templates/venue_plugin/{template}" for template, _ in FILES}
    assert on_disk == used
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["navstream.cli"]
    for path in on_disk:
        assert any(fnmatch.fnmatch(path, g) for g in globs), f"{path} is not package data: a wheel would omit it"


def test_docs_link_the_walk_through() -> None:
    assert (ROOT / "docs" / "writing-a-venue-plugin.md").is_file()
    assert "docs/writing-a-venue-plugin.md" in (ROOT / "README.md").read_text()
    assert "writing-a-venue-plugin.md" in (ROOT / "docs" / "plugins.md").read_text()


# --- what it refuses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Acme",
        "acme_fx",
        "-acme",
        "acme-",
        "acme--fx",
        "1inch",
        "acme fx",
        "acme/fx",
        "../acme",
        "navstream",
        "navstream-acme",
        "a" * 41,
    ],
)
def test_a_bad_name_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = cli(capsys, "new-plugin", "--dir", str(tmp_path), "--", name)
    assert code == 2 and out == ""
    assert err.startswith("navstream: error: plugin name")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("venue", ["", "Binance", "bin ance", "-x", "x" * 65])
def test_a_bad_venue_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], venue: str) -> None:
    code, _, err = cli(capsys, "new-plugin", "acme", f"--venue={venue}", "--dir", str(tmp_path))
    assert code == 2 and "venue" in err
    assert list(tmp_path.iterdir()) == []


def test_a_name_an_installed_plugin_has_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "new-plugin", "nav", "--dir", str(tmp_path))
    assert code == 2 and "taken by an installed navstream plugin (navstream.plugins.nav" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [None, "mine"], ids=["empty", "with-a-file"])
def test_an_existing_target_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    target = tmp_path / "navstream-acme"
    target.mkdir()
    if content is not None:
        (target / "pyproject.toml").write_text(content)
    code, out, err = cli(capsys, "new-plugin", "acme", "--dir", str(tmp_path))
    assert code == 2 and out == "" and "already exists" in err
    assert tree(tmp_path) == ({"navstream-acme/pyproject.toml"} if content else set())
    if content is not None:
        assert (target / "pyproject.toml").read_text() == content


@pytest.mark.parametrize("make", ["missing", "file"])
def test_dir_must_be_an_existing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str) -> None:
    where = tmp_path / "nope"
    if make == "file":
        where.write_text("")
    code, _, err = cli(capsys, "new-plugin", "acme", "--dir", str(where))
    assert code == 2 and "is not an existing directory" in err
    assert tree(tmp_path) == ({"nope"} if make == "file" else set())


def test_a_failure_while_writing_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.write_text
    calls = []

    def failing(self: Path, *args: Any, **kwargs: Any) -> int:
        calls.append(self)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)
    code, _, err = cli(capsys, "new-plugin", "acme", "--dir", str(tmp_path))
    assert code == 1 and "No space left on device" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_scaffold_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="plugin name"):
        write_plugin("Bad", ".")
    assert issubclass(ScaffoldError, ValueError)


# --- the proof: the skeleton installs, its tests pass, navstream runs it -----------------------


@dataclass(frozen=True)
class Installed:
    python: str
    package: Path
    how: str


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without navstream's and pytest's variables (they would steer the child)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAVSTREAM_", "PYTEST_"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _site_dirs() -> list[str]:
    """Where the current environment's packages are (navstream, pytest, pip, setuptools)."""
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _offline_build() -> bool:
    """Whether the current environment can build a wheel without downloading anything."""
    try:
        numbers = [int(n) for n in re.findall(r"\d+", version("setuptools"))[:2]]
    except PackageNotFoundError:
        return False
    return tuple(numbers) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def layered_venv(path: Path) -> str:
    """A new venv seeing the current environment's packages after its own; its python."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(path)
    python = str(path / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})" for d in _site_dirs()]
    (Path(purelib) / "_navstream_parent_env.pth").write_text("\n".join(lines) + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """``navstream new-plugin acme-fx``, then ``pip install`` of the result into a layered venv."""
    work = tmp_path_factory.mktemp("scaffold")
    package = write_plugin("acme-fx", work).root
    python = layered_venv(work / "venv")
    offline = _offline_build()
    command = [
        python,
        "-m",
        "pip",
        "install",
        "--no-deps",
        *(["--no-build-isolation", "--no-index"] if offline else []),
        str(package),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=_clean_env(), cwd=work, timeout=240)
    why = (
        ""
        if offline
        else (" (built in isolation: this environment has no setuptools>=70.1 or wheel, so pip needed its index)")
    )
    assert result.returncode == 0, f"{' '.join(command)} failed{why}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return Installed(python, package, "no-build-isolation" if offline else "build isolation")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_skeleton_installs_and_its_own_tests_pass(installed: Installed) -> None:
    where = subprocess.run(
        [installed.python, "-c", "import navstream_acme_fx; print(navstream_acme_fx.__file__)"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=installed.package,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert "site-packages" in where.stdout and str(installed.package) not in where.stdout  # installed, not src/
    result = subprocess.run(
        [installed.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=installed.package,
        timeout=180,
    )
    assert result.returncode == 0, (
        f"the generated package's tests failed (installed with {installed.how}):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert re.match(r"^\d+ passed in ", summary), summary
    # Its fixtures come from navstream.testing through the pytest11 entry point, and nowhere else:
    # the package has no conftest.py, and without the plugin they are missing.
    assert not list(installed.package.rglob("conftest.py"))
    without = subprocess.run(
        [installed.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:navstream"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=installed.package,
        timeout=180,
    )
    assert without.returncode != 0 and "fixture 'source_context' not found" in without.stdout, without.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_navstream_plugins_lists_the_installed_plugin(installed: Installed) -> None:
    result = subprocess.run(
        [installed.python, "-m", "navstream.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["acme-fx"] == {
        "name": "acme-fx",
        "module": "navstream_acme_fx",
        "version": "0.1.0",
        "origin": "entry point",
        "hooks": ["navstream_sources"],
        "loaded": True,
    }
    assert rows["nav"]["loaded"] is True  # it sits beside the built-in plugins


@pytest.fixture
def venue() -> Iterator[str]:
    """A stand-in for the venue's price endpoint, quoting BTC/USDT only (ETH/USDT is missing)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            quotes = [{"symbol": "BTC-USDT", "price": "97012.50", "time": time.time_ns() // 1_000_000 - 1000}]
            body = json.dumps({"prices": quotes}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.slow
@pytest.mark.real_redis
@pytest.mark.timeout(300)
def test_navstream_ingest_once_runs_the_installed_source(installed: Installed, venue: str, tmp_path: Path) -> None:
    prefix = f"nstest-{uuid.uuid4().hex[:10]}"
    config = tmp_path / "navstream.toml"
    config.write_text(
        f'[redis]\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n\n'
        f'[sources.acme-fx]\nkind = "acme-fx-prices"\nbase_url = "{venue}"\n'
        f'pairs = ["BTC/USDT", "ETH/USDT"]\n'
    )
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        result = subprocess.run(
            [installed.python, "-m", "navstream.cli", "ingest", "--config", str(config), "--once"],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        events = [fields for _, fields in client.xrange(f"{prefix}:events")]
        assert [(e["type"], e.get("base"), e.get("price")) for e in events] == [
            ("price", "BTC", "97012.50"),
            ("source_status", None, None),
        ]
        assert events[1]["ok"] == "true" and "ETH/USDT (ETH-USDT): not in the answer" in events[1]["error"]
        alerts = [fields for _, fields in client.xrange(f"{prefix}:alerts")]
        assert [a["code"] for a in alerts] == ["source_incomplete"]
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


# --- navstream.testing: the pytest plugin every navstream install registers ----------------------


def test_navstream_testing_is_a_pytest11_plugin(request: pytest.FixtureRequest) -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("navstream") == "navstream.testing"
    import navstream.testing

    assert request.config.pluginmanager.get_plugin("navstream") is navstream.testing  # loaded in this run too


def python_blocks(doc: Path, section: str) -> list[str]:
    """The ```python blocks of one ``## section`` of a Markdown file."""
    text = doc.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], re.DOTALL)


def run_pytest_in(where: Path, *, mode: str = "auto") -> subprocess.CompletedProcess[str]:
    """pytest in a directory of its own, outside this repository (no conftest.py of ours):
    only what every navstream install has, navstream.testing through its entry point."""
    (where / "pytest.ini").write_text(
        f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\nfilterwarnings =\n    error\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=where,
        timeout=120,
    )


@pytest.mark.slow
def test_the_plugins_doc_test_runs_on_navstream_testing_alone(tmp_path: Path) -> None:
    """docs/plugins.md's example test, as written, in a project with only navstream installed."""
    example = python_blocks(ROOT / "docs" / "plugins.md", "Testing a plugin")[0]
    (tmp_path / "test_wallet.py").write_text(example)
    result = run_pytest_in(tmp_path)
    assert result.returncode == 0 and re.search(r"^1 passed", result.stdout, re.MULTILINE), (
        result.stdout[-3000:] + result.stderr[-2000:]
    )


@pytest.mark.slow
def test_navstream_testing_fixtures_work_in_strict_mode(tmp_path: Path) -> None:
    """pytest-asyncio's strict mode takes only fixtures declared as its own: navstream's are."""
    (tmp_path / "test_strict.py").write_text(
        "import pytest\n"
        "from navstream.testing import START_MS, run_step, start_consumer\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_strict(make_app, source_context, navstream_backend):\n"
        "    app = make_app()\n"
        "    assert app.keys.prefix == navstream_backend.prefix and app.clock.now_ms() == START_MS\n"
        "    alerts = await run_step(app, await start_consumer(app), {'type': 'nonsense'})\n"
        "    assert [a['code'] for a in alerts] == ['dead_lettered']\n"
        "    assert await app.redis.xlen(app.keys.dlq) == 1\n"
        "    assert source_context.clock.now_ms() == START_MS and dict(source_context.env) == {}\n"
    )
    result = run_pytest_in(tmp_path, mode="strict")
    assert result.returncode == 0 and re.search(r"^1 passed", result.stdout, re.MULTILINE), (
        result.stdout[-3000:] + result.stderr[-2000:]
    )


@pytest.mark.slow
@pytest.mark.real_redis
def test_the_documented_backend_override_runs_every_test_on_both(tmp_path: Path) -> None:
    """docs/plugins.md's ``navstream_backend`` override in a conftest.py: fakeredis, then a real Redis."""
    example, override = python_blocks(ROOT / "docs" / "plugins.md", "Testing a plugin")
    assert '"redis://127.0.0.1:6379/15"' in override
    (tmp_path / "conftest.py").write_text(override.replace('"redis://127.0.0.1:6379/15"', repr(REDIS_URL)))
    (tmp_path / "test_wallet.py").write_text(example)
    result = run_pytest_in(tmp_path)
    assert result.returncode == 0 and re.search(r"^2 passed", result.stdout, re.MULTILINE), (
        result.stdout[-3000:] + result.stderr[-2000:]
    )


# --- docs/writing-a-venue-plugin.md, followed as written --------------------------------------


def splice(source: str, block: str, *, after: str) -> str:
    """``source`` with every top-level definition of ``block`` put in place of the one of the same
    name (a function, a class, ``NAME = ...``), or, for a new name, after the definition ``after``:
    what "replace these with the versions below, and add ..." asks of a reader."""
    import ast

    def named(tree: ast.Module) -> dict[str, ast.stmt]:
        found: dict[str, ast.stmt] = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found[node.name] = node
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                found[node.targets[0].id] = node
        return found

    lines, new_lines = source.splitlines(keepends=True), block.splitlines(keepends=True)
    old, new = named(ast.parse(source)), named(ast.parse(block))
    edits: list[tuple[int, int, str]] = []  # (start, end) line slices of source, replaced by text
    for name, node in new.items():
        text = "".join(new_lines[node.lineno - 1 : node.end_lineno])
        if name in old:
            edits.append((old[name].lineno - 1, old[name].end_lineno or 0, text))
        else:
            at = old[after].end_lineno or 0
            edits.append((at, at, "\n\n" + text))
    for start, end, text in sorted(edits, reverse=True):
        lines[start:end] = [text if text.endswith("\n") else text + "\n"]
    return "".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_steps_4_and_5_of_the_guide_as_written_give_a_green_acme_source(tmp_path: Path) -> None:
    """``navstream new-plugin acme``, then steps 4 and 5 exactly as the guide words them: its
    tests pass (the two that need the package installed aside: the install proof is above)."""
    guide = ROOT / "docs" / "writing-a-venue-plugin.md"
    text = guide.read_text()
    assert "**Keep the class `_Quote` exactly as it is.**" in text
    assert "Only `_QUOTE`, the stand-in's decoder just below `_Quote`, is unused\nnow: delete it" in text
    (step4,) = python_blocks(guide, "4. Adapt it to your venue")
    helpers, numbers_call, error_test = python_blocks(guide, "5. Test it")

    root = write_plugin("acme", tmp_path).root
    module = root / "src" / "navstream_acme" / "__init__.py"
    source = splice(module.read_text(), step4, after="_Answer")
    source = re.sub(r"#: Quotes with their JSON numbers.*\n_QUOTE = .*\n", "", source)  # "delete it"
    source = source.replace("from decimal import Decimal\n", "")  # "and with it ..."
    module.write_text(source)
    assert "class _Quote(msgspec.Struct):" in source and "class _Ticker(msgspec.Struct):" in source

    tests = root / "tests" / "test_source.py"
    source = splice(tests.read_text(), helpers, after="answer")
    # "sends both amounts as strings now": the guide's call replaces the test's first statement
    source = re.sub(
        r"(async def test_numbers_become_exact_decimals\(.*\n)    venue\.answer\((?:.*\n)*?.*# a JSON string\n",
        lambda m: m.group(1) + "    " + numbers_call.strip() + "\n",
        source,
    )
    assert numbers_call.strip() in source
    tests.write_text(source + "\n\n" + error_test)

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not installed and not loads_it"],
        capture_output=True,
        text=True,
        env=_clean_env(PYTHONPATH=str(root / "src")),
        cwd=root,
        timeout=150,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and re.match(r"^\d+ passed, 2 deselected in ", summary), (
        result.stdout[-4000:] + result.stderr[-2000:]
    )
    assert (
        "test_an_error_code_fails_the_fetch PASSED"
        in subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-k", "error_code"],
            capture_output=True,
            text=True,
            env=_clean_env(PYTHONPATH=str(root / "src")),
            cwd=root,
            timeout=150,
        ).stdout
    )


def test_the_generated_pyproject_says_how_to_pin_navstream_to_the_desks_index(tmp_path: Path) -> None:
    """The dependency on ``navstream`` stays installable here, and the file says how to keep a
    same-named package on a public index out; its uv tables, once uncommented, are valid and pin
    navstream to one index that replaces PyPI."""
    text = (write_plugin("acme", tmp_path).root / "pyproject.toml").read_text()
    head = text[: text.index("dependencies = ")]
    for needed in ("Dependency confusion", "--index-url", "extra-index-url", "--require-hashes", "pip.conf"):
        assert needed in head, needed
    uncommented = re.sub(
        r"^# (\[\[tool\.uv\.index\]\]|\[tool\.uv\.sources\]|name =|url =|default =|navstream =)",
        r"\1",
        text,
        flags=re.MULTILINE,
    )
    uv = tomllib.loads(uncommented)["tool"]["uv"]
    (index,) = uv["index"]
    assert index["default"] is True and index["url"].startswith("https://")
    assert uv["sources"] == {"navstream": {"index": index["name"]}}
    assert tomllib.loads(text)["project"]["dependencies"] == [f"navstream>={__version__}"]
    assert (
        "tool" not in tomllib.loads(text) or "uv" not in tomllib.loads(text)["tool"]
    )  # off until the desk sets its URL

"""The layering of docs/architecture.md holds: core names no plugin, plugins use only the facade
and each other's ``api``, no module imports itself round a cycle, no module outgrows one job.

import-linter and grimp read the package as installed (tools/layout.py): the editable
install's import hook hides ``navstream.plugins`` from static tools.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "tools"))

from import_cycles import strongly_connected
from layout import install

#: "No module over about 400 lines" (issue 15): a module past this has more than one job.
MAX_LINES = 420

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(tmp_path_factory.mktemp("layout") / "site")


def _run(args: list[str], layout: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(layout)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _lint_imports(layout: Path, config: Path = ROOT / ".importlinter") -> subprocess.CompletedProcess[str]:
    return _run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
            str(config),
            "--no-cache",
        ],
        layout,
    )


def test_the_import_contracts_are_kept(layout: Path) -> None:
    result = _lint_imports(layout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_core_module_that_imports_a_plugin_breaks_a_contract(layout: Path, tmp_path: Path) -> None:
    mutant = tmp_path / "site"
    shutil.copytree(layout, mutant)
    clock = mutant / "navstream" / "clock.py"
    clock.write_text(clock.read_text() + "\nimport navstream.plugins.nav.state  # noqa\n")
    result = _lint_imports(mutant)
    assert result.returncode != 0
    assert "Core does not import the plugins, built-in or not BROKEN" in result.stdout


def test_a_plugin_that_imports_another_plugins_private_module_breaks_a_contract(layout: Path, tmp_path: Path) -> None:
    mutant = tmp_path / "site"
    shutil.copytree(layout, mutant)
    gate = mutant / "navstream" / "plugins" / "risk" / "config.py"
    gate.write_text(gate.read_text() + "\nimport navstream.plugins.nav.state  # noqa\n")
    result = _lint_imports(mutant)
    assert result.returncode != 0
    assert "A plugin imports another plugin only through its declared api module BROKEN" in result.stdout


def test_there_is_no_import_cycle_and_core_never_imports_the_facade(layout: Path) -> None:
    result = _run([sys.executable, str(ROOT / "tools" / "import_cycles.py")], layout)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cycle_finder_finds_cycles_of_any_length() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"g"}, "g": {"f"}}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["f", "g"]]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_contracts_name_every_core_module() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    listed = set(parser["importlinter:contract:core-names-no-plugin"]["source_modules"].split())
    on_disk = {
        f"navstream.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "core").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert on_disk == listed, "list every top-level module of core/ in .importlinter's contracts"
    # navstream.numbers is the facade's `numbers`: plugins read it through `from navstream import numbers`.
    facade_owned = {"navstream.numbers"}
    assert set(parser["importlinter:contract:plugins-use-the-facade"]["forbidden_modules"].split()) == (
        listed - facade_owned
    )


def test_no_module_has_more_than_one_job_by_its_length() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in [*(ROOT / "core").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_architecture_page_lists_every_module() -> None:
    """docs/architecture.md has one line per module, so the map cannot fall behind the tree."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^\| `(navstream[\w.]*)` \| \S", doc, re.M))
    modules = set()
    for root, package in ((ROOT / "core", "navstream"), (ROOT / "plugins", "navstream.plugins")):
        for path in root.rglob("*.py"):
            if "templates" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            modules.add(".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)]))
    assert modules - listed == set(), "modules missing from docs/architecture.md"
    assert listed - modules == set(), "docs/architecture.md lists modules that do not exist"

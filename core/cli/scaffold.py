"""``navstream new-plugin``: write the skeleton of a venue plugin package.

Adding a venue should be a small, well-trodden job, so the kit starts from a package that
already works: a source kind that fetches a JSON price endpoint the way the built-in sources do
(weights, deadlines, ``Decimal``, problems instead of zeros), the hookimpl and entry point that
make navstream find it, and tests that run it against a local HTTP server on fakeredis. The
person adding a venue edits working code instead of assembling it from the docs. Of navstream, the
package imports only ``navstream`` (the plugin API) and, in its tests, ``navstream.testing``
(the pytest plugin every navstream install registers): nothing that may move.

The files are package data (``templates/venue_plugin/*.tmpl``) with ``{{ placeholder }}``
fields, so they read like the code they become. Nothing is written unless everything can be:
the package is assembled in a temporary directory next to the target and renamed into place,
and bad input (a name, a taken name, an existing target) is refused before anything is touched.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path

from navstream.version import __version__

ENTRY_POINT_GROUP = "navstream"
TEMPLATE_DIR = "venue_plugin"
#: Template file -> path in the generated package (``{{ module }}`` is filled in).
FILES: tuple[tuple[str, str], ...] = (
    ("pyproject.toml.tmpl", "pyproject.toml"),
    ("README.md.tmpl", "README.md"),
    ("gitignore.tmpl", ".gitignore"),
    ("plugin.py.tmpl", "src/{{ module }}/__init__.py"),
    ("test_source.py.tmpl", "tests/test_source.py"),
)

#: Lowercase letters, digits and single hyphens, starting with a letter: a valid distribution
#: name, entry-point name and TOML bare key, and a module name once hyphens become underscores.
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
MAX_NAME = 40
#: A venue name as it appears in ``source_status.venue`` and alerts.
VENUE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
MAX_VENUE = 64
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


class ScaffoldError(ValueError):
    """Input that cannot become a plugin package; nothing was written."""


@dataclass(frozen=True)
class PluginNames:
    """Every name the package uses, derived from one plugin name so they never disagree."""

    #: The plugin's name in ``navstream plugins`` and its entry point (``acme-fx``).
    name: str
    #: ``source_status.venue`` of its sources.
    venue: str

    @property
    def dist(self) -> str:
        return f"navstream-{self.name}"

    @property
    def module(self) -> str:
        return f"navstream_{self.name.replace('-', '_')}"

    @property
    def kind(self) -> str:
        return f"{self.name}-prices"

    @property
    def class_prefix(self) -> str:
        return "".join(part[:1].upper() + part[1:] for part in self.name.split("-"))

    def fields(self) -> dict[str, str]:
        return {
            "name": self.name,
            "venue": self.venue,
            "dist": self.dist,
            "module": self.module,
            "kind": self.kind,
            "cls": self.class_prefix,
            "env_prefix": self.name.replace("-", "_").upper(),
            "navstream_version": __version__,
        }


@dataclass(frozen=True)
class Written:
    """What :func:`write_plugin` created."""

    root: Path
    files: list[Path]
    names: PluginNames


def plugin_names(name: str, venue: str | None = None) -> PluginNames:
    """The package's names for plugin ``name``, or a :class:`ScaffoldError` saying what is wrong.

    :param venue: ``source_status.venue``; defaults to ``name``.
    """
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise ScaffoldError(
            f"plugin name {name!r}: use lowercase letters, digits and single hyphens, starting "
            f"with a letter, at most {MAX_NAME} characters (e.g. okx, acme-fx)"
        )
    if name == "navstream" or name.startswith("navstream-"):
        raise ScaffoldError(
            f"plugin name {name!r}: give the venue's name alone; the package is called navstream-<name> already"
        )
    venue = name if venue is None else venue
    if not VENUE_RE.match(venue) or len(venue) > MAX_VENUE:
        raise ScaffoldError(
            f"venue {venue!r}: use lowercase letters, digits, '.', '_' and '-', starting with "
            f"a letter or digit, at most {MAX_VENUE} characters (e.g. okx)"
        )
    taken = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name in taken:
        raise ScaffoldError(
            f"plugin name {name!r} is taken by an installed navstream plugin ({taken[name]}); "
            "two plugins cannot share a name"
        )
    return PluginNames(name, venue)


def render(text: str, fields: dict[str, str]) -> str:
    """``text`` with every ``{{ field }}`` filled in; an unknown field is a bug in the templates."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in fields:
            raise KeyError(f"template field {{{{ {key} }}}} has no value")
        return fields[key]

    return _PLACEHOLDER.sub(fill, text)


def render_package(names: PluginNames) -> dict[str, str]:
    """Relative path -> content of every file of the package (nothing is written)."""
    fields = names.fields()
    folder = resources.files("navstream.cli") / "templates" / TEMPLATE_DIR
    return {
        render(target, fields): render(folder.joinpath(template).read_text(encoding="utf-8"), fields)
        for template, target in FILES
    }


def write_plugin(name: str, directory: str | os.PathLike[str] = ".", *, venue: str | None = None) -> Written:
    """Write package ``navstream-<name>`` into ``directory``, all of it or nothing.

    :raises ScaffoldError: a bad name or venue, a name an installed plugin has, a missing
        ``directory``, or a target that already exists (nothing is ever overwritten).
    """
    names = plugin_names(name, venue)
    parent = Path(directory)
    if not parent.is_dir():
        raise ScaffoldError(f"--dir {str(directory)!r} is not an existing directory")
    root = parent / names.dist
    if root.exists() or root.is_symlink():
        raise ScaffoldError(f"{root} already exists; nothing was written (remove it or choose another --dir)")
    files = render_package(names)
    staging = Path(tempfile.mkdtemp(prefix=f".{names.dist}-", dir=parent))
    try:
        for relative, content in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp makes it private; a package directory is not
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Written(root, [root / relative for relative in files], names)


def next_steps(written: Written) -> list[str]:
    """What to do after generating, as shell lines with comments."""
    n = written.names
    return [
        f"cd {written.root}",
        "pip install -e '.[test]'      # next to navstream, in the same environment",
        "pytest                         # the skeleton's tests pass as generated",
        (
            f"# edit src/{n.module}/__init__.py for the venue's real API: constants, symbol_of(), query(), "
            "parse_prices()"
        ),
        f"navstream plugins              # lists `{n.name}` with hook navstream_sources",
        f'# config: [sources.{n.name}] kind = "{n.kind}", base_url = "...", pairs = ["BTC/USDT"]',
        "navstream ingest --config navstream.toml --once",
        "# walk-through: docs/writing-a-venue-plugin.md in navstream's repository",
    ]

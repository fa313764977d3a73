"""Install navstream as a wheel would lay it out, into a directory of its own, for the tools
that read the installed package: import-linter and mypy.

The source tree maps ``core/`` to ``navstream`` and ``plugins/`` to ``navstream.plugins``
(pyproject.toml's package-dir), and an editable install finds them through an import hook that
static tools do not follow: they would see ``navstream`` without its plugins. So they run on a
real install instead. Usage: ``python tools/layout.py DIR`` (default ``build/layout``); prints DIR.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def install(target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",  # the build itself is isolated: it gets the setuptools pyproject asks for
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
    )
    # setuptools leaves its build directory behind in the tree; it is not ours to keep.
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    shutil.rmtree(ROOT / "build" / "bdist.linux-x86_64", ignore_errors=True)
    return target


if __name__ == "__main__":
    print(install(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "layout").resolve()))

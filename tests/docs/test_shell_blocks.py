"""Every shell block of README.md and docs/*.md runs, so the docs cannot drift from the code.

What counts as a shell block: a fenced block whose info string is ``sh``, ``bash``, ``shell`` or
``console`` (indented fences in list items included). A ``console`` block is a transcript: only
its ``$ `` lines (and their ``\\`` continuation lines) are commands; the rest is output and is not
compared (it holds ids and times).

The rule for skipping one: the line just before its fence (blank lines aside) is the comment
``<!-- not-run: REASON -->``, with a reason a reader can check (needs docker, the network, a
trading engine, minutes of runtime, an interactive prompt, ...). Every other block must run and
exit 0; a marker without a reason, or one that precedes no shell block, fails too.

How a block runs: in bash, where its first failing line (``a && b`` included) fails it, in a temporary working
directory that holds a copy of the repository's ``config/``, with ``HOME`` and
``XDG_STATE_HOME`` pointing into it, against the real Redis at ``REDIS_URL`` under a prefix of
this run's own (``NAVSTREAM_PREFIX``, ``NAVSTREAM_REDIS_URL``; its keys are deleted at the end), with
``PIP_REQUIRE_VIRTUALENV=1``, so an unmarked ``pip install`` fails instead of changing the
environment the other tests run in.
The blocks of one document are a session: each starts in the directory the previous one ended
in (``cd navstream-acme`` follows ``cd ~/src``). ``navstream run`` without ``--until-idle`` or
``--max-events`` (and ``navstream ingest`` without ``--once``) would run until stopped: it gets
SIGINT after ``LONG_RUNNING_S`` and must then have started and stopped cleanly (exit 0).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from support import REDIS_URL, ROOT

pytestmark = [pytest.mark.real_redis]

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("sh", "bash", "shell", "console")
MARKER = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>[\w-]*)\s*$")
#: Seconds a long-running command runs before its SIGINT.
LONG_RUNNING_S = 2
#: Seconds one block may take.
BLOCK_TIMEOUT_S = 60

#: Wraps ``navstream``: a command that runs until stopped is stopped (SIGINT, graceful) after
#: LONG_RUNNING_S, and its exit code (0 when it started and stopped cleanly) is the line's.
PRELUDE = r"""
navstream() {
  local a long=""
  for a in "$@"; do case "$a" in run|ingest) long="$a";; esac; done
  for a in "$@"; do case "$a" in --until-idle*|--max-events*|--once) long="";; esac; done
  if [ -n "$long" ]; then
    timeout --preserve-status -s INT -k 10 "$NAVSTREAM_DOCS_LONG_S" navstream "$@"
  else
    command navstream "$@"
  fi
}
"""


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    info: str
    text: str
    skip: str | None  # the not-run reason

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def commands(self) -> str:
        if self.info != "console":
            return self.text
        out: list[str] = []
        more = False
        for line in self.text.splitlines():
            if line.startswith("$ ") or more:
                out.append(line[2:] if line.startswith("$ ") and not more else line)
                more = line.rstrip().endswith("\\")
        return "\n".join(out) + "\n"


def blocks(doc: Path) -> tuple[list[Block], list[str]]:
    """The shell blocks of ``doc``, and what is wrong with its markers."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    problems: list[str] = []
    marker: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            if marker is not None:
                problems.append(f"{doc.name}:{marker[0]}: a not-run marker before no shell block")
            marker = (i + 1, m.group("reason").strip())
            if not marker[1]:
                problems.append(f"{doc.name}:{i + 1}: a not-run marker without a reason")
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if fence:
            indent, info = fence.group("indent"), fence.group("info")
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            body = "\n".join(x[len(indent) :] if x.startswith(indent) else x for x in lines[i + 1 : end]) + "\n"
            if info in SHELL:
                found.append(Block(doc, i + 1, info, body, marker[1] if marker else None))
            elif marker is not None:
                problems.append(f"{doc.name}:{marker[0]}: a not-run marker before a ```{info} block")
            marker = None
            i = end + 1
            continue
        if lines[i].strip() and marker is not None:
            problems.append(f"{doc.name}:{marker[0]}: a not-run marker before no shell block")
            marker = None
        i += 1
    if marker is not None:
        problems.append(f"{doc.name}:{marker[0]}: a not-run marker before no shell block")
    return found, problems


def checked(commands: str) -> str:
    """``commands`` with every logical line (``\\`` continuations joined) followed by an exit on
    failure: ``bash -e`` would let ``a && b`` go on when ``a`` fails, as a reader's shell would
    not be told."""
    out: list[str] = []
    held = ""
    for line in commands.splitlines():
        held += line + "\n"
        if line.rstrip().endswith("\\"):
            continue
        if held.strip():
            out.append(f"{{ {held}}} || exit $?")
        held = ""
    if held.strip():
        out.append(f"{{ {held}}} || exit $?")
    return "\n".join(out) + "\n"


ALL = [b for doc in DOCS for b in blocks(doc)[0]]


def test_every_marker_has_a_reason_and_a_block() -> None:
    problems = [p for doc in DOCS for p in blocks(doc)[1]]
    assert problems == []
    assert ALL, "no shell blocks found: the fence pattern is wrong"


def test_the_reader_of_blocks_sees_markers_fences_and_transcripts(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "<!-- not-run: needs docker -->\n\n```sh\ndocker ps\n```\n\n"
        "1. step\n\n   ```bash\n   echo hi\n   ```\n\n"
        "```console\n$ echo a \\\n    b\na b\n$ true\n```\n\n"
        "<!-- not-run: -->\n```sh\nx\n```\n<!-- not-run: stray -->\ntext\n"
        "<!-- not-run: before toml -->\n```toml\na = 1\n```\n"
    )
    found, problems = blocks(doc)
    assert [(b.line, b.info, b.skip) for b in found] == [
        (3, "sh", "needs docker"),
        (9, "bash", None),
        (13, "console", None),
        (21, "sh", ""),
    ]
    assert found[1].text == "echo hi\n"
    assert found[2].commands() == "echo a \\\n    b\ntrue\n"
    script = checked("false && true  # a comment\necho never\n")
    assert subprocess.run(["bash", "-c", script], capture_output=True, text=True).returncode == 1
    assert subprocess.run(["bash", "-c", checked("echo a \\\n  b\n")], capture_output=True, text=True).stdout == "a b\n"
    assert problems == [
        "x.md:20: a not-run marker without a reason",
        "x.md:24: a not-run marker before no shell block",
        "x.md:26: a not-run marker before a ```toml block",
    ]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The temporary directory, environment and per-document working directory of the run."""
    root = tmp_path_factory.mktemp("docs-shell")
    shutil.copytree(ROOT / "config", root / "config")
    (root / "home").mkdir()
    prefix = f"nsdocs-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAVSTREAM_", "PYTEST_"))}
    env.update(
        HOME=str(root / "home"),
        XDG_STATE_HOME=str(root / "state"),
        NAVSTREAM_PREFIX=prefix,
        NAVSTREAM_REDIS_URL=REDIS_URL,
        NAVSTREAM_DOCS_LONG_S=str(LONG_RUNNING_S),
        NO_COLOR="1",
        PIP_NO_INPUT="1",
        # A block that installs must be marked: pip refuses to touch this environment.
        PIP_REQUIRE_VIRTUALENV="1",
    )
    state: dict[str, object] = {"root": root, "env": env, "cwd": {}}
    yield state
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        assert list(client.scan_iter(match=f"{prefix}:*")) == []
    finally:
        client.close()


@pytest.mark.timeout(BLOCK_TIMEOUT_S + 30)
@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_shell_block_runs(block: Block, workspace: dict[str, object]) -> None:
    if block.skip is not None:
        pytest.skip(f"not-run: {block.skip}")
    root = workspace["root"]
    assert isinstance(root, Path)
    cwds = workspace["cwd"]
    assert isinstance(cwds, dict)
    cwd = cwds.get(block.doc, root)
    marker = root / f".pwd-{uuid.uuid4().hex}"
    script = f"{PRELUDE}\n{checked(block.commands())}\npwd > {marker}\n"
    env = workspace["env"]
    assert isinstance(env, dict)
    try:
        result = subprocess.run(
            ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: did not finish within {BLOCK_TIMEOUT_S}s:\n{block.text}")
    if marker.exists():
        cwds[block.doc] = Path(marker.read_text().strip())
    assert result.returncode == 0, (
        f"{block.id} exited {result.returncode}; run it, fix the doc, or mark it "
        f"<!-- not-run: REASON -->:\n{block.text}\n--- stdout\n{result.stdout[-2000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}"
    )

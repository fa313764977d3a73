"""The PromQL, Prometheus rule files and Prometheus configs the docs show, found where the docs
mark them, for ``.ci/promtool.sh`` (checked with promtool) and tests/serve/test_metrics_docs.py
(every metric they name is exported).

How the docs mark them (Markdown, so the marks do not show when rendered):

- a fenced block with the language ``promql``: PromQL expressions, separated by blank lines;
  lines starting with ``#`` are comments;
- a fenced ``yaml`` block right after the line ``<!-- promtool: rules -->``: a whole Prometheus
  rules file (``groups:``), alerting or recording rules;
- a fenced ``yaml`` block right after ``<!-- promtool: config -->``: a whole Prometheus config
  (``scrape_configs:`` ...).

Standard library only (the CI step runs before the test extras are installed), except
:func:`rule_expressions`, which reads rule files with PyYAML.

``python tests/support/docs_promql.py OUTDIR`` writes ``OUTDIR/expressions.rules.yml`` (every ``promql``
expression wrapped as a recording rule, which ``promtool check rules`` parses and checks),
``OUTDIR/rules-N.yml`` and ``OUTDIR/config-N.yml``, and prints one line per file:
``rules <file>`` or ``config <file>``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Where PromQL may appear: every Markdown file of the docs and the README.
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
MARK = re.compile(r"<!--\s*promtool:\s*(rules|config)\s*-->")
FENCE = re.compile(r"^(```+|~~~+)\s*([A-Za-z0-9_-]*)")
#: A metric name as PromQL writes it (recording rules' own names have colons and are skipped).
METRIC = re.compile(r"(?<![\w:\"'.])((?:navstream|process|python)_[a-zA-Z0-9_]+)\b(?!\s*\()")


@dataclass(frozen=True)
class Block:
    """One marked block: ``kind`` is ``promql``, ``rules`` or ``config``."""

    kind: str
    text: str
    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(paths: list[Path] | None = None) -> list[Block]:
    """Every marked block of the docs, in file order."""
    found = []
    for path in paths or DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = FENCE.match(lines[i])
            if not fence:
                i += 1
                continue
            marker, language = fence.groups()
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith(marker):
                body.append(lines[i])
                i += 1
            i += 1
            previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            mark = MARK.fullmatch(previous.strip())
            if language == "promql":
                found.append(Block("promql", "\n".join(body), path, start + 1))
            elif mark and language in ("yaml", "yml"):
                found.append(Block(mark.group(1), "\n".join(body) + "\n", path, start + 1))
            elif mark:
                raise ValueError(
                    f"{path.relative_to(ROOT)}:{start + 1}: a promtool mark before a "
                    f"{language or 'plain'} block (yaml expected)"
                )
            elif language in ("yaml", "yml") and any(
                re.match(r"\s*-?\s*(expr|scrape_configs):", line) for line in body
            ):
                raise ValueError(
                    f"{path.relative_to(ROOT)}:{start + 1}: a Prometheus rules file or config "
                    "without its <!-- promtool: rules|config --> mark: it would not be checked"
                )
    return found


def expressions(block: Block) -> list[str]:
    """The expressions of a ``promql`` block: separated by blank lines, ``#`` lines dropped."""
    out, current = [], []
    for line in block.text.splitlines() + [""]:
        if line.lstrip().startswith("#"):
            continue
        if line.strip():
            current.append(line)
        elif current:
            out.append("\n".join(current))
            current = []
    return out


def rule_expressions(block: Block) -> list[str]:
    """Every ``expr`` of a rules block (needs PyYAML)."""
    import yaml

    data = yaml.safe_load(block.text)
    return [str(rule["expr"]) for group in data.get("groups", []) for rule in group.get("rules", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (strings, label values and function names aside)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    return set(METRIC.findall(without_strings))


def write(outdir: Path) -> list[tuple[str, Path]]:
    """The files promtool checks, written into ``outdir``; (kind, file) each."""
    outdir.mkdir(parents=True, exist_ok=True)
    found = blocks()
    rules = []
    files: list[tuple[str, Path]] = []
    for block in found:
        if block.kind == "promql":
            for n, expr in enumerate(expressions(block)):
                rules.append(
                    {
                        "record": f"docs:check_{len(rules)}",
                        "expr": expr,
                        "labels": {"docs_source": f"{block.where}#{n + 1}"},
                    }
                )
        else:
            path = outdir / f"{block.kind}-{len(files)}.yml"
            path.write_text(f"# {block.where}\n{block.text}")
            files.append((block.kind, path))
    if not rules or not any(kind == "rules" for kind, _ in files):
        raise SystemExit(
            "docs_promql: no promql block or no marked rules file found in the docs; "
            "the marks are described in tests/support/docs_promql.py"
        )
    path = outdir / "expressions.rules.yml"
    # JSON is YAML: no quoting rules to get wrong for expressions with quotes and braces.
    path.write_text(json.dumps({"groups": [{"name": "docs-expressions", "rules": rules}]}, indent=1) + "\n")
    return [("rules", path), *files]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/support/docs_promql.py OUTDIR")
    for kind, file in write(Path(sys.argv[1])):
        print(kind, file)

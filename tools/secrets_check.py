#!/usr/bin/env python3
"""The secret scan of CI (``.ci/secrets.sh``): detect-secrets over the tree, against a baseline.

    python tools/secrets_check.py                    # exit 1 on any finding not audited as a false positive
    python tools/secrets_check.py --update-baseline  # rewrite .secrets.baseline, keeping audit marks
    python tools/secrets_check.py --audit            # then mark each new entry, interactively (docs/security.md)

(``--audit`` is ``detect-secrets audit .secrets.baseline`` with navstream's own plugins loaded:
the plain command cannot find them and stops with ``KeyError: 'Password in URL'``.)

Scans every file git tracks, and every untracked one it would add (not ignored), as
``tools/secret_scan.py`` does, with the detectors and filters that ``.secrets.baseline`` names
(``plugins_used``, ``filters_used``; among them navstream's own, ``tools/detect_secrets_plugins.py``:
Google API keys and passwords in URLs). A finding fails the scan unless the baseline holds it
(same file, same secret, same kind; line numbers may move) with ``"is_secret": false``: an
unaudited entry, or one audited as a secret, fails too. The detectors every scan must run are
checked (:data:`REQUIRED_PLUGINS`), so a baseline edit cannot switch them off, and no filter that
calls out to the network (detect-secrets' verification) may be configured. Findings name the
file, the line and the kind, never the secret. Nothing is written unless ``--update-baseline``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The repository this script belongs to: where the baseline's relative ``file://`` plugin paths point.
REPO = Path(__file__).resolve().parent.parent
BASELINE = ".secrets.baseline"

#: Detectors that every scan must run, whatever the baseline says.
REQUIRED_PLUGINS = frozenset(
    {
        "AWSKeyDetector",
        "Base64HighEntropyString",
        "BasicAuthDetector",
        "GitHubTokenDetector",
        "GitLabTokenDetector",
        "HexHighEntropyString",
        "JwtTokenDetector",
        "KeywordDetector",
        "PrivateKeyDetector",
        "SlackDetector",
        "StripeDetector",
        "GoogleApiKeyDetector",
        "UrlPasswordDetector",  # tools/detect_secrets_plugins.py
    }
)
#: A filter that sends candidate secrets to their issuers to verify them: never, from CI.
NETWORK_FILTER = "detect_secrets.filters.common.is_ignored_due_to_verification_policies"


def repository_files(root: Path) -> list[str]:
    """Every file git tracks, and every untracked one it would add (not ignored), that exists."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = sorted({n for n in out.split("\0") if n})
    return [n for n in names if n != BASELINE and (root / n).is_file() and not (root / n).is_symlink()]


def _configure(config: dict[str, Any]) -> None:
    """Load the baseline's plugins and filters into detect-secrets, custom plugin paths resolved
    against this repository (so a scan of another directory runs the very same detectors)."""
    from detect_secrets.settings import configure_settings_from_baseline

    config = json.loads(json.dumps(config))  # a copy
    for plugin in config.get("plugins_used", []):
        path = plugin.get("path", "")
        if path.startswith("file://") and not os.path.isabs(path[len("file://") :]):
            plugin["path"] = "file://" + str(REPO / path[len("file://") :])
    names = {p["name"] for p in config.get("plugins_used", [])}
    missing = sorted(REQUIRED_PLUGINS - names)
    if missing:
        raise SystemExit(
            f"secrets-check: the baseline's plugins_used lacks {', '.join(missing)}: every scan must run them"
        )
    if any(f.get("path") == NETWORK_FILTER for f in config.get("filters_used", [])):
        raise SystemExit(
            f"secrets-check: the baseline's filters_used has {NETWORK_FILTER}, which calls "
            "out to the network to verify secrets: remove it"
        )
    configure_settings_from_baseline(config)


def scan(root: Path, names: list[str]) -> Any:
    from detect_secrets import SecretsCollection

    secrets = SecretsCollection(root=str(root))
    if names:
        secrets.scan_files(*names)
    return secrets


def relative(name: str, root: Path) -> str:
    """``name`` relative to the work tree, as the baseline keeps it: a clone elsewhere (CI's)
    must match the same findings."""
    path = Path(name)
    return str(path.relative_to(root)) if path.is_absolute() and path.is_relative_to(root) else name


def problems(found: Any, baseline: Any, root: Path) -> list[str]:
    """``file:line: kind (why)`` of every finding that the baseline does not clear."""
    audited = {(relative(name, root), secret.secret_hash, secret.type): secret for name, secret in baseline}
    out = []
    for name, secret in found:
        name = relative(name, root)
        held = audited.get((name, secret.secret_hash, secret.type))
        if held is None:
            why = "new: not in the baseline"
        elif held.is_secret is None:
            why = "in the baseline but not audited"
        elif held.is_secret:
            why = "audited as a real secret"
        else:
            continue
        out.append((name, secret.line_number or 0, f"{name}:{secret.line_number}: {secret.type} ({why})"))
    return [text for _, _, text in sorted(out)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the git work tree to scan (default: this repository)")
    parser.add_argument("--baseline", type=Path, help=f"baseline file (default: ROOT/{BASELINE})")
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help="rewrite the baseline with the current findings, keeping their audit marks",
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        help="label the baseline's findings as secrets or not, interactively (detect-secrets audit)",
    )
    parser.add_argument("files", nargs="*", help="scan only these files (paths relative to ROOT)")
    args = parser.parse_args(argv)
    if args.update_baseline and args.files:
        parser.error("--update-baseline rescans the whole tree: name no files")
    root = args.root.resolve()
    baseline_path = args.baseline or root / BASELINE
    try:
        from detect_secrets.core.secrets_collection import SecretsCollection
    except ImportError:
        print(
            "secrets-check: detect-secrets is not installed (.ci/secrets.sh installs the pinned version)",
            file=sys.stderr,
        )
        return 2
    try:
        config = json.loads(baseline_path.read_text())
    except (OSError, ValueError) as exc:
        print(f"secrets-check: cannot read the baseline {baseline_path}: {exc}", file=sys.stderr)
        return 2
    _configure(config)
    if args.audit:
        from detect_secrets.audit import audit_baseline
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

        get_mapping_from_secret_type_to_class.cache_clear()  # now with the baseline's own plugins
        os.chdir(root)  # the audit shows each finding's lines, by paths relative to the root
        audit_baseline(str(Path(baseline_path).resolve()))
        return 0
    baseline = SecretsCollection.load_from_baseline(config)
    names = args.files or repository_files(root)
    found = scan(root, names)

    if args.update_baseline:
        # Paths relative to the work tree, so the baseline holds in any clone; audit marks kept
        # by (file, hash, kind), whatever line the finding moved to.
        marks = {
            (relative(entry["filename"], root), entry["hashed_secret"], entry["type"]): entry["is_secret"]
            for entries in config.get("results", {}).values()
            for entry in entries
            if "is_secret" in entry
        }
        results: dict[str, list[dict[str, Any]]] = {}
        for name, entries in found.json().items():
            for entry in entries:
                entry = {**entry, "filename": relative(entry["filename"], root)}
                mark = marks.get((entry["filename"], entry["hashed_secret"], entry["type"]))
                if mark is not None:
                    entry["is_secret"] = mark
                results.setdefault(relative(name, root), []).append(entry)
        config["results"] = results
        config["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        baseline_path.write_text(json.dumps(config, indent=2) + "\n")
        unaudited = sum(1 for entries in results.values() for e in entries if "is_secret" not in e)
        print(
            f"secrets-check: {baseline_path} rewritten: {sum(len(e) for e in results.values())} finding(s), "
            f"{unaudited} to audit (python tools/secrets_check.py --audit)"
        )
        return 0

    failed = problems(found, baseline, root)
    for text in failed:
        print(f"secrets-check: {text}", file=sys.stderr)
    if failed:
        print(
            f"secrets-check: {len(failed)} finding(s). Remove a real credential (and rotate it: it may already "
            "be in git history). For a false positive, build the value so it is not flagged (as the tests "
            "do), or run `python tools/secrets_check.py --update-baseline`, then `python tools/secrets_check.py "
            "--audit` and mark it not a secret (docs/security.md)",
            file=sys.stderr,
        )
        return 1
    print(f"secrets-check: {len(names)} files, no findings outside the audited baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())

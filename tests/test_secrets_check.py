"""The CI secret scan (.ci/secrets.sh: detect-secrets through tools/secrets_check.py, against the
repository's .secrets.baseline) finds each kind the old scanner missed, and passes a clean tree.

Every secret here is built at run time from random parts, so this file holds none. The scan runs
exactly as .ci/secrets.sh runs it (the same script, the same baseline's plugins and filters),
over a temporary git repository instead of this one.
"""

from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

pytest.importorskip("detect_secrets", reason="detect-secrets is installed by .ci/secrets.sh (pinned there)")

CHECK = ROOT / "tools" / "secrets_check.py"
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(random.SystemRandom().choice(alphabet) for _ in range(n))


def secrets_by_file() -> dict[str, tuple[str, str, str]]:
    """``{file: (text, kind the scan must name, the secret)}``, one of each kind."""
    github = "gh" + "p_" + rand(36)
    slack = (
        "xo"
        + "xb-"
        + rand(12, string.digits)
        + "-"
        + rand(13, string.digits)
        + "-"
        + rand(24, string.ascii_lowercase + string.digits)
    )
    google = "AI" + "za" + rand(35, ALNUM + "-_")
    pw_alone, pw_user = rand(20), rand(20)
    return {
        "notes.md": (f"Deploy with the token {github} for now.\n", "GitHub Token", github),
        "app/notify.py": (f'WEBHOOK_TOKEN_FOR_ALERTS = "{slack}"\n', "Slack Token", slack),
        "config/maps.yaml": (f"maps:\n  key: {google}\n", "Google API Key", google),
        "config/prod.toml": (
            f'[redis]\nurl = "rediss://:{pw_alone}@redis.internal:6380/0"\n',
            "Password in URL",
            pw_alone,
        ),
        "deploy/run.sh": (
            f"export NAVSTREAM_REDIS_URL=redis://ops:{pw_user}@10.0.0.5:6379/0\n",
            "Password in URL",
            pw_user,
        ),
    }


def make_repo(path: Path, files: dict[str, str], baseline_results: dict | None = None) -> Path:
    """A git repository with ``files`` (added to the index) and the repository's baseline
    configuration (its plugins and filters), with ``baseline_results`` as its findings."""
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    config = json.loads((ROOT / ".secrets.baseline").read_text())
    config["results"] = baseline_results or {}
    (path / ".secrets.baseline").write_text(json.dumps(config, indent=2))
    (path / ".gitignore").write_text("ignored/\n")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    return path


def run_check(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command of .ci/secrets.sh, pointed at ``root``."""
    return subprocess.run(
        [sys.executable, str(CHECK), "--root", str(root), *args], capture_output=True, text=True, timeout=300
    )


def test_ci_runs_this_check() -> None:
    script = (ROOT / ".ci" / "secrets.sh").read_text()
    assert "detect-secrets==" in script and "python tools/secrets_check.py" in script
    assert ".ci/secrets.sh" in (ROOT / ".ci" / "run").read_text()


def test_each_kind_is_found_and_never_shown(tmp_path: Path) -> None:
    cases = secrets_by_file()
    repo = make_repo(tmp_path / "repo", {name: text for name, (text, _, _) in cases.items()})
    done = run_check(repo)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    for name, (_, kind, secret) in cases.items():
        assert any(line.startswith(f"secrets-check: {name}:") and kind in line for line in lines), (name, kind, lines)
        assert secret not in done.stdout + done.stderr, "a finding never shows the secret"


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {
            "README.md": "Set NAVSTREAM_REDIS_PASSWORD in the environment; the URL is redis://redis:6379/0.\n",
            "app/main.py": 'import os\n\nPASSWORD = os.environ["NAVSTREAM_REDIS_PASSWORD"]\nURL = "redis://user:***@host:6379/0"\n',
            "config/prod.toml": '[redis]\nurl = "rediss://redis.internal:6380/0"\n',
        },
    )
    done = run_check(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no findings" in done.stdout


def test_untracked_files_count_and_ignored_ones_do_not(tmp_path: Path) -> None:
    text, _, _ = secrets_by_file()["notes.md"]
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n"})
    (repo / "ignored").mkdir()
    (repo / "ignored" / "notes.md").write_text(text)
    assert run_check(repo).returncode == 0  # ignored: git would never add it
    (repo / "new.md").write_text(text)  # untracked, not ignored: the next `git add .` takes it
    done = run_check(repo)
    assert done.returncode == 1 and "secrets-check: new.md:1: GitHub Token" in done.stderr


def test_the_baseline_clears_only_audited_false_positives(tmp_path: Path) -> None:
    text, _, _ = secrets_by_file()["config/maps.yaml"]
    repo = make_repo(tmp_path / "repo", {"config/maps.yaml": text})
    assert run_check(repo, "--update-baseline").returncode == 0
    baseline = json.loads((repo / ".secrets.baseline").read_text())
    entries = baseline["results"]["config/maps.yaml"]  # the key, and maybe a keyword or entropy finding too
    assert "Google API Key" in {e["type"] for e in entries} and not any("is_secret" in e for e in entries)
    assert text.split()[-1] not in (repo / ".secrets.baseline").read_text(), "the baseline holds hashes only"
    done = run_check(repo)  # in the baseline, but nobody said it is not a secret
    assert done.returncode == 1 and "not audited" in done.stderr
    for verdict, rc in ((True, 1), (False, 0)):
        for entry in entries:
            entry["is_secret"] = verdict
        (repo / ".secrets.baseline").write_text(json.dumps(baseline, indent=2))
        assert run_check(repo).returncode == rc, verdict
    # an audited entry keeps clearing its secret when lines move; another file's copy does not
    (repo / "config" / "maps.yaml").write_text("# moved down\n" + text)
    assert run_check(repo).returncode == 0
    (repo / "other.yaml").write_text(text)
    done = run_check(repo)
    assert done.returncode == 1 and "other.yaml" in done.stderr


def test_the_baseline_cannot_switch_detectors_off(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n"})
    baseline = json.loads((repo / ".secrets.baseline").read_text())
    baseline["plugins_used"] = [p for p in baseline["plugins_used"] if p["name"] != "GitHubTokenDetector"]
    (repo / ".secrets.baseline").write_text(json.dumps(baseline))
    done = run_check(repo)
    assert done.returncode != 0 and "GitHubTokenDetector" in done.stderr


def test_the_repository_baseline_is_all_audited_false_positives() -> None:
    baseline = json.loads((ROOT / ".secrets.baseline").read_text())
    entries = [e for found in baseline["results"].values() for e in found]
    assert entries and all(e.get("is_secret") is False for e in entries)
    assert not any("verification" in f["path"] for f in baseline["filters_used"]), "no network calls from CI"


def test_the_old_scanner_still_runs_with_the_baseline_in_the_tree() -> None:
    assert shutil.which("git")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "secret_scan.py"), ".secrets.baseline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_an_audited_baseline_holds_in_a_clone_elsewhere_and_through_an_update(tmp_path: Path) -> None:
    """CI scans a fresh clone in another folder: the baseline keeps paths relative to the work
    tree, so what was audited in one place is cleared in any other, and rewriting it keeps the marks."""
    text, _, _ = secrets_by_file()["config/maps.yaml"]
    repo = make_repo(tmp_path / "here", {"config/maps.yaml": text})
    assert run_check(repo, "--update-baseline").returncode == 0
    baseline = json.loads((repo / ".secrets.baseline").read_text())
    for entries in baseline["results"].values():
        for entry in entries:
            assert not Path(entry["filename"]).is_absolute()
            entry["is_secret"] = False
    (repo / ".secrets.baseline").write_text(json.dumps(baseline, indent=2))
    clone = tmp_path / "elsewhere" / "clone"
    shutil.copytree(repo, clone)
    assert run_check(clone).returncode == 0, run_check(clone).stderr
    (clone / "config" / "maps.yaml").write_text("# moved\n" + text)
    assert run_check(clone, "--update-baseline").returncode == 0
    again = json.loads((clone / ".secrets.baseline").read_text())
    assert all(e.get("is_secret") is False for entries in again["results"].values() for e in entries)
    assert run_check(clone).returncode == 0

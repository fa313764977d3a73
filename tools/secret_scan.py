#!/usr/bin/env python3
"""Fail when a credential is in a file git tracks (or would commit): run by .ci/run before the tests.

    python tools/secret_scan.py            # the work tree of this repository; exit 1 on a finding
    python tools/secret_scan.py FILE ...   # these files only

Finds private keys in PEM form, Google service-account key files, AWS access key ids, long
API keys or secrets assigned to a secret-looking name (a Binance key is 64 letters and digits),
and ``.env`` files that hold values. Findings name the file, the line and the kind, never the
secret. Standard library only, so it runs before anything is installed.

Nothing generated at run time (the test certificates of tests/test_security.py, the emulator's
data) is ever committed; a file added to :data:`ALLOW` needs a reason, in review.

This is the quick first pass, run before anything is installed. The gate is the maintained
scanner, detect-secrets, run by ``.ci/secrets.sh`` (``tools/secrets_check.py``) against the audited
``.secrets.baseline``: it also finds GitHub, Slack, GitLab, Stripe and Google API keys, JWTs,
passwords in URLs and high-entropy strings (docs/security.md).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

#: ``(glob of repository paths, reason)``: files whose findings are known not to be secrets.
ALLOW: tuple[tuple[str, str], ...] = (
    (
        ".secrets.baseline",
        "detect-secrets' baseline: SHA-1 hashes of audited false positives, under `hashed_secret`; no secret",
    ),
    (
        "tests/plugins/sources/ccxt/conftest.py",
        "made-up credentials that the ccxt stub tests grep every output for; "
        "no venue issued them, and they reach only the local stub",
    ),
)

#: Values that look like secrets but are published examples, not credentials: the API key and
#: secret of Binance's documentation (its HMAC signing example), used by tests/plugins/sources/test_sources.py to
#: check signatures against the documented ones.
PUBLIC_EXAMPLES = frozenset(
    {
        "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
        "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    }
)

MAX_BYTES = 5_000_000

# The patterns are assembled from pieces, so that this file does not match itself.
_BEGIN, _END = "-----" + "BEGIN ", "-----"
PRIVATE_KEY = re.compile(_BEGIN + r"(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?" + _END)
SERVICE_ACCOUNT = re.compile(r'"type"\s*:\s*"service_' + r'account"')
SA_PRIVATE_KEY = re.compile(r'"private_key(?:_id)?"\s*:\s*"[^"]{16,}')
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)" + r"[0-9A-Z]{16}\b")
#: A long random-looking value assigned to (or next to) a secret-looking name:
#: ``api_key = "..."``, ``"secret": "..."``, ``BINANCE_API_SECRET=...``, ``apiKey: ...``.
SECRET_ASSIGNMENT = re.compile(
    r"(?i)(api[_-]?key|api[_-]?secret|secret[_-]?key|client[_-]?secret|access[_-]?key(?:[_-]?id)?|"
    r"secret|private[_-]?key|auth[_-]?token|access[_-]?token|password|passwd)"
    r"[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9+/_\-]{32,}={0,2})"
)
ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
ENV_EXAMPLE_SUFFIXES = (".example", ".sample", ".template", ".dist")
SECRET_NAME = re.compile(r"(?i)pass|secret|token|key|credential|auth")


def _looks_random(value: str) -> bool:
    """Letters and digits mixed, as a generated key is; not a word, a path or a repeated char."""
    return len(set(value)) >= 12 and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _is_env_file(name: str) -> bool:
    """``.env``, ``.env.prod``, ``ingest.env``, ``ingest.env.example``."""
    return re.search(r"(?:^|\.)env(?:\.|$)", name.rsplit("/", 1)[-1]) is not None


def scan_text(name: str, text: str) -> list[tuple[int, str]]:
    """``(line number, kind)`` of every credential in ``text`` (the file ``name``)."""
    found: list[tuple[int, str]] = []

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    for m in PRIVATE_KEY.finditer(text):
        found.append((line_of(m.start()), "private key (PEM)"))
    sa = SERVICE_ACCOUNT.search(text)
    if sa and SA_PRIVATE_KEY.search(text):
        found.append((line_of(sa.start()), "Google service-account key file"))
    for m in AWS_KEY_ID.finditer(text):
        found.append((line_of(m.start()), "AWS access key id"))
    for m in SECRET_ASSIGNMENT.finditer(text):
        if _looks_random(m.group(2)) and m.group(2) not in PUBLIC_EXAMPLES:
            found.append((line_of(m.start()), f"long secret assigned to `{m.group(1)}`"))
    if _is_env_file(name):
        example = name.endswith(ENV_EXAMPLE_SUFFIXES)
        for number, line in enumerate(text.splitlines(), 1):
            m = ENV_LINE.match(line)
            if not m or line.lstrip().startswith("#"):
                continue
            value = m.group(2).strip("\"'")
            if value and (not example or SECRET_NAME.search(m.group(1))):
                found.append((number, f".env file with a value for {m.group(1)}"))
    return sorted(set(found))


def repository_files(root: Path) -> list[str]:
    """Every file git tracks, and every untracked one it would add (not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({n for n in out.split("\0") if n})


def allowed(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern, _ in ALLOW)


def scan(root: Path, names: list[str]) -> list[str]:
    problems = []
    for name in names:
        path = root / name
        if allowed(name) or not path.is_file() or path.is_symlink():
            continue
        if path.stat().st_size > MAX_BYTES:
            problems.append(f"{name}: larger than {MAX_BYTES} bytes, not scanned: keep such files out of git")
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        problems += [f"{name}:{number}: {kind}" for number, kind in scan_text(name, text)]
    return problems


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    names = argv or repository_files(root)
    problems = scan(root, names)
    for problem in problems:
        print(f"secret-scan: {problem}", file=sys.stderr)
    if problems:
        print(
            f"secret-scan: {len(problems)} finding(s): remove the credential (and rotate it: it may "
            "already be in the history), or, for a proven non-secret, add the file to ALLOW in "
            "tools/secret_scan.py with a reason",
            file=sys.stderr,
        )
        return 1
    print(f"secret-scan: {len(names)} files, no credentials")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

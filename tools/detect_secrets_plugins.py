"""navstream's own detect-secrets plugins, for what detect-secrets 1.5 has no detector for.

Loaded by ``tools/secrets_check.py`` through ``.secrets.baseline`` (``plugins_used``, a
``file://`` path), exactly as ``detect-secrets scan --plugin tools/detect_secrets_plugins.py``
would. Every class here that subclasses ``RegexBasedDetector`` is a plugin.

- Google API keys (``AIza`` and 35 more characters): Maps, Firebase, Cloud; detect-secrets has
  no plugin for them, and the high-entropy plugins only look inside quoted strings.
- A password inside a URL's userinfo, with or without a user name (where ``***`` stands in
  ``redis://:***@host``, ``rediss://user:***@host``, ``https://u:***@h``): detect-secrets'
  ``BasicAuthDetector`` needs a user name and refuses passwords holding any of ``!$&'()*+,;=``,
  so a password with no user name (the usual form for Redis' ``requirepass``) passes it. A
  masked password (``***``), a template (``{password}``, ``${REDIS_PASSWORD}``, ``<password>``)
  and other placeholders are left to detect-secrets' own filters (``is_templated_secret`` and
  the rest) or skipped here.
"""

from __future__ import annotations

import re

from detect_secrets.plugins.base import RegexBasedDetector


class GoogleApiKeyDetector(RegexBasedDetector):
    """Google API keys: ``AIza`` followed by 35 letters, digits, ``-`` or ``_``."""

    secret_type: str = "Google API Key"
    denylist = [re.compile(r"(?<![0-9A-Za-z\-_])(AIza[0-9A-Za-z\-_]{35})(?![0-9A-Za-z\-_])")]


#: Placeholders that are not passwords: masked (``***``), or the words docs use for one.
_NOT_A_PASSWORD = re.compile(
    r"^(?:\*+|x+|\.\.\.|…|password|passwd|pass|pw|pwd|secret|redacted|changeme)$", re.IGNORECASE
)


class UrlPasswordDetector(RegexBasedDetector):
    """A password in a URL's userinfo, after ``scheme://user:`` or ``scheme://:``, before ``@host``."""

    secret_type: str = "Password in URL"
    denylist = [re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@\"'`<>]*:([^\s/?#@\"'`<>]+)@[^\s/?#@]")]

    def analyze_string(self, string: str):  # type: ignore[no-untyped-def]
        for value in super().analyze_string(string):
            if not _NOT_A_PASSWORD.match(value):
                yield value

"""The loop's errors that callers (the CLI, the ingest process, tests) catch by name.

In a module of their own so that catching them needs none of the loop's machinery.
"""

from __future__ import annotations


class StartupError(RuntimeError):
    """A plugin refused to start; navstream does not run without it."""

"""The command line's exit codes and the error a command raises to end with one.

Apart from the commands so that every part of the CLI (the commands, the dispatch in
:func:`navstream.cli.main`) shares one list of exit codes.

Exit codes: 0 success; 1 the operation failed (a plugin or Redis refused); 2 bad input (usage,
config, an entry that breaks the contract); 3 Redis unreachable; 141 stdout's reader left before
the answer was written (``navstream nav | head -1``): nothing more is said, as a program a closed
pipe ends with SIGPIPE says nothing (a shell shows it as 141 = 128 + SIGPIPE too).
"""

from __future__ import annotations

import signal
import sys

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
#: stdout's reader left (``| head``): 128 + SIGPIPE, what a shell reports for a program a closed
#: pipe ended. Python ignores SIGPIPE (a Redis socket's EPIPE must stay an error it handles), so
#: the CLI ends itself that way on BrokenPipeError.
EXIT_PIPE = 128 + signal.SIGPIPE


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int) -> int:
    print(f"navstream: error: {message}", file=sys.stderr)
    return code

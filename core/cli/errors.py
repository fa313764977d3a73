"""The command line's exit codes and the error a command raises to end with one.

Apart from the commands so that every part of the CLI (the commands, the dispatch in
:func:`navstream.cli.main`, :mod:`navstream.cli.console`, which says what an exception means)
shares one list of exit codes.

Exit codes: 0 success; 1 the operation failed (a plugin or Redis refused; an unexpected
exception, a bug, is said as one); 2 bad input (usage, config, an entry that breaks the contract,
a malformed id); 3 Redis unreachable; 130 interrupted (Ctrl-C, outside ``run``, which stops
gracefully); 141 stdout's reader left before the answer was written (``navstream nav | head -1``):
nothing more is said, as a program a closed pipe ends with SIGPIPE says nothing (a shell shows it
as 141 = 128 + SIGPIPE too).
"""

from __future__ import annotations

import signal

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
#: stdout's reader left (``| head``): 128 + SIGPIPE, what a shell reports for a program a closed
#: pipe ended. Python ignores SIGPIPE (a Redis socket's EPIPE must stay an error it handles), so
#: the CLI ends itself that way on BrokenPipeError.
EXIT_PIPE = 128 + signal.SIGPIPE
#: Ctrl-C ended a one-shot command: 128 + SIGINT, what a shell reports for it.
EXIT_INTERRUPTED = 128 + signal.SIGINT


class CliError(Exception):
    """Ends the command with ``navstream: error: <message>`` and ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code

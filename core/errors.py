"""The one error base of every orpo-* command: an ``OrpoError`` is shown as one line (``prog: error: message``),
never a traceback, and carries the exit code its command returns.

Exit codes, the same on every command (README's table): 0 done; 1 the run failed (a stage, an export below its
quality gate, a load test below its SLOs, a server whose engine died); 2 bad usage or input (arguments, config,
model, dataset, a folder that is in the way); 130 interrupted.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class OrpoError(Exception):
    """An error a command reports in one line; ``exit_code`` is what the command returns."""

    exit_code = EXIT_FAILED


class UsageError(OrpoError, ValueError):
    """A bad argument or input (arguments, config, model, dataset, paths); the message is the one line shown."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config file, key or value that cannot be used; the message names it (and the nearest key, if unknown)."""


class RunFailed(OrpoError, RuntimeError):
    """The inputs were fine and the run did not succeed; the message names the log or the figure."""

    exit_code = EXIT_FAILED


def report(prog: str, exc: BaseException) -> int:
    """Print ``prog: error: message`` on stderr and return the exit code for ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return exc.exit_code if isinstance(exc, OrpoError) else EXIT_FAILED

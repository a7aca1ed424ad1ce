"""What every orpo-* command shares: bad arguments become one line on stderr and exit 2, never a usage dump."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """A bad argument or input; the message is the one line the user sees."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting, so main() decides what is shown."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)

"""What every orpo-* command shares: bad arguments become one line on stderr and exit 2, never a usage dump."""

from __future__ import annotations

import argparse

from orpo_deploy.core.errors import UsageError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting, so main() decides what is shown."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def quiet_known_warnings() -> None:
    """Silence warnings that say nothing to a user of these commands, so a bad input still gets exactly one line.

    torchao (pulled in by gptqmodel) registers Enum subclasses with torch's pytree at import time, and torch 2.13
    logs a deprecation warning for each one (``torch.utils._pytree``); nothing in this project calls that API.
    """
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

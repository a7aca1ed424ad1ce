"""One real orpo-serve process on the tiny model, for the modules that test it with vLLM (started, waited for,
always stopped)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orpo_deploy.core.models import TINY_NAME, resolve_model
from orpo_deploy.loadtest.servers import (
    RunningServer,
    ServerError,
    free_port,
    orpo_serve_command,
    start_server,
    stop_server,
)

REPO = Path(__file__).resolve().parents[2]


def run_tiny_server(log_dir: Path, argv: list[str], env: dict | None = None, timeout_s: float = 300) -> Iterator:
    resolve_model(TINY_NAME)  # build the tiny model before the clock starts
    port, log = free_port(), log_dir / "server.log"
    cmd = orpo_serve_command(TINY_NAME, port, "--max-model-len", "512", *argv)
    try:
        srv: RunningServer = start_server(cmd, f"http://127.0.0.1:{port}", log, timeout_s=timeout_s, cwd=REPO, env=env)
    except ServerError as exc:
        pytest.fail(f"{exc}:\n{log.read_text(errors='replace')[-3000:]}")
    try:
        yield srv
    finally:
        stop_server(srv.proc, grace_s=30)

"""The serve stage: orpo-serve in its own process on a free loopback port, up until the load test is done.

The process is started and stopped by loadtest/servers.py (the one launcher the benches, tests and pipeline share):
its own session, so stopping it (SIGTERM: drain, then exit 0) reaches only what this stage started. This module
adds what the pipeline needs on top: a fresh API key, a warm-up request, and a record of how it stopped.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from orpo_deploy.core.errors import RunFailed
from orpo_deploy.loadtest.servers import ServerError, free_port, orpo_serve_command, stop_process
from orpo_deploy.loadtest.servers import start_server as start_process

logger = logging.getLogger(__name__)


class ServeFailed(RunFailed):
    """The server did not come up; the message names its log."""


@dataclass
class Server:
    """A running orpo-serve process and how to reach it."""

    proc: subprocess.Popen
    url: str
    api_key: str
    log: Path
    ready_s: float = 0.0
    warm_up_s: float = 0.0
    stop_record: dict = field(default_factory=dict)

    def stop(self, grace_seconds: float) -> dict:
        """SIGTERM (the server drains, then exits 0); SIGKILL its process group if it overstays."""
        if self.stop_record:
            return self.stop_record
        started = time.perf_counter()
        code, killed = stop_process(self.proc, grace_seconds + 60)
        self.stop_record = {"stop_s": round(time.perf_counter() - started, 2), "exit_code": code, "killed": killed}
        return self.stop_record


def start_server(model_dir: Path, args: list[str], log: Path, timeout_s: float, env: dict[str, str]) -> Server:
    """orpo-serve on ``model_dir`` on a free port with a fresh API key; waits for /ready, then warms it up."""
    port, key = free_port(), secrets.token_urlsafe(32)
    url = f"http://127.0.0.1:{port}"
    # the key stays out of argv (ps shows it to all users)
    try:
        running = start_process(
            orpo_serve_command(model_dir, port, *args), url, log, timeout_s=timeout_s,
            env={**env, "ORPO_SERVE_API_KEYS": key},
        )  # fmt: skip
    except ServerError as exc:
        raise ServeFailed(f"orpo-serve did not come up: {exc}") from None
    server = Server(running.proc, url, key, log, ready_s=round(running.startup_s, 2))
    started = time.perf_counter()
    try:
        warm_up(server, timeout_s)
    except BaseException:
        server.stop(grace_seconds=5)
        raise
    server.warm_up_s = round(time.perf_counter() - started, 2)
    return server


def warm_up(server: Server, timeout_s: float) -> None:
    """One short completion before the load test: the engine's first request pays one-off set-up (measured 41 s
    for the first two requests on the tiny model on a loaded 2-core host), which a short test would report as
    its latency."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    try:
        model = httpx.get(f"{server.url}/v1/models", headers=headers, timeout=30).json()["data"][0]["id"]
        body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
        httpx.post(
            f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=timeout_s
        ).raise_for_status()
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise ServeFailed(f"orpo-serve is ready but a warm-up request failed ({exc}); log: {server.log}") from None

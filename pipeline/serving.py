"""The serve stage: orpo-serve in its own process on a free loopback port, up until the load test is done.

The server never shares a process with training or the orchestrator; it gets its own session so stopping it
(SIGTERM: drain, then exit 0) reaches only what this stage started.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)
POLL_S = 0.5


class ServeFailed(RuntimeError):
    """The server did not come up; the message names its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_seconds + 60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what this stage started
                self.proc.wait(timeout=30)
                killed = True
        self.stop_record = {
            "stop_s": round(time.perf_counter() - started, 2),
            "exit_code": self.proc.returncode,
            "killed": killed,
        }
        return self.stop_record


def start_server(model_dir: Path, args: list[str], log: Path, timeout_s: float, env: dict[str, str]) -> Server:
    """Start ``python -m orpo_deploy.serve --model MODEL_DIR ARGS`` on a free port with a fresh API key; wait for
    /ready."""
    port, key = free_port(), secrets.token_urlsafe(32)
    argv = [sys.executable, "-m", "orpo_deploy.serve", "--model", str(model_dir), "--port", str(port), *args]
    env = {**os.environ, **env, "ORPO_SERVE_API_KEYS": key}  # the key stays out of argv (ps shows it to all users)
    with open(log, "ab") as out:
        out.write(f"\n===== $ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", key, log)
    started = time.perf_counter()
    try:
        wait_until_ready(server, timeout_s)
    except BaseException:
        server.stop(grace_seconds=5)
        raise
    server.ready_s = round(time.perf_counter() - started, 2)
    try:
        warm_up(server, timeout_s)
    except BaseException:
        server.stop(grace_seconds=5)
        raise
    server.warm_up_s = round(time.perf_counter() - started - server.ready_s, 2)
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


def wait_until_ready(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServeFailed(f"orpo-serve exited ({server.proc.returncode}) before /ready; log: {server.log}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_S)  # poll interval; the loop ends on /ready, on the process exiting, or at the deadline
    raise ServeFailed(f"orpo-serve not ready after {timeout_s:.0f} s; log: {server.log}")

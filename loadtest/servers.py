"""Start and stop an OpenAI-compatible server in a child process: for benches, tests and the pipeline.

A load test needs a server to aim at; this module starts one (orpo-serve, vLLM's own, anything with a readiness
URL), waits until it answers, and stops it the way an orchestrator would (SIGTERM, then SIGKILL of its own
process group after a grace period). It imports no serving code: the server is just a command line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from orpo_deploy.core.errors import RunFailed

# vLLM CPU settings measured to work on these machines (shared/NOTES.md); the caller's environment wins.
CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
}


class ServerError(RunFailed):
    """The server exited or did not become ready; the message names its log."""


@dataclass
class RunningServer:
    proc: subprocess.Popen
    url: str
    log: Path
    startup_s: float

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def orpo_serve_command(model: str | Path, port: int, *args: str) -> list[str]:
    """The command line of orpo-serve on ``model`` at ``port`` (loopback), run by this interpreter."""
    return [sys.executable, "-m", "orpo_deploy.serve", "--model", str(model), "--port", str(port), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    argv: list[str],
    url: str,
    log: Path,
    *,
    ready_path: str = "/ready",
    timeout_s: float = 240.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> RunningServer:
    """Run ``argv`` (its output to ``log``) and poll ``url + ready_path`` until 200; raise ServerError otherwise.

    The child gets its own session so that stopping it can kill its whole process group (vLLM spawns an engine
    process) without touching anything else.
    """
    environ = {**CPU_ENV, **os.environ, **(env or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n===== $ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = started + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                name = f"{Path(argv[0]).name} {' '.join(argv[1:3])}"
                raise ServerError(f"{name} exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(url + ready_path, timeout=5).status_code == 200:
                    return RunningServer(proc, url, log, time.monotonic() - started)
            except httpx.HTTPError:
                pass
            time.sleep(0.5)  # poll interval: the loop ends on readiness, exit or the deadline
    except BaseException:  # Ctrl-C / SIGTERM while it starts: the caller has no handle to stop it with
        stop_server(proc, grace_s=10)
        raise
    stop_server(proc)
    raise ServerError(f"server not ready after {timeout_s:.0f} s; see {log}")


def stop_server(proc: subprocess.Popen, grace_s: float = 60.0) -> int | None:
    """SIGTERM (the server drains), then SIGKILL its process group after ``grace_s``; returns the exit code."""
    return stop_process(proc, grace_s)[0]


def stop_process(proc: subprocess.Popen, grace_s: float = 60.0) -> tuple[int | None, bool]:
    """``stop_server``, also saying whether it had to be killed."""
    killed = False
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what start_server started
            proc.wait(timeout=10)
            killed = True
    return proc.returncode, killed

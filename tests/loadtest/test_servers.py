"""The one server launcher: a server interrupted while it starts is stopped, not left running."""

import subprocess
import sys
import time
import types

import pytest

from orpo_deploy.loadtest import servers


def test_an_interrupt_while_the_server_starts_stops_it(tmp_path, monkeypatch):
    def interrupted(_seconds):  # Ctrl-C / SIGTERM (the pipeline turns it into KeyboardInterrupt) while polling
        raise KeyboardInterrupt

    started = []

    def popen(*args, **kwargs):
        started.append(subprocess.Popen(*args, **kwargs))
        return started[-1]

    # only the launcher's own view of time and subprocess changes: other threads keep the real modules
    monkeypatch.setattr(servers, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=interrupted))
    fake = types.SimpleNamespace(Popen=popen, STDOUT=subprocess.STDOUT, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(servers, "subprocess", fake)
    never_ready = [sys.executable, "-c", "import time; time.sleep(600)"]
    with pytest.raises(KeyboardInterrupt):
        servers.start_server(never_ready, "http://127.0.0.1:1", tmp_path / "server.log", timeout_s=60)
    assert len(started) == 1 and started[0].poll() is not None  # stopped, not orphaned

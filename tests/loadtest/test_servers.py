"""The one server launcher: a server interrupted while it starts is stopped, not left running."""

import sys

import pytest

from orpo_deploy.loadtest import servers


def test_an_interrupt_while_the_server_starts_stops_it(tmp_path, monkeypatch):
    def interrupted(_seconds):  # Ctrl-C / SIGTERM (the pipeline turns it into KeyboardInterrupt) while polling
        raise KeyboardInterrupt

    started = []
    popen = servers.subprocess.Popen
    monkeypatch.setattr(servers.subprocess, "Popen", lambda *a, **k: started.append(popen(*a, **k)) or started[-1])
    monkeypatch.setattr(servers.time, "sleep", interrupted)
    never_ready = [sys.executable, "-c", "import time; time.sleep(600)"]
    with pytest.raises(KeyboardInterrupt):
        servers.start_server(never_ready, "http://127.0.0.1:1", tmp_path / "server.log", timeout_s=60)
    assert started and started[0].poll() is not None  # stopped, not orphaned

"""The header deadline (serve/http.py) on a real uvicorn server: a connection that sends nothing, or half its
headers, is closed after the deadline; a complete request is answered, and keep-alive still works."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from orpo_deploy.loadtest.servers import free_port

REPO = Path(__file__).resolve().parents[2]
APP = """
import sys, uvicorn
from orpo_deploy.serve.http import protocol_with_header_timeout
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http=protocol_with_header_timeout(1.0),
            timeout_keep_alive=30, log_level="warning")
"""


def closed_after(sock: socket.socket, limit: float = 8.0) -> float | None:
    sock.settimeout(limit)
    started = time.monotonic()
    try:
        data = sock.recv(100)
    except TimeoutError:
        return None
    return time.monotonic() - started if data == b"" else None


def test_slow_headers_are_cut_and_whole_requests_served():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", APP, str(port)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        idle = socket.create_connection(("127.0.0.1", port))
        partial = socket.create_connection(("127.0.0.1", port))
        partial.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert (closed_after(idle) or 99) < 3 and (closed_after(partial) or 99) < 3
        with socket.create_connection(("127.0.0.1", port), timeout=5) as ok:
            for _ in range(2):  # keep-alive: a second request on the same connection
                ok.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                response = b""
                while not response.endswith(b"\r\n\r\nok"):  # headers and the 2-byte body may come apart
                    chunk = ok.recv(200)
                    assert chunk, response
                    response += chunk
                assert response.startswith(b"HTTP/1.1 200")
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(10)

"""orpo-serve on the real vLLM engine against hostile and careless clients (one server; the last test kills its
engine): stalled bodies with and without a key, a stream nobody reads, over-budget and malformed requests, OpenAI
conformance (stop as a string, lone surrogates, tools), and engine death."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from orpo_deploy.core.models import TINY_NAME  # noqa: E402
from orpo_deploy.loadtest.servers import RunningServer  # noqa: E402
from tests.serve.tiny_server import run_tiny_server  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "hostile-key-" + "0" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "Say hi."}]
BODY_TIMEOUT_S, WRITE_TIMEOUT_S = 2, 2


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> RunningServer:
    argv = ["--kv-cache-gib", "1", "--enforce-eager", "--max-tokens-cap", "400", "--max-concurrency", "4"]
    argv += ["--body-timeout-seconds", str(BODY_TIMEOUT_S), "--stream-write-timeout-seconds", str(WRITE_TIMEOUT_S)]
    argv += ["--allow-benchmark-params", "--max-request-tokens", "4096"]
    yield from run_tiny_server(tmp_path_factory.mktemp("hostile"), argv, env={"ORPO_SERVE_API_KEYS": KEY})


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def host_port(server: RunningServer) -> tuple[str, int]:
    url = httpx.URL(server.url)
    return url.host, url.port


def in_flight(server: RunningServer) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("orpo_serve_requests_in_flight ")
    )


def test_openai_conformance_on_the_real_engine(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    out = client.chat.completions.create(model=TINY_NAME, messages=HI, max_tokens=8, stop="<|im_end|>",
                                         extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1})  # fmt: skip
    assert out.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(
            model=TINY_NAME, messages=HI, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]
        )
    surrogate = b'{"model": "tiny-smollm2", "messages": [{"role": "user", "content": "hi \\ud800"}]}'
    r = httpx.post(
        f"{server.url}/v1/chat/completions", content=surrogate, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"], r.text
    over = {"model": TINY_NAME, "messages": HI, "n": 16, "temperature": 1, "max_tokens": 400, "logprobs": True,
            "top_logprobs": 20}  # fmt: skip
    r = httpx.post(f"{server.url}/v1/chat/completions", json=over, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text


def test_stalled_unauthenticated_bodies_are_refused_from_their_headers(server, record_property):
    """40 clients without a key announce 2 MiB bodies, send 1 MiB and stall: each gets its 401 at once and the
    server's memory stays flat (it never reads their bodies)."""
    host, port = host_port(server)
    before = rss_mib(server.proc.pid)
    socks, started = [], time.monotonic()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2097152\r\n\r\n")  # fmt: skip
    for _ in range(40):
        s = socket.create_connection((host, port), timeout=10)
        s.setblocking(False)
        try:
            s.send(head + b"x" * (1 << 20))  # as much as the socket takes; then nothing more
        except BlockingIOError:
            pass
        socks.append(s)
    statuses = []
    for s in socks:
        s.settimeout(10)
        try:
            statuses.append(s.recv(4096).split(b"\r\n", 1)[0])
        except OSError as exc:
            statuses.append(repr(exc).encode())
    elapsed = time.monotonic() - started
    growth = rss_mib(server.proc.pid) - before
    for s in socks:
        s.close()
    record_property("rss_growth_mib_40_stalled_2mib_bodies", round(growth, 1))
    print(f"40 stalled unauthenticated 2 MiB bodies: 401 for all in {elapsed:.2f} s, RSS growth {growth:.1f} MiB")
    assert all(b" 401 " in line for line in statuses), statuses[:3]
    assert growth < 20, f"RSS grew by {growth:.1f} MiB"
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_stalled_authenticated_body_gets_408(server):
    host, port = host_port(server)
    with socket.create_connection((host, port), timeout=BODY_TIMEOUT_S + 10) as s:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        s.sendall(head + b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 5000\r\n\r\n{")
        started = time.monotonic()
        status = s.recv(4096).split(b"\r\n", 1)[0]
    assert b" 408 " in status and time.monotonic() - started < BODY_TIMEOUT_S + 5, status


def test_a_stream_nobody_reads_loses_its_slot_after_the_deadline(server, record_property):
    """A client opens a long stream (logprobs make each event ~2 KB) with a tiny receive buffer and reads nothing."""
    host, port = host_port(server)
    request = {"model": TINY_NAME, "messages": HI, "stream": True, "n": 4, "temperature": 1, "max_tokens": 390}
    body = json.dumps({**request, "ignore_eos": True, "logprobs": True, "top_logprobs": 19}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
    s.sendall(head.encode() + KEY.encode() + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        deadline = time.monotonic() + 20
        while in_flight(server) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        while in_flight(server) > 0 and time.monotonic() - started < 60:
            time.sleep(0.2)
        held = in_flight(server)
        freed_after = time.monotonic() - started
    finally:
        s.close()
    record_property("slots_held_by_a_non_reading_client_after_the_deadline", held)
    print(f"non-reading stream client: slot freed after {freed_after:.1f} s (write deadline {WRITE_TIMEOUT_S} s)")
    assert held == 0


def test_seeded_requests_whose_prefills_would_be_chunked_all_succeed(tmp_path):
    """vLLM 0.32 on CPU killed its engine when a request with a `seed` had its prefill split across steps ("CPU
    Generator does not use offset"): 32 concurrent seeded prompts of ~250 tokens overflow one step's token budget
    (4096) and did it. orpo-serve turns chunked prefill off on CPU; every request must now succeed."""
    import asyncio

    async def burst(url: str) -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def one(i: int) -> int:
                body = {"model": TINY_NAME, "messages": [{"role": "user", "content": f"word{i} " * 120}],
                        "max_tokens": 8, "seed": i, "temperature": 1.0}  # fmt: skip
                r = await client.post(f"{url}/v1/chat/completions", json=body, headers=AUTH)
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(32)))

    argv = ["--kv-cache-gib", "1", "--enforce-eager", "--max-concurrency", "32"]
    for srv in run_tiny_server(tmp_path, argv, env={"ORPO_SERVE_API_KEYS": KEY}):
        codes = asyncio.run(burst(srv.url))
        assert codes == [200] * 32, codes
        assert srv.proc.poll() is None
    assert "does not use offset" not in (tmp_path / "server.log").read_text(errors="replace")


def test_engine_death_ready_503_envelopes_and_exit_nonzero(server):
    """Runs last: kills vLLM's engine process under the server."""
    children = [int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()]
    assert children, "no engine process found under the server"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    ready = None
    while time.monotonic() < deadline and server.proc.poll() is None:
        try:
            ready = httpx.get(f"{server.url}/ready", timeout=2)
            if ready.status_code == 503:
                break
        except httpx.HTTPError:
            break
        time.sleep(0.1)
    if ready is not None and ready.status_code == 503:
        r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": TINY_NAME, "messages": HI}, headers=AUTH)
        assert r.status_code == 503 and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    assert server.proc.wait(30) != 0

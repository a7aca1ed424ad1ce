"""orpo-serve under hostile clients, three figures on the real engine (tiny model, CPU):

1. RSS growth of the server process while 40 unauthenticated clients announce 2 MiB bodies, send 1 MiB and stall;
2. /health latency (p50 / p99 / max over polls every 50 ms) idle, then while 4 maximal requests run (prompt and
   max_tokens filling the context, ignore_eos);
3. generation slots held by non-reading streaming clients once the write deadline has passed.

    python bench/serve_hostile.py --output bench/results/serve_hostile

Writes ``serve_hostile.json`` and ``.md`` (with the git commit and the command).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orpo_deploy.core.models import TINY_NAME, resolve_model  # noqa: E402
from orpo_deploy.loadtest.servers import free_port, orpo_serve_command, start_server, stop_server  # noqa: E402

KEY = "bench-key-" + "0" * 30
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_LEN, CAP, WRITE_TIMEOUT = 512, 256, 3


def rss_mib(pid: int) -> float:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("orpo_serve_requests_in_flight "))


def poll_health(url: str, seconds: float) -> dict:
    lat = []
    end = time.monotonic() + seconds
    with httpx.Client(timeout=30) as c:
        while time.monotonic() < end:
            t = time.perf_counter()
            c.get(f"{url}/health")
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)
    lat.sort()
    return {"polls": len(lat), "p50_ms": round(statistics.median(lat), 1),
            "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 1), "max_ms": round(lat[-1], 1)}  # fmt: skip


def stalled_bodies(url: str, pid: int, n: int = 40) -> dict:
    host, port = httpx.URL(url).host, httpx.URL(url).port
    before = rss_mib(pid)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2097152\r\n\r\n")  # fmt: skip
    socks, statuses = [], []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        s.setblocking(False)
        try:
            s.send(head + b"x" * (1 << 20))
        except BlockingIOError:
            pass
        socks.append(s)
    time.sleep(1.0)
    for s in socks:
        s.settimeout(10)
        try:
            statuses.append(s.recv(4096).split(b"\r\n", 1)[0].decode())
        except OSError as exc:
            statuses.append(repr(exc))
    growth = rss_mib(pid) - before
    for s in socks:
        s.close()
    return {"clients": n, "rss_growth_mib": round(growth, 1), "answered_401": sum(" 401 " in x for x in statuses)}


def maximal_requests(url: str, n: int = 4) -> list[threading.Thread]:
    prompt = "word " * (MAX_LEN - CAP - 20)  # the prompt and max_tokens fill the context
    body = {"model": TINY_NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": CAP,
            "ignore_eos": True}  # fmt: skip

    def one() -> None:
        httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=300)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def non_reading_streams(url: str, n: int = 4) -> dict:
    host, port = httpx.URL(url).host, httpx.URL(url).port
    body = json.dumps({"model": TINY_NAME, "messages": [{"role": "user", "content": "Say hi."}], "stream": True,
                       "n": 4, "temperature": 1, "max_tokens": CAP, "ignore_eos": True, "logprobs": True,
                       "top_logprobs": 19}).encode()  # fmt: skip
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, port))
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"  # noqa: E501
        s.sendall(head.encode() + body)
        socks.append(s)
    started = time.monotonic()
    peak = 0.0
    while time.monotonic() - started < 120:
        held = in_flight(url)
        peak = max(peak, held)
        if peak and held == 0:
            break
        time.sleep(0.2)
    freed_s = time.monotonic() - started
    held_after = in_flight(url)
    for s in socks:
        s.close()
    return {"clients": n, "peak_in_flight": peak, "slots_held_after_deadline": held_after,
            "all_freed_after_s": round(freed_s, 1), "write_deadline_s": WRITE_TIMEOUT}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, default=Path("bench/results/serve_hostile"))
    args = p.parse_args()
    resolve_model(TINY_NAME)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = orpo_serve_command(TINY_NAME, port, "--max-model-len", str(MAX_LEN))
    argv += ["--kv-cache-gib", "1", "--enforce-eager", "--max-tokens-cap", str(CAP), "--allow-benchmark-params"]
    argv += ["--stream-write-timeout-seconds", str(WRITE_TIMEOUT), "--max-concurrency", "16"]
    args.output.mkdir(parents=True, exist_ok=True)
    srv = start_server(argv, url, args.output / "server.log", timeout_s=600, cwd=REPO,
                       env={**os.environ, "ORPO_SERVE_API_KEYS": KEY})  # fmt: skip
    try:
        result = {"stalled_bodies": stalled_bodies(url, srv.proc.pid), "health_idle": poll_health(url, 5)}
        threads = maximal_requests(url)
        deadline = time.monotonic() + 120
        while in_flight(url) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        result["health_under_4_maximal_requests"] = poll_health(url, 10)
        for t in threads:
            t.join()
        result["non_reading_streams"] = non_reading_streams(url)
    finally:
        stop_server(srv.proc, grace_s=30)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    result |= {"commit": commit.strip(), "command": " ".join(sys.argv), "cpus": os.cpu_count()}
    (args.output / "serve_hostile.json").write_text(json.dumps(result, indent=2) + "\n")
    s, hi, hm, nr = (result["stalled_bodies"], result["health_idle"], result["health_under_4_maximal_requests"],
                     result["non_reading_streams"])  # fmt: skip
    md = f"""# orpo-serve under hostile clients (tiny model, vLLM CPU, {result["cpus"]} cores)

Command: `{result["command"]}` at commit `{result["commit"]}`.

| figure | value |
|---|---|
| RSS growth, {s["clients"]} unauthenticated clients stalling 2 MiB bodies | {s["rss_growth_mib"]} MiB ({s["answered_401"]} answered 401) |
| /health idle: p50 / p99 / max | {hi["p50_ms"]} / {hi["p99_ms"]} / {hi["max_ms"]} ms ({hi["polls"]} polls) |
| /health while 4 maximal requests run: p50 / p99 / max | {hm["p50_ms"]} / {hm["p99_ms"]} / {hm["max_ms"]} ms ({hm["polls"]} polls) |
| slots held by {nr["clients"]} non-reading stream clients after the {nr["write_deadline_s"]} s deadline | {nr["slots_held_after_deadline"]} (peak {nr["peak_in_flight"]}, all freed {nr["all_freed_after_s"]} s after they were sent) |
"""  # noqa: E501
    (args.output / "serve_hostile.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

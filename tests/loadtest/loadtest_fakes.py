"""Hand-made Locust CSVs and a fake OpenAI-style server (stdlib only) for fast load-test tests."""

from __future__ import annotations

import csv
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PERCENTILES = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
STATS_COLUMNS = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
    "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s", *PERCENTILES,
]  # fmt: skip
HISTORY_COLUMNS = [
    "Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *PERCENTILES, "Total Request Count",
    "Total Failure Count", "Total Median Response Time", "Total Average Response Time", "Total Min Response Time",
    "Total Max Response Time", "Total Average Content Size",
]  # fmt: skip


def stats_row(type_: str, name: str, count: int, failures: int, p50, p95, avg_size: float, rps: float, avg=None):
    pct = {p: "N/A" for p in PERCENTILES} if count == 0 else {p: p95 for p in PERCENTILES} | {"50%": p50}
    row = {
        "Type": type_, "Name": name, "Request Count": count, "Failure Count": failures,
        "Median Response Time": p50, "Average Response Time": avg if avg is not None else p50,
        "Min Response Time": 0, "Max Response Time": p95, "Average Content Size": avg_size, "Requests/s": rps,
        "Failures/s": 0.0, **pct,
    }  # fmt: skip
    return row


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_run(directory: Path, *, ttft_p95=200, itl_p95=40, failures=0, stats_name="final_stats") -> Path:
    """A 10 s run: 30 streamed + 10 plain requests, 64 tokens each, plus TTFT/ITL events and a short history."""
    directory.mkdir(parents=True, exist_ok=True)
    # Requests/s = count / 10 s for every row, as Locust divides all rows by the same duration
    rows = [
        stats_row("POST", "chat", 10, 0, 900, 1200, 64.0, 1.0),
        stats_row("ITL", "chat stream", 1890, 0, 12, itl_p95, 0.0, 189.0),
        stats_row("POST", "chat stream", 30, failures, 1000, 1500, 64.0 * (30 - failures) / 30, 3.0),
        stats_row("TTFT", "chat stream", 30 - failures, 0, 100, ttft_p95, 0.0, (30 - failures) / 10),
        stats_row("", "Aggregated", 1960, failures, 12, 1500, 2.6, 196.0),
    ]
    write_csv(directory / f"locust_{stats_name}.csv", STATS_COLUMNS, rows)
    history = []
    for second in range(11):
        for type_, name, total, size in (("POST", "chat", second, 64.0), ("POST", "chat stream", 3 * second, 64.0)):
            pct = {p: 1500 for p in PERCENTILES} | {"50%": 1000}
            history.append(
                {
                    "Timestamp": 1_700_000_000 + second,
                    "User Count": 4,
                    "Type": type_,
                    "Name": name,
                    "Requests/s": total / max(second, 1),
                    "Failures/s": 0,
                    **pct,
                    "Total Request Count": total,
                    "Total Failure Count": 0,
                    "Total Median Response Time": 1000,
                    "Total Average Response Time": 1000,
                    "Total Min Response Time": 0,
                    "Total Max Response Time": 1500,
                    "Total Average Content Size": size,
                }  # fmt: skip
            )
    write_csv(directory / "locust_stats_history.csv", HISTORY_COLUMNS, history)
    return directory


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # Locust closes keep-alive connections when it stops: resets are expected, not test failures


class FakeOpenAI:
    """A threaded chat-completions server that streams ``tokens`` words; counts requests like orpo-serve's /metrics.

    ``api_key`` set: other keys get 401. ``break_streams``: streams end without usage (the locustfile must fail them).
    """

    def __init__(
        self, tokens: int = 8, delay_s: float = 0.002, api_key: str = "", break_streams: bool = False,
        slow_every: int = 0, slow_first_token_s: float = 0.0, serial: bool = False, refuse_first: int = 0,
    ):  # fmt: skip
        self.refuse_first = refuse_first  # answer the first N POSTs with 429 + Retry-After: 0
        # serial: one request at a time (an engine with one slot), so an offered rate above 1 / its service time
        # builds a queue, as a saturated server does
        self._serial = threading.Lock() if serial else None
        self.tokens, self.delay_s, self.api_key, self.break_streams = tokens, delay_s, api_key, break_streams
        # every slow_every-th stream (1st, k+1-th, ...) waits slow_first_token_s before its first token
        self.slow_every, self.slow_first_token_s, self.streams = slow_every, slow_first_token_s, 0
        self.requests = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
                elif self.path == "/metrics":
                    text = (
                        f'orpo_serve_requests_total{{route="/v1/chat/completions",status="200"}} {fake.requests}\n'
                        f"orpo_serve_completion_tokens_total {fake.completion_tokens}\n"
                    )
                    self._send(200, text.encode(), "text/plain")
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    with fake._lock:
                        refuse = fake.refuse_first > 0
                        fake.refuse_first -= refuse
                    if refuse:
                        self._json(429, {"error": {"message": "busy", "type": "server_error", "param": None,
                                                   "code": "server_overloaded"}}, {"Retry-After": "0"})  # fmt: skip
                    elif fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                        self._json(401, {"error": {"message": "bad key", "type": "auth", "param": None, "code": None}})
                    elif body.get("stream") and fake._serial is not None:
                        with fake._serial:
                            self._stream(body)
                    elif body.get("stream"):
                        self._stream(body)
                    else:
                        self._complete(body)
                finally:
                    with fake._lock:
                        fake.requests += 1

            def _count(self, n: int) -> int:
                with fake._lock:
                    fake.completion_tokens += n
                return n

            def _complete(self, body: dict) -> None:
                n = self._count(min(fake.tokens, body.get("max_tokens") or fake.tokens))
                time.sleep(fake.delay_s * n)
                message = {"role": "assistant", "content": " word" * n}
                self._json(
                    200,
                    {
                        "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n},
                    },
                )

            def _stream(self, body: dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                n = min(fake.tokens, body.get("max_tokens") or fake.tokens)
                with fake._lock:
                    slow = fake.slow_every and fake.streams % fake.slow_every == 0
                    fake.streams += 1
                if slow:
                    time.sleep(fake.slow_first_token_s)
                self._event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                for i in range(n):
                    time.sleep(fake.delay_s)
                    finish = "length" if i == n - 1 else None
                    self._event({"choices": [{"index": 0, "delta": {"content": " word"}, "finish_reason": finish}]})
                    self._count(1)
                if not fake.break_streams:
                    usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
                    self._event({"choices": [], "usage": usage})
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _event(self, data: dict) -> None:
                self._chunk(f"data: {json.dumps(data)}\n\n".encode())

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
                self._send(status, json.dumps(data).encode(), "application/json", headers)

            def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

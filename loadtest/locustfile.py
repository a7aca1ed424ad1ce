"""Chat-completions load against any OpenAI-compatible server, with prompts from our held-out split.

    python -m locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 -u 8 -r 8 -t 60s

(``orpo-loadtest`` runs it like this and adds CSVs, a summary, a plot and SLO gates.) Besides one entry per
HTTP request ("chat stream", "chat"), it reports custom request events for successful streams:

- ``TTFT``: from sending the request to the first chunk that carries content, in ms;
- ``ITL``: each gap between successive content chunks, in ms (vLLM sends one token per chunk, so this is the
  inter-token latency as the client sees it; chunks that arrive in one read show up as ~0 ms gaps).

Output tokens (``usage.completion_tokens``; streams ask for it with ``stream_options.include_usage``) are the
``response_length`` of each request, so Locust's "Average Content Size" is tokens per request.
Options: ``--model``, ``--api-key``, ``--max-tokens``, ``--ignore-eos``, ``--prompts`` (or LOADTEST_* env vars);
the load shape comes from ``LOADTEST_SHAPE`` (hold, ramp, spike, soak; see loadtest/profiles.py).

Two user classes: ``ChatUser`` is a closed loop (each user sends its next request when the last one ended);
``OpenLoopUser`` (one of it) sends streaming requests at the times ``loadtest/arrivals.py`` draws for
``--request-rate`` / ``--burstiness``, each in its own greenlet, whether or not earlier ones have finished.
Every request is also kept as a record (send time, TTFT, end-to-end, tokens, ok) in ``PREFIX_requests.jsonl``,
from which ``loadtest/goodput.py`` counts the requests that met per-request SLOs.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time
import urllib.request
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, events, task
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from orpo_deploy.loadtest import workload
from orpo_deploy.loadtest.arrivals import send_times
from orpo_deploy.loadtest.shapes import SHAPES
from orpo_deploy.loadtest.sse import read_chat_stream

CHAT_PATH = "/v1/chat/completions"
DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "splits" / "test_conversational.jsonl"

if os.environ.get("LOADTEST_SHAPE"):
    LoadShape = SHAPES[os.environ["LOADTEST_SHAPE"]]  # Locust runs the shape class it finds in this module

_prompts: itertools.cycle | None = None
_model = ""
_records: list[dict] = []  # one per request, written at shutdown


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--model", default="", env_var="LOADTEST_MODEL", help="model id (default: first of /v1/models)")
    parser.add_argument("--api-key", default="", env_var="LOADTEST_API_KEY", is_secret=True, help="Bearer key")
    parser.add_argument("--max-tokens", type=int, default=64, env_var="LOADTEST_MAX_TOKENS", help="max_tokens")
    parser.add_argument("--ignore-eos", action="store_true", env_var="LOADTEST_IGNORE_EOS", help="vLLM ignore_eos")
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS), env_var="LOADTEST_PROMPTS", help="JSONL, `prompt`")
    parser.add_argument("--request-rate", type=float, default=0.0, env_var="LOADTEST_REQUEST_RATE", help="open loop")
    parser.add_argument("--burstiness", type=float, default=1.0, env_var="LOADTEST_BURSTINESS", help="gamma shape")
    parser.add_argument("--max-requests", type=int, default=0, env_var="LOADTEST_MAX_REQUESTS", help="0 = no cap")
    parser.add_argument("--arrival-seed", type=int, default=0, env_var="LOADTEST_SEED", help="seed of the arrivals")


@events.test_start.add_listener
def _load_prompts_and_model(environment, **_kwargs) -> None:
    global _prompts, _model
    options = environment.parsed_options
    _prompts = itertools.cycle(
        workload.load(options.prompts)
    )  # same order every run, so two servers see the same prompts
    _model = options.model or _first_model(environment.host, options.api_key)


@events.quitting.add_listener
def _write_final_stats(environment, **_kwargs) -> None:
    """Write ``PREFIX_final_stats.csv`` / ``PREFIX_final_failures.csv`` once every user has stopped.

    Locust rewrites ``PREFIX_stats.csv`` once a second and does not write it again at shutdown, so requests that
    finish in the last second (typically every in-flight one, let finish by --stop-timeout) are missing there.
    Same columns, written by Locust's own CSV code.
    """
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    with open(f"{prefix}_requests.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in _records)
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    with open(f"{prefix}_final_stats.csv", "w", newline="", encoding="utf-8") as f:
        writer.requests_csv(csv.writer(f))
    with open(f"{prefix}_final_failures.csv", "w", newline="", encoding="utf-8") as f:
        writer.failures_csv(csv.writer(f))


def _first_model(host: str, api_key: str) -> str:
    request = urllib.request.Request(f"{host.rstrip('/')}/v1/models", headers=_auth(api_key))
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"][0]["id"]


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class _ChatClient(FastHttpUser):
    """The two requests (streamed, not) and their measurements; the subclasses decide when to send them."""

    abstract = True
    wait_time = constant(0)

    def _body(self, stream: bool) -> dict:
        options = self.environment.parsed_options
        request = next(_prompts)
        max_tokens = min(request["max_tokens"] or options.max_tokens, options.max_tokens)  # the row's, within the cap
        body = {"model": _model, "messages": request["messages"], "max_tokens": max_tokens, "temperature": 0.0}
        if options.ignore_eos:
            body["ignore_eos"] = True
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    def _headers(self) -> dict[str, str]:
        return {**_auth(self.environment.parsed_options.api_key), "Accept-Encoding": "identity"}

    def _report(self, request_type: str, ms: float) -> None:
        """A custom request event: a row of Type ``request_type`` under the name "chat stream" in Locust's stats."""
        self.environment.events.request.fire(
            request_type=request_type,
            name="chat stream",
            response_time=ms,
            response_length=0,
            exception=None,
            context={},
        )

    def chat_stream(self) -> None:
        record = {"start": time.time(), "stream": True, "ok": False, "ttft_ms": None, "e2e_ms": None}
        _records.append(record)
        start = time.perf_counter()
        body, headers = self._body(True), self._headers()
        with self.client.post(
            CHAT_PATH, json=body, headers=headers, name="chat stream", stream=True, catch_response=True
        ) as resp:  # stream=True: the body is left for read_chat_stream
            record["status"] = resp.status_code
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {_error_text(resp)}")
                return
            try:
                # geventhttpclient's readline returns each line as it arrives; Locust's iter_content would wait
                # for 1 KiB, delaying TTFT and merging tokens
                stream = read_chat_stream(lambda: resp._response.readline(b"\n"))
            except Exception as exc:  # a broken stream must still count as one (failed) request
                resp.failure(f"bad stream: {exc!r}")
                return
            resp.request_meta["response_time"] = (time.perf_counter() - start) * 1000
            resp.request_meta["response_length"] = stream.completion_tokens
        ttft_ms = (stream.chunk_times[0] - start) * 1000
        record.update(ok=True, ttft_ms=round(ttft_ms, 3), e2e_ms=round(resp.request_meta["response_time"], 3),
                      output_tokens=stream.completion_tokens)  # fmt: skip
        self._report("TTFT", ttft_ms)
        for earlier, later in itertools.pairwise(stream.chunk_times):
            self._report("ITL", (later - earlier) * 1000)

    def chat(self) -> None:
        record = {"start": time.time(), "stream": False, "ok": False, "ttft_ms": None, "e2e_ms": None}
        _records.append(record)
        with self.client.post(
            CHAT_PATH, json=self._body(False), headers=self._headers(), name="chat", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {_error_text(resp)}")
                return
            try:
                data = resp.json()
                content = data["choices"][0]["message"]["content"]
                tokens = int(data["usage"]["completion_tokens"])
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                resp.failure(f"bad response body: {exc!r}")
                return
            if tokens < 1 or not isinstance(content, str):
                resp.failure(f"empty completion (completion_tokens={tokens})")
                return
            resp.request_meta["response_length"] = tokens
            record.update(ok=True, e2e_ms=round(resp.request_meta["response_time"], 3), output_tokens=tokens)


class ChatUser(_ChatClient):
    """A closed-loop client: sends the next request as soon as the previous one finishes (3 streamed : 1 not)."""

    @task(3)
    def stream_task(self) -> None:
        self.chat_stream()

    @task(1)
    def chat_task(self) -> None:
        self.chat()


class OpenLoopUser(_ChatClient):
    """The open loop (run exactly one): streamed requests at the drawn send times, each in its own greenlet, so a
    slow server meets the same arrivals as a fast one and its queue shows. Sends --max-requests (when set), else
    what falls within --run-time, then lets those finish (--stop-timeout) and ends: a request is never cut because
    the sending window closed, so it never counts against goodput for that."""

    concurrency = 1024  # requests the HTTP session may have open at once

    @task
    def dispatch(self) -> None:
        options = self.environment.parsed_options
        times = send_times(options.request_rate, options.burstiness, options.arrival_seed)
        if options.max_requests:
            times = itertools.islice(times, options.max_requests)
        elif options.run_time:  # seconds (Locust parses -t): stop sending when the window closes
            times = itertools.takewhile(lambda at: at < options.run_time, times)
        started, running = time.monotonic(), []
        for at in times:
            gevent.sleep(max(0.0, started + at - time.monotonic()))
            running = [g for g in running if not g.dead] if len(running) > 256 else running
            running.append(gevent.spawn(self.chat_stream))
        gevent.joinall(running)
        self.environment.runner.quit()


def _error_text(resp) -> str:
    error = getattr(resp, "error", None)
    if error is not None and not resp.status_code:
        return repr(error)
    try:
        return (resp.text or "")[:200]
    except Exception as exc:  # a body we cannot read is still a failed request
        return repr(exc)

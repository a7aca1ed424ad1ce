"""orpo-serve with the real vLLM engine on the tiny model: one server process for the whole module.

The server is ``python -m orpo_deploy.serve`` on a free port; the fixture waits for /health, then /ready, by polling
with a deadline, and always stops it. The SIGTERM test runs last and stops the shared server itself.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from orpo_deploy.core.models import TINY_NAME, resolve_model  # noqa: E402
from orpo_deploy.loadtest.servers import RunningServer  # noqa: E402
from tests.serve.tiny_server import run_tiny_server  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KEY = "integration-key-" + "0" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_TOKENS_CAP = 400
START_DEADLINE_S = 240


def wait_for(predicate, deadline_s: float, what: str, server: RunningServer | None = None, interval: float = 0.2):
    """Poll ``predicate`` until it is truthy; fail with the server log if ``deadline_s`` passes first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server is not None and server.proc.poll() is not None:
            pytest.fail(f"server exited ({server.proc.returncode}) while waiting for {what}:\n{server.log_tail()}")
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    pytest.fail(f"timed out after {deadline_s} s waiting for {what}" + (f":\n{server.log_tail()}" if server else ""))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> RunningServer:
    argv = ["--allow-benchmark-params"]  # the tests use ignore_eos to force long answers
    argv += ["--kv-cache-gib", "1", "--enforce-eager", "--api-key", KEY, "--max-tokens-cap", str(MAX_TOKENS_CAP)]
    argv += ["--max-concurrency", "4", "--max-queue", "4", "--grace-seconds", "60"]
    yield from run_tiny_server(tmp_path_factory.mktemp("serve"), argv, timeout_s=START_DEADLINE_S)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def metric_in(text: str, name: str) -> float:
    """The sum of a metric's samples in a /metrics page."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def metric(server: RunningServer, name: str) -> float:
    return metric_in(httpx.get(f"{server.url}/metrics").text, name)


HI = [{"role": "user", "content": "Say hi."}]


def test_models_lists_the_model_with_provenance(client, server):
    (model,) = client.models.list().data
    assert model.id == TINY_NAME
    raw = httpx.get(f"{server.url}/v1/models", headers=AUTH).json()["data"][0]
    assert raw["max_model_len"] == 512 and raw["provenance"]["model"] == TINY_NAME
    assert httpx.get(f"{server.url}/version", headers=AUTH).json()["engine"].startswith("vllm")


def test_stream_equals_non_stream_at_temperature_0(client):
    for messages in (HI, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]):
        plain = client.chat.completions.create(model=TINY_NAME, messages=messages, temperature=0, max_tokens=48)
        stream = client.chat.completions.create(
            model=TINY_NAME, messages=messages, temperature=0, max_tokens=48, stream=True
        )
        chunks = list(stream)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == plain.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_stop_sequence_truncates_greedy_output(client):
    prompt = "Once upon a time, in a small village by the sea,"
    full = client.completions.create(model=TINY_NAME, prompt=prompt, temperature=0, max_tokens=24).choices[0].text
    k = next((k for k in range(2, len(full) - 2) if full[k : k + 2].strip() and full.find(full[k : k + 2]) == k), None)
    assert k is not None, f"greedy output too repetitive to pick a stop string: {full!r}"
    stopped = client.completions.create(
        model=TINY_NAME, prompt=prompt, temperature=0, max_tokens=24, stop=[full[k : k + 2]]
    ).choices[0]
    assert stopped.text == full[:k] and stopped.finish_reason == "stop"


def test_n_choices_and_usage_counts(client, server):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(TINY_NAME))
    text = tokenizer.apply_chat_template(HI, add_generation_prompt=True, tokenize=False)
    prompt_tokens = len(tokenizer.encode(text, add_special_tokens=False))
    r = client.chat.completions.create(
        model=TINY_NAME, messages=HI, n=3, temperature=1.0, seed=7, max_tokens=12, extra_body={"ignore_eos": True}
    )
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert all(c.message.content and c.finish_reason == "length" for c in r.choices)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_tokens, 36)
    assert r.usage.total_tokens == prompt_tokens + 36
    stream = client.chat.completions.create(
        model=TINY_NAME,
        messages=HI,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    last = list(stream)[-1]
    assert last.choices == [] and (last.usage.prompt_tokens, last.usage.completion_tokens) == (prompt_tokens, 5)


def test_json_output_parses(client):
    # The tiny model is random: under json_object it opens a string and rarely closes it within any budget, so
    # the parse check uses a json_schema whose only value is a short enum; json_object is checked to start as JSON.
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=TINY_NAME,
        messages=HI,
        max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert json.loads(r.choices[0].message.content)["answer"] in ("yes", "no")
    r = client.chat.completions.create(
        model=TINY_NAME, messages=HI, max_tokens=16, response_format={"type": "json_object"}
    )
    assert r.choices[0].message.content.startswith("{")


def test_logprobs(client):
    r = client.chat.completions.create(
        model=TINY_NAME, messages=HI, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 3 for t in content)
    assert content[0].logprob == pytest.approx(content[0].top_logprobs[0].logprob)  # greedy takes the top one


def test_bad_inputs_get_the_envelope(client, server):
    def post(body, headers=AUTH):
        headers = {"Content-Type": "application/json", **headers}
        return httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=headers, timeout=30)

    ok = {"model": TINY_NAME, "messages": HI}
    cases = [
        (post(b"{not json"), 400, None),
        (post(json.dumps(ok), {**AUTH, "Content-Type": "text/plain"}), 400, None),  # JSON needs its content type
        (post(json.dumps({**ok, "model": "nope"})), 404, "model"),
        (post(json.dumps({**ok, "max_tokens": MAX_TOKENS_CAP + 1})), 400, "max_tokens"),
        (post(json.dumps({**ok, "messages": [{"role": "user", "content": "word " * 600}]})), 400, "messages"),
        (post(json.dumps({**ok, "max_tokens": 0})), 400, "max_tokens"),
        (post(json.dumps(ok), {"Authorization": "Bearer wrong"}), 401, None),
        (
            post(
                json.dumps(
                    {
                        **ok,
                        "response_format": {
                            "type": "json_schema",
                            "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
                        },
                    }
                )
            ),
            400,
            "response_format",
        ),
    ]
    for response, status, param in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="context length"):
        long = [{"role": "user", "content": "word " * 150}]
        client.chat.completions.create(model=TINY_NAME, messages=long, max_tokens=MAX_TOKENS_CAP)


def test_fuzz_openapi_never_5xx(server):
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    raw = httpx.get(f"{server.url}/openapi.json", headers=AUTH).json()
    schema = schemathesis.openapi.from_dict(raw)
    failures: list[str] = []
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

        @given(case=schema.as_strategy(mode, headers=AUTH))
        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def check(case):
            response = case.call(base_url=server.url, headers=AUTH, timeout=60)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text}")

        check()
    assert not failures, "\n".join(failures[:5])
    # unauthenticated: every documented route answers 401 (probes and metrics aside), never 5xx
    for path, methods in raw["paths"].items():
        for method in methods:
            r = httpx.request(method.upper(), f"{server.url}{path}", json={}, timeout=30)
            expected = {200, 405} if path in ("/health", "/ready", "/metrics") else {401}
            assert r.status_code in expected, f"{method} {path} without a key -> {r.status_code}"
    # a lone surrogate in any string field is a 400 naming it, never a 500
    for field in ("content", "name", "model", "user", "stop"):
        message = {"role": "user", "content": "hi"}
        body = {"model": TINY_NAME, "messages": [message]}
        if field in ("content", "name"):
            message[field] = "\ud800"
        else:
            body[field] = "\ud800"
        raw_body = json.dumps(body)  # ensure_ascii keeps the surrogate as the escape \ud800
        r = httpx.post(f"{server.url}/v1/chat/completions", content=raw_body, timeout=30,
                       headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 400, (field, r.status_code, r.text)
    assert httpx.get(f"{server.url}/ready").status_code == 200


def test_disconnect_mid_stream_frees_the_slot(server):
    # 8 choices x 400 tokens with ignore_eos: an abort is the only way the server stops short of all of them.
    body = {"model": TINY_NAME, "messages": HI, "max_tokens": MAX_TOKENS_CAP, "n": 8, "stream": True}
    body["ignore_eos"] = True
    requested = 8 * MAX_TOKENS_CAP
    tokens_before = metric(server, "orpo_serve_completion_tokens_total")
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30) as r:
        next(line for line in r.iter_lines() if line.startswith("data: "))
    wait_for(lambda: metric(server, "orpo_serve_requests_in_flight") == 0, 10, "in-flight back to 0", server)
    wait_for(lambda: metric(server, "vllm:num_requests_running") == 0, 10, "vLLM running back to 0", server)
    assert metric(server, "orpo_serve_completion_tokens_total") - tokens_before < requested

    # A non-streaming request is aborted too (HTTP 499 in the metrics). The client hangs up once the server shows
    # the request in flight, rather than after a fixed timeout: on a starved 2-core CI host a 0.5 s client timeout
    # fired 3 s late, after the whole generation had finished. Even polling can lose that race (a CI run saw the
    # 3,200 tokens finish before its first in-flight reading), so a request that ends first is sent again: only a
    # hang-up while the request runs counts, and the checks below hold for that one.
    async def hang_up_while_running(attempts: int = 5) -> float:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as c:
            for _ in range(attempts):
                tokens_before = metric_in((await c.get("/metrics")).text, "orpo_serve_completion_tokens_total")
                pending = asyncio.ensure_future(c.post("/v1/chat/completions", json={**body, "stream": False}))
                deadline = time.monotonic() + 30
                while not pending.done() and time.monotonic() < deadline:
                    if metric_in((await c.get("/metrics")).text, "orpo_serve_requests_in_flight"):
                        break
                    await asyncio.sleep(0.02)
                if not pending.done():
                    pending.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await pending
                    return tokens_before
                assert pending.result().status_code == 200, pending.result().text
        pytest.fail(f"{attempts} times the request finished before the client could hang up")

    tokens_before = asyncio.run(hang_up_while_running())
    wait_for(lambda: metric(server, "orpo_serve_requests_in_flight") == 0, 10, "in-flight back to 0", server)
    assert metric(server, "orpo_serve_completion_tokens_total") - tokens_before < requested
    wait_for(lambda: 'status="499"' in httpx.get(f"{server.url}/metrics").text, 10, "a 499 in the metrics", server)


def test_overload_gives_429_never_5xx_then_recovers(server):
    body = {"model": TINY_NAME, "messages": HI, "max_tokens": 120, "ignore_eos": True}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=120) as c:
            return await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(16)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    rejected = [r for r in responses if r.status_code == 429]
    assert rejected and all(int(r.headers["Retry-After"]) >= 1 for r in rejected), statuses
    assert rejected[0].json()["error"]["code"] == "server_overloaded"
    assert statuses.count(200) >= 4 + 4  # every slot and every queue place was served
    assert httpx.post(f"{server.url}/v1/chat/completions", json={**body, "max_tokens": 4}, headers=AUTH).is_success
    assert metric(server, "orpo_serve_requests_waiting") == 0


def test_sigterm_drains_in_flight_then_exits_0(server):
    """Runs last: it stops the module's server.

    Eight long streams against 4 slots + 4 queue places: four run and four wait, so the drain has to finish the
    running ones and serve the queued ones (two waves of 4 x 400 tokens, seconds of work even on a fast host; one
    choice each, since admission counts sequences: a request with n = 4 would take all 4 slots),
    and the request sent after SIGTERM meets a draining server, not an exited one. The streams are read only after
    that: on a starved host, reading 6,400 SSE lines took the client's CPU and its /metrics polls came 4-17 s apart,
    after the first wave had ended.
    """
    body = {"model": TINY_NAME, "messages": HI, "max_tokens": MAX_TOKENS_CAP, "n": 1, "temperature": 1.0}
    body |= {"stream": True, "ignore_eos": True}
    streams: list[list[str]] = [[] for _ in range(8)]

    async def gauge(c: httpx.AsyncClient, name: str) -> float:
        return metric_in((await c.get("/metrics")).text, name)

    async def until(predicate, what: str, deadline_s: float = 30, must: bool = True) -> bool:
        deadline = time.monotonic() + deadline_s
        while not await predicate():
            assert server.proc.poll() is None, f"server exited while waiting for {what}:\n{server.log_tail()}"
            if time.monotonic() >= deadline:
                assert not must, f"timed out waiting for {what}:\n{server.log_tail()}"
                return False
            await asyncio.sleep(0.05)
        return True

    async def scenario(attempts: int = 3) -> None:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=120, limits=limits) as c:

            async def consume(lines: list[str]) -> None:
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    await read.wait()
                    async for line in r.aiter_lines():
                        lines.append(line)

            async def queued() -> bool:
                running = await gauge(c, "orpo_serve_requests_in_flight")
                return running == 4 and await gauge(c, "orpo_serve_requests_waiting") > 0

            async def draining() -> bool:
                return (await c.get("/ready")).status_code == 503

            # Once in a fresh-clone .ci/run no poll in 30 s saw that moment (cause not found; a guess: the first
            # wave ran to its end into the socket buffers between two polls). Then this wave is read to its end and
            # sent again.
            for _ in range(attempts):
                read = asyncio.Event()
                streams[:] = [[] for _ in range(8)]
                readers = [asyncio.ensure_future(consume(lines)) for lines in streams]
                if await until(queued, "4 running and some queued", must=False):
                    break
                read.set()
                await asyncio.wait_for(asyncio.gather(*readers), 120)
            else:
                pytest.fail(f"{attempts} times no moment with 4 running and some queued:\n{server.log_tail()}")
            server.proc.send_signal(signal.SIGTERM)
            await until(draining, "/ready 503 while draining")
            refused = await c.post("/v1/chat/completions", json={**body, "stream": False})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
            read.set()
            await asyncio.wait_for(asyncio.gather(*readers), 120)

    asyncio.run(scenario())
    for lines in streams:  # every admitted request, running or queued at SIGTERM, ran to its end
        lines = [x for x in lines if x]  # SSE events are separated by blank lines
        events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
        assert lines[-1] == "data: [DONE]"
        finished = {c["index"]: c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]}
        assert finished == {0: "length"}
    assert server.proc.wait(timeout=60) == 0

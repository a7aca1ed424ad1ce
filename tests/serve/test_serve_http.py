"""The HTTP layer of orpo-serve on a fake engine: fast, deterministic, no vLLM."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
import pytest
from serve_fakes import FakeEngine, call_then_disconnect

from orpo_deploy.core.manifest import make_manifest, write_manifest
from orpo_deploy.serve.app import create_app, drain
from orpo_deploy.serve.config import ServeConfig

KEY, OTHER_KEY = "test-key-1-" + "a" * 24, "test-key-2-" + "b" * 24  # keys are >= 32 characters
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "fake-model"
CHAT = "/v1/chat/completions"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_config(**changes) -> ServeConfig:
    base = dict(served_model_name=MODEL, api_keys=(KEY, OTHER_KEY), max_tokens_cap=32, max_body_bytes=4096,
                max_request_tokens=64, max_logprob_entries=256)  # fmt: skip
    return ServeConfig(**{**base, **changes})


@asynccontextmanager
async def serving(engine: FakeEngine | None = None, **config_changes):
    engine = engine or FakeEngine()
    app = create_app(make_config(**config_changes), engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=AUTH) as client:
            yield app, client, engine


def chat_body(**changes) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5, **changes}


def sse_payloads(text: str) -> list:
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def assert_envelope(response: httpx.Response, status: int, param: str | None = None, code: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.mark.anyio
async def test_health_ready_version_and_models_with_provenance(tmp_path):
    write_manifest(tmp_path, make_manifest("merge", model="m", weights_sha256={"model.safetensors": "ab"}))
    async with serving(model=str(tmp_path)) as (_, client, _):
        assert (await client.get("/health", headers={})).json() == {"status": "ok"}
        assert (await client.get("/ready", headers={})).json() == {"status": "ready"}
        assert (await client.get("/version")).json()["engine"] == "fake 1.0"
        models = (await client.get("/v1/models")).json()
        assert models["object"] == "list"
        (card,) = models["data"]
        assert card["id"] == MODEL and card["max_model_len"] == 64
        assert card["provenance"]["stage"] == "merge"
        assert (await client.get(f"/v1/models/{MODEL}")).json()["id"] == MODEL
        assert_envelope(await client.get("/v1/models/other"), 404, code="model_not_found")


@pytest.mark.anyio
async def test_every_route_of_the_app_needs_a_key_but_the_probes():
    """The route list comes from the app itself, so a new route cannot be left open by forgetting it here."""
    async with serving() as (app, client, _):
        routes = [(m, r.path) for r in app.routes for m in sorted(getattr(r, "methods", None) or ()) if m != "HEAD"]
        assert ("POST", CHAT) in routes and ("GET", "/v1/models") in routes
        for method, path in routes:
            r = await client.request(method, path, headers={"Authorization": ""})
            if path in ("/health", "/ready", "/metrics"):
                assert r.status_code != 401, path
            else:
                assert_envelope(r, 401, code="missing_api_key")


@pytest.mark.anyio
async def test_the_key_is_checked_before_the_body_is_read():
    """An unauthenticated client announcing a large body and sending nothing gets its 401 at once."""
    async with serving() as (app, _, _):
        received = []

        async def receive():  # a client that stalls after its headers
            received.append(1)
            await asyncio.sleep(3600)

        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": CHAT, "headers": [(b"content-length", b"4000")],
                 "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("t", 80),
                 "client": ("c", 1), "root_path": "", "raw_path": CHAT.encode()}  # fmt: skip
        await asyncio.wait_for(app(scope, receive, send), 2)
        assert sent[0]["status"] == 401 and received == []


@pytest.mark.anyio
async def test_a_metrics_key_opens_metrics_only():
    metrics_key = "m" * 40
    async with serving(metrics_keys=(metrics_key,)) as (_, client, _):
        only_metrics = {"Authorization": f"Bearer {metrics_key}"}
        assert (await client.get("/metrics", headers=only_metrics)).status_code == 200
        assert_envelope(await client.get("/metrics", headers={"Authorization": ""}), 401)
        assert_envelope(await client.get("/v1/models", headers=only_metrics), 401, code="invalid_api_key")
        assert (await client.get("/metrics")).status_code == 200  # a full key opens it too


@pytest.mark.anyio
async def test_auth_on_every_route_but_health_and_ready():
    async with serving() as (_, client, _):
        for path in ("/v1/models", "/version"):
            assert_envelope(await client.get(path, headers={"Authorization": ""}), 401, code="missing_api_key")
            assert_envelope(
                await client.get(path, headers={"Authorization": "Bearer nope"}), 401, code="invalid_api_key"
            )
        r = await client.post(CHAT, json=chat_body(), headers={"Authorization": "Basic abc"})
        assert_envelope(r, 401)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert (await client.get("/v1/models", headers={"Authorization": f"Bearer {OTHER_KEY}"})).status_code == 200
        assert (await client.post(CHAT, json=chat_body())).status_code == 200
        for path in ("/health", "/ready", "/metrics"):
            assert (await client.get(path, headers={"Authorization": ""})).status_code == 200
    async with serving(metrics_auth=True) as (_, client, _):
        assert_envelope(await client.get("/metrics", headers={"Authorization": ""}), 401)
        assert (await client.get("/metrics")).status_code == 200


LONG = " ".join(["word"] * 80)
BAD_INPUTS = [
    ("bad json", CHAT, b'{"model": ', 400, None, "invalid_json"),
    ("body not an object", CHAT, [1, 2], 400, None, None),
    ("wrong type", CHAT, chat_body(temperature="hot"), 400, "temperature", None),
    ("unknown model", CHAT, chat_body(model="gpt-9"), 404, "model", "model_not_found"),
    ("negative max_tokens", CHAT, chat_body(max_tokens=-1), 400, "max_tokens", None),
    ("max_tokens above cap", CHAT, chat_body(max_tokens=33), 400, "max_tokens", None),
    ("prompt too long", CHAT, chat_body(messages=[{"role": "user", "content": LONG}]), 400, "messages", None),
    (
        "prompt + max_tokens too long",
        CHAT,
        chat_body(max_completion_tokens=30, messages=[{"role": "user", "content": " ".join(["w"] * 40)}]),
        400,
        "max_completion_tokens",
        "context_length_exceeded",
    ),
    ("n too large", CHAT, chat_body(n=17), 400, "n", None),
    ("n > 1 greedy", CHAT, chat_body(n=2, temperature=0), 400, "n", None),
    ("bad response_format", CHAT, chat_body(response_format={"type": "xml"}), 400, "response_format", None),
    ("json_schema without schema spec", CHAT, chat_body(response_format={"type": "json_schema"}), 400, None, None),
    ("empty messages", CHAT, chat_body(messages=[]), 400, "messages", None),
    ("bad role", CHAT, chat_body(messages=[{"role": "robot", "content": "x"}]), 400, None, None),
    (
        "stream_options without stream",
        CHAT,
        chat_body(stream_options={"include_usage": True}),
        400,
        "stream_options",
        None,
    ),
    ("top_logprobs without logprobs", CHAT, chat_body(top_logprobs=2), 400, "top_logprobs", None),
    ("top_p zero", CHAT, chat_body(top_p=0), 400, "top_p", None),
    ("too many stop strings", CHAT, chat_body(stop=["a", "b", "c", "d", "e"]), 400, "stop", None),
    ("token id out of vocab", "/v1/completions", {"model": MODEL, "prompt": [1, 5000]}, 400, "prompt", None),
    ("echo unsupported", "/v1/completions", {"model": MODEL, "prompt": "a", "echo": True}, 400, "echo", None),
    (
        "body too large",
        CHAT,
        chat_body(messages=[{"role": "user", "content": "x" * 5000}]),
        413,
        None,
        "payload_too_large",
    ),
    ("unknown route", "/v1/nope", chat_body(), 404, None, "not_found"),
    (
        "prompt over the character cap, untokenised",
        CHAT,
        chat_body(messages=[{"role": "user", "content": "x" * 2100}]),
        400,
        "messages",
        "context_length_exceeded",
    ),
    ("a stop string too long", CHAT, chat_body(stop="x" * 300), 400, "stop", None),
    (
        "lone surrogate in a message",
        CHAT,
        b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
        400,
        "messages[0].content",
        None,
    ),
    (
        "lone surrogate in a prompt",
        "/v1/completions",
        b'{"model": "fake-model", "prompt": "\\udfff"}',
        400,
        "prompt",
        None,
    ),
    (
        "tools are refused, not dropped",
        CHAT,
        chat_body(tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tools",
        "unsupported_parameter",
    ),
    ("tool_choice", CHAT, chat_body(tool_choice="auto"), 400, "tool_choice", "unsupported_parameter"),
    ("functions", CHAT, chat_body(functions=[{"name": "f"}]), 400, "functions", "unsupported_parameter"),
    ("best_of", "/v1/completions", {"model": MODEL, "prompt": "a", "best_of": 2}, 400, "best_of", None),
    ("ignore_eos needs the server's consent", CHAT, chat_body(ignore_eos=True), 400, "ignore_eos", None),
    ("n x max_tokens over the budget", CHAT, chat_body(n=3, max_tokens=30, temperature=1), 400, "n", None),
    (
        "logprob entries over the budget",
        CHAT,
        chat_body(max_tokens=30, logprobs=True, top_logprobs=20),
        400,
        "top_logprobs",
        None,
    ),
    ("logit_bias key not a token", CHAT, chat_body(logit_bias={"5000": 1}), 400, "logit_bias", None),
    ("logit_bias value out of range", CHAT, chat_body(logit_bias={"5": 101}), 400, "logit_bias.5", None),
    ("top_k below -1", CHAT, chat_body(top_k=-2), 400, "top_k", None),
    ("wrong method", "/v1/models", chat_body(), 405, None, "method_not_allowed"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
async def test_bad_input_gets_openai_envelope(path, body, status, param, code):
    async with serving() as (_, client, engine):
        if isinstance(body, bytes):
            r = await client.post(path, content=body, headers={"Content-Type": "application/json"})
        else:
            r = await client.post(path, json=body)
        assert_envelope(r, status, param=param, code=code)
        assert engine.options == []  # nothing reached the engine


@pytest.mark.anyio
async def test_body_limit_also_without_content_length():
    async def chunks():
        yield b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
        yield b"x" * 5000
        yield b'"}]}'

    async with serving() as (_, client, _):
        r = await client.post(CHAT, content=chunks(), headers={"Content-Type": "application/json"})
        assert_envelope(r, 413, code="payload_too_large")


@pytest.mark.anyio
async def test_chat_stream_equals_non_stream_and_reports_usage():
    async with serving() as (_, client, _):
        plain = (await client.post(CHAT, json=chat_body(temperature=0))).json()
        assert plain["object"] == "chat.completion"
        assert plain["choices"][0]["message"] == {"role": "assistant", "content": " w0 w1 w2 w3 w4"}
        assert plain["choices"][0]["finish_reason"] == "length"
        assert plain["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        body = chat_body(temperature=0, stream=True, stream_options={"include_usage": True})
        r = await client.post(CHAT, json=body)
        assert r.headers["content-type"].startswith("text/event-stream")
        chunks = sse_payloads(r.text)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
        assert text == plain["choices"][0]["message"]["content"]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


@pytest.mark.anyio
async def test_stop_n_logprobs_json_and_completions():
    async with serving() as (_, client, engine):
        r = (await client.post(CHAT, json=chat_body(stop=["w2"], n=2, logprobs=True, top_logprobs=2))).json()
        assert [c["message"]["content"] for c in r["choices"]] == [" w0 w1", " w0 w1"]
        assert {c["finish_reason"] for c in r["choices"]} == {"stop"}
        entry = r["choices"][0]["logprobs"]["content"][0]
        assert entry["token"] == " w0" and len(entry["top_logprobs"]) == 2 and entry["bytes"] == list(b" w0")
        schema = {"name": "a", "schema": {"type": "object"}}
        r = await client.post(CHAT, json=chat_body(response_format={"type": "json_schema", "json_schema": schema}))
        assert json.loads(r.json()["choices"][0]["message"]["content"]) == {"answer": "yes"}
        assert engine.options[-1].json_schema == {"type": "object"}
        comp = (await client.post("/v1/completions", json={"model": MODEL, "prompt": "a b", "logprobs": 1})).json()
        assert comp["object"] == "text_completion" and comp["choices"][0]["text"].startswith(" w0 w1")
        assert comp["choices"][0]["logprobs"]["text_offset"][:2] == [0, 3]
        r = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": [5, 6], "stream": True, "max_tokens": 3}
        )
        assert "".join(c["choices"][0]["text"] for c in sse_payloads(r.text)) == " w0 w1 w2"


@pytest.mark.anyio
async def test_error_mid_stream_is_an_event_then_done():
    async with serving(FakeEngine(fail_at=2)) as (app, client, _):
        r = await client.post(CHAT, json=chat_body(stream=True))
        assert r.status_code == 200
        events = sse_payloads(r.text)
        assert [e["choices"][0]["delta"].get("content") for e in events[:3]] == ["", " w0", " w1"]
        assert events[-1] == {
            "error": {
                "message": "the fake engine failed",
                "type": "server_error",
                "param": None,
                "code": "engine_error",
            }
        }
        assert app.state.serve.gate.in_flight == 0
        r = await client.post(CHAT, json=chat_body())
        assert_envelope(r, 500, code="engine_error")


@pytest.mark.anyio
async def test_openapi_schema_needs_the_key_and_documents_bearer_auth():
    async with serving() as (_, client, _):
        assert_envelope(await client.get("/openapi.json", headers={"Authorization": ""}), 401)
        schema = (await client.get("/openapi.json")).json()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/metrics"} <= set(schema["paths"])
        assert (await client.get("/docs")).status_code == 404


@pytest.mark.anyio
async def test_request_id_is_honoured_or_generated():
    async with serving() as (_, client, _):
        r = await client.post(CHAT, json=chat_body(), headers={"X-Request-Id": "abc-123"})
        assert r.headers["X-Request-Id"] == "abc-123" and r.json()["id"] == "chatcmpl-abc-123"
        generated = (await client.get("/health")).headers["X-Request-Id"]
        assert len(generated) == 32
        assert (await client.get("/health", headers={"X-Request-Id": "bad id;<x>"})).headers[
            "X-Request-Id"
        ] != "bad id;<x>"
        r = await client.post(CHAT, json=chat_body(model="x"), headers={"X-Request-Id": "err-1"})
        assert r.status_code == 404 and r.headers["X-Request-Id"] == "err-1"


@pytest.mark.anyio
async def test_metrics_names_and_values_move():
    async with serving() as (_, client, _):
        await client.post(CHAT, json=chat_body())
        await client.post(CHAT, json=chat_body(model="nope"))
        text = (await client.get("/metrics")).text
        for name in (
            "orpo_serve_requests_total",
            "orpo_serve_requests_in_flight",
            "orpo_serve_requests_waiting",
            "orpo_serve_time_to_first_token_seconds_bucket",
            "orpo_serve_inter_token_latency_seconds_bucket",
            "orpo_serve_e2e_request_latency_seconds_count",
            "orpo_serve_prompt_tokens_total",
            "orpo_serve_completion_tokens_total",
            "orpo_serve_kv_cache_usage_ratio",
        ):
            assert name in text, name
        assert 'orpo_serve_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
        assert 'orpo_serve_requests_total{route="/v1/chat/completions",status="404"} 1.0' in text
        assert "orpo_serve_completion_tokens_total 5.0" in text
        assert "orpo_serve_kv_cache_usage_ratio 0.25" in text


@pytest.mark.anyio
async def test_queue_full_answers_429_with_retry_after_then_recovers():
    engine = FakeEngine(hold=True)
    async with serving(engine, max_concurrency=1, max_queue=1, retry_after_seconds=3) as (app, client, _):
        running = asyncio.create_task(client.post(CHAT, json=chat_body()))
        await asyncio.wait_for(engine.started.wait(), 5)
        queued = asyncio.create_task(client.post(CHAT, json=chat_body()))
        gate = app.state.serve.gate
        while gate.waiting < 1:
            await asyncio.sleep(0.001)
        rejected = await client.post(CHAT, json=chat_body())
        assert_envelope(rejected, 429, code="server_overloaded")
        assert rejected.headers["Retry-After"] == "3"
        metrics = (await client.get("/metrics")).text
        assert "orpo_serve_requests_in_flight 1.0" in metrics and "orpo_serve_requests_waiting 1.0" in metrics
        engine.release.set()
        assert (await running).status_code == 200 and (await queued).status_code == 200
        assert (await client.post(CHAT, json=chat_body())).status_code == 200
        assert gate.in_flight == 0 and gate.waiting == 0


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_client_disconnect_aborts_the_engine_request(stream):
    engine = FakeEngine(hold=True)
    async with serving(engine) as (app, _, _):
        await call_then_disconnect(app, CHAT, chat_body(max_tokens=20, stream=stream), engine, KEY)
        assert len(engine.aborted) == 1 and engine.finished == []
        assert app.state.serve.gate.in_flight == 0


@pytest.mark.anyio
async def test_drain_refuses_new_work_and_lets_in_flight_finish():
    engine = FakeEngine(hold=True)
    async with serving(engine) as (app, client, _):
        in_flight = asyncio.create_task(client.post(CHAT, json=chat_body(stream=True)))
        await asyncio.wait_for(engine.started.wait(), 5)
        draining = asyncio.create_task(drain(app, grace_seconds=5))
        await asyncio.sleep(0)
        assert_envelope(await client.get("/ready"), 503, code="shutting_down")
        assert (await client.get("/health")).json() == {"status": "draining"}
        assert_envelope(await client.post(CHAT, json=chat_body()), 503, code="shutting_down")
        assert not draining.done()
        engine.release.set()
        response = await in_flight
        assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
        assert await asyncio.wait_for(draining, 5) is True


@pytest.mark.anyio
async def test_drain_gives_up_after_grace_period():
    engine = FakeEngine(hold=True)
    async with serving(engine) as (app, client, _):
        in_flight = asyncio.create_task(client.post(CHAT, json=chat_body()))
        await asyncio.wait_for(engine.started.wait(), 5)
        assert await drain(app, grace_seconds=0.05) is False
        engine.release.set()
        await in_flight


@pytest.mark.anyio
async def test_not_ready_before_engine_and_cors_off_by_default():
    app = create_app(make_config())  # no engine and no lifespan: as during model loading
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=AUTH) as client:
        assert (await client.get("/health")).json() == {"status": "starting"}
        assert_envelope(await client.get("/ready"), 503, code="engine_not_ready")
        assert_envelope(await client.post(CHAT, json=chat_body()), 503, code="engine_not_ready")
        r = await client.options(CHAT, headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
    async with serving(cors_origins=("http://x",)) as (_, client, _):
        r = await client.options(CHAT, headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"})
        assert r.headers["access-control-allow-origin"] == "http://x"


@pytest.mark.anyio
async def test_engine_start_freezes_the_startup_heap(tmp_path, monkeypatch):
    """Once the engine is up, the start-up objects sit in gc's permanent generation (serve.app.freeze_startup_heap),
    so the full collections that serving's garbage triggers do not walk them (measured: 350 ms -> 1 ms)."""
    import gc

    import orpo_deploy.core.models as core_models
    from orpo_deploy.serve.engine import VllmEngine

    async def fake_start(config, model_dir):
        return FakeEngine()

    monkeypatch.setattr(core_models, "resolve_model", lambda model: tmp_path)
    monkeypatch.setattr(VllmEngine, "start", staticmethod(fake_start))
    gc.unfreeze()
    app = create_app(make_config(model=str(tmp_path)))
    try:
        async with app.router.lifespan_context(app):
            for _ in range(100):
                if app.state.serve.service is not None:
                    break
                await asyncio.sleep(0.01)
            assert app.state.serve.service is not None
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.anyio
async def test_openai_parameters_reach_the_engine():
    """stop as one string (as the SDK allows), vLLM's sampling extensions, logit_bias; ignore_eos where allowed."""
    async with serving(allow_benchmark_params=True) as (_, client, engine):
        body = chat_body(stop="<|im_end|>", top_k=5, min_p=0.1, repetition_penalty=1.2, logit_bias={"7": -100})
        r = await client.post(CHAT, json={**body, "ignore_eos": True, "metadata": {"a": "b"}, "store": False})
        assert r.status_code == 200, r.text
        o = engine.options[-1]
        assert o.stop == ("<|im_end|>",) and (o.top_k, o.min_p, o.repetition_penalty) == (5, 0.1, 1.2)
        assert o.logit_bias == ((7, -100.0),) and o.ignore_eos is True
        r = await client.post(CHAT, json=chat_body(stop=["a", "b"], tool_choice=None, tools=None))
        assert r.status_code == 200 and engine.options[-1].stop == ("a", "b")  # explicit nulls are no request


@pytest.mark.anyio
async def test_admission_counts_sequences_not_requests():
    engine = FakeEngine(hold=True)
    async with serving(engine, max_concurrency=4, max_queue=1) as (app, client, _):
        wide = asyncio.create_task(client.post(CHAT, json=chat_body(n=3, temperature=1.0)))
        await asyncio.wait_for(engine.started.wait(), 5)
        gate = app.state.serve.gate
        assert (gate.in_flight, gate.sequences) == (1, 3)
        queued = asyncio.create_task(client.post(CHAT, json=chat_body(n=2, temperature=1.0)))  # 3 + 2 > 4: waits
        while gate.waiting < 1:
            await asyncio.sleep(0.001)
        assert gate.in_flight == 1
        assert_envelope(await client.post(CHAT, json=chat_body(n=2, temperature=1.0)), 429, code="server_overloaded")
        engine.release.set()
        assert (await wide).status_code == 200 and (await queued).status_code == 200
        assert (gate.in_flight, gate.sequences, gate.waiting) == (0, 0, 0)


def raw_scope(path: str = CHAT, method: str = "POST", headers: list | None = None) -> dict:
    return {"type": "http", "method": method, "path": path, "headers": headers or [], "query_string": b"",
            "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": "",
            "raw_path": path.encode()}  # fmt: skip


@pytest.mark.anyio
async def test_a_stalled_body_gets_408_within_the_body_timeout():
    async with serving(body_timeout_seconds=0.2) as (app, _, engine):
        sent = []

        async def receive():
            if not sent and not getattr(receive, "once", False):
                receive.once = True
                return {"type": "http.request", "body": b'{"model": ', "more_body": True}
            await asyncio.sleep(3600)  # then nothing: a slow-loris body

        async def send(message):
            sent.append(message)

        headers = [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json"),
                   (b"content-length", b"2000")]  # fmt: skip
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(app(raw_scope(headers=headers), receive, send), 5)
        assert sent[0]["status"] == 408 and asyncio.get_running_loop().time() - started < 2
        assert json.loads(sent[1]["body"])["error"]["code"] == "request_timeout"
        assert engine.options == []


@pytest.mark.anyio
async def test_per_key_cap_answers_429_for_that_key_only():
    engine = FakeEngine(hold=True)
    async with serving(engine, max_requests_per_key=1) as (app, client, _):
        first = asyncio.create_task(client.post(CHAT, json=chat_body()))
        await asyncio.wait_for(engine.started.wait(), 5)
        assert_envelope(await client.post(CHAT, json=chat_body()), 429, code="server_overloaded")
        other = asyncio.create_task(
            client.post(CHAT, json=chat_body(), headers={"Authorization": f"Bearer {OTHER_KEY}"})
        )
        await asyncio.sleep(0.05)
        engine.release.set()
        assert (await first).status_code == 200 and (await other).status_code == 200
        assert (await client.post(CHAT, json=chat_body())).status_code == 200  # the key's slot came back


@pytest.mark.anyio
async def test_a_stream_that_is_not_read_is_dropped_and_its_generation_aborted():
    engine = FakeEngine()
    async with serving(engine, stream_write_timeout_seconds=0.2, max_tokens_cap=32) as (app, _, _):
        sent = []

        async def receive():
            if not getattr(receive, "once", False):
                receive.once = True
                body = json.dumps(chat_body(stream=True, max_tokens=30)).encode()
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)

        async def send(message):  # headers go out; then the socket is full: no write completes
            if message["type"] == "http.response.body" and len(sent) >= 2:
                await asyncio.sleep(3600)
            sent.append(message)

        headers = [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json")]
        await asyncio.wait_for(app(raw_scope(headers=headers), receive, send), 5)
        assert sent[0]["status"] == 200
        await asyncio.sleep(0.05)
        assert engine.aborted and not engine.finished  # the generation stopped with the client
        assert app.state.serve.gate.in_flight == 0


@pytest.mark.anyio
async def test_engine_death_turns_ready_and_requests_503_and_stops_the_process(monkeypatch):
    import orpo_deploy.serve.app as serve_app

    monkeypatch.setattr(serve_app, "DEATH_GRACE_SECONDS", 0.05)
    stopped = asyncio.Event()
    async with serving(engine_check_seconds=0.05) as (app, client, engine):
        app.state.serve.on_fatal = stopped.set
        assert (await client.get("/ready")).status_code == 200
        engine.dead = True
        await asyncio.wait_for(stopped.wait(), 5)
        assert_envelope(await client.get("/ready"), 503, code="engine_dead")
        assert_envelope(await client.post(CHAT, json=chat_body()), 503, code="engine_dead")
        assert (await client.get("/health")).status_code == 503

"""A deterministic in-process ``Engine`` for HTTP-layer tests, and a raw ASGI driver that can disconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from orpo_deploy.serve.engine import ChoiceDelta, EngineOutput, EngineStats, SamplingOptions, TokenLogprob
from orpo_deploy.serve.errors import EngineFailure


class FakeEngine:
    """Token i of every choice is the text `` w<i>``; stop strings and max_tokens end it like vLLM would.

    ``hold=True`` makes each request wait after its first token until ``release`` is set, so tests can keep
    requests in flight. ``aborted`` lists the request ids that ended before finishing.
    """

    max_model_len = 64
    vocab_size = 1000
    version = "fake 1.0"

    def __init__(self, hold: bool = False, fail_at: int | None = None) -> None:
        self.hold = hold
        self.fail_at = fail_at
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.options: list[SamplingOptions] = []
        self.dead = False  # set it to make check_health fail, as a vLLM engine whose process died

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        ids = []
        for m in messages:
            ids += [1, 2] + [len(w) % self.vocab_size for w in m["content"].split()] + [3]
        return ids + [1, 4]

    def encode(self, text: str) -> list[int]:
        return [len(w) % self.vocab_size for w in text.split()]

    async def generate(self, prompt_ids: list[int], options: SamplingOptions, request_id: str):
        self.options.append(options)
        finished = False
        try:
            if options.json_object or options.json_schema is not None:
                text = json.dumps({"answer": "yes"}, separators=(",", ":"))
                finished = True
                yield EngineOutput([ChoiceDelta(i, text, 5, None, "stop") for i in range(options.n)], True)
                return
            for step in range(options.max_tokens):
                if step == 1 and self.hold:
                    await self.release.wait()
                if step == self.fail_at:
                    raise EngineFailure("the fake engine failed")
                await asyncio.sleep(0)
                word = f" w{step}"
                stop = word.strip() in options.stop
                last = stop or step == options.max_tokens - 1
                reason = ("stop" if stop else "length") if last else None
                logprobs = None
                if options.logprobs is not None:
                    top = tuple((f" w{k}", -0.5 * (k + 1)) for k in range(options.logprobs))
                    logprobs = [TokenLogprob(word, -0.25, top)]
                text = "" if stop else word
                choices = [ChoiceDelta(i, text, 1, logprobs, reason) for i in range(options.n)]
                finished = last
                self.started.set()
                yield EngineOutput(choices, last)
                if last:
                    break
        finally:
            (self.finished if finished else self.aborted).append(request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def check_health(self) -> None:
        if self.dead:
            raise EngineFailure("the inference engine is not running")

    def stats(self) -> EngineStats:
        return EngineStats(running=0, waiting=0, kv_cache_usage=0.25)

    async def shutdown(self) -> None:
        return None


async def call_then_disconnect(app, path: str, body: dict, engine: FakeEngine, api_key: str) -> list[dict]:
    """POST ``body`` straight into the ASGI app, and disconnect once the engine has produced a token."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"authorization", f"Bearer {api_key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    disconnected = asyncio.Event()
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    call = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(engine.started.wait(), 5)
    disconnected.set()
    await asyncio.wait_for(call, 5)
    return messages

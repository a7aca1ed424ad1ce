"""Generation requests end to end, without HTTP: validate, tokenize, admit, run the engine, assemble responses.

Routers call one method per endpoint; errors are raised as ``serve.errors`` types. Streaming methods return an
async iterator only after the request was admitted and the engine produced its first output, so a full queue
(429) or an input the engine rejects (400) still becomes a proper HTTP status instead of an in-stream error.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from orpo_deploy.serve import responses
from orpo_deploy.serve.admission import AdmissionGate
from orpo_deploy.serve.config import ServeConfig
from orpo_deploy.serve.engine import Engine, EngineOutput, SamplingOptions
from orpo_deploy.serve.errors import ContextLengthExceeded, EngineFailure, InvalidRequest, ModelNotFound
from orpo_deploy.serve.metrics import ServeMetrics
from orpo_deploy.serve.protocol import (
    UNSUPPORTED,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    SamplingRequest,
)

logger = logging.getLogger(__name__)


class GenerationService:
    def __init__(
        self, engine: Engine, config: ServeConfig, gate: AdmissionGate, metrics: ServeMetrics, recorder=None
    ) -> None:
        self.engine = engine
        # recorder(job, request_id, texts by choice, finish reasons): queues a record (serve/records.py); None = off
        self.recorder = recorder
        self.config = config
        self.gate = gate
        self.metrics = metrics
        # Tokenising off the event loop: /health and every open stream keep answering while prompts are encoded.
        self._tokenizers = ThreadPoolExecutor(config.tokenizer_threads, thread_name_prefix="tokenize")

    # -- chat ---------------------------------------------------------------------------------------------------

    async def chat(self, req: ChatCompletionRequest, request_id: str) -> ChatCompletionResponse:
        job = Job(req, self._prepare_chat)
        outputs = [out async for out in self._run(job, request_id)]
        return responses.chat_response(req, self.config.model_name, request_id, len(job.prompt_ids), outputs)

    async def chat_stream(self, req: ChatCompletionRequest, request_id: str) -> AsyncIterator[ChatCompletionChunk]:
        job = Job(req, self._prepare_chat)
        outputs = self._run(job, request_id)
        first = await _prime(outputs)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return responses.chat_chunks(
            self.config.model_name, request_id, len(job.prompt_ids), first, outputs, include_usage,
            job.options.logprobs,
        )  # fmt: skip

    def _prepare_chat(self, req: ChatCompletionRequest) -> tuple[list[int], SamplingOptions]:
        if req.top_logprobs is not None and not req.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs=true", param="top_logprobs")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        if self.config.log_prompts:
            logger.info("chat prompt", extra={"messages": messages})
        prompt_ids = self.engine.encode_chat(messages)
        if req.max_completion_tokens is not None:
            requested, param = req.max_completion_tokens, "max_completion_tokens"
        else:
            requested, param = req.max_tokens, "max_tokens"
        max_tokens = self._max_tokens(len(prompt_ids), requested, param, prompt_param="messages")
        self._check_budget(req, max_tokens, (req.top_logprobs or 0) if req.logprobs else None)
        json_schema, json_object = None, False
        if isinstance(req.response_format, ResponseFormatJsonSchema):
            json_schema = req.response_format.json_schema.json_schema or {"type": "object"}
        elif isinstance(req.response_format, ResponseFormatJsonObject):
            json_object = True
        return prompt_ids, self._options(
            req,
            max_tokens,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            json_schema=json_schema,
            json_object=json_object,
        )

    # -- text completions ---------------------------------------------------------------------------------------

    async def complete(self, req: CompletionRequest, request_id: str) -> CompletionResponse:
        job = Job(req, self._prepare_completion)
        outputs = [out async for out in self._run(job, request_id)]
        return responses.completion_response(self.config.model_name, request_id, len(job.prompt_ids), outputs)

    async def complete_stream(self, req: CompletionRequest, request_id: str) -> AsyncIterator[CompletionResponse]:
        job = Job(req, self._prepare_completion)
        outputs = self._run(job, request_id)
        first = await _prime(outputs)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return responses.completion_chunks(
            self.config.model_name, request_id, len(job.prompt_ids), first, outputs, include_usage
        )

    def _prepare_completion(self, req: CompletionRequest) -> tuple[list[int], SamplingOptions]:
        if req.echo:
            raise InvalidRequest("echo is not supported", param="echo")
        if req.suffix:
            raise InvalidRequest("suffix is not supported", param="suffix")
        if isinstance(req.prompt, str):
            if self.config.log_prompts:
                logger.info("completion prompt", extra={"prompt": req.prompt})
            prompt_ids = self.engine.encode(req.prompt)
        else:
            prompt_ids = list(req.prompt)
            bad = [t for t in prompt_ids if not 0 <= t < self.engine.vocab_size]
            if bad:
                raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary", param="prompt")
        if not prompt_ids:
            raise InvalidRequest("prompt is empty", param="prompt")
        max_tokens = self._max_tokens(len(prompt_ids), req.max_tokens, "max_tokens", prompt_param="prompt")
        self._check_budget(req, max_tokens, req.logprobs)
        return prompt_ids, self._options(req, max_tokens, logprobs=req.logprobs, add_special_tokens=True)

    # -- shared -------------------------------------------------------------------------------------------------

    def _check_common(self, req: SamplingRequest) -> None:
        for name in UNSUPPORTED:
            if getattr(req, name) is not None:
                raise InvalidRequest(
                    f"{name} is not supported by this server", param=name, code="unsupported_parameter"
                )
        if req.ignore_eos and not self.config.allow_benchmark_params:
            raise InvalidRequest(
                "ignore_eos is a benchmarking parameter; this server does not allow it", param="ignore_eos"
            )
        if req.model != self.config.model_name:
            raise ModelNotFound(
                f"model {req.model!r} does not exist; this server serves {self.config.model_name!r}", param="model"
            )
        if req.stream_options is not None and not req.stream:
            raise InvalidRequest("stream_options is only allowed with stream=true", param="stream_options")
        if req.n > 1 and req.temperature == 0:
            raise InvalidRequest("n > 1 needs temperature > 0 (greedy choices would all be equal)", param="n")
        chars, cap = (
            prompt_chars(req),
            self.config.max_prompt_chars or PROMPT_CHARS_PER_TOKEN * self.engine.max_model_len,
        )
        if chars > cap:  # before tokenising: a 2 MB prompt took 3.2 s of CPU to tokenise, only to be refused
            param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
            raise ContextLengthExceeded(
                f"the prompt is {chars} characters; this server reads at most {cap} (its context is "
                f"{self.engine.max_model_len} tokens)",
                param=param,
            )

    def _check_budget(self, req: SamplingRequest, max_tokens: int, logprobs: int | None) -> None:
        """What one request may ask of the engine: n x max_tokens sequences' tokens, and logprob entries."""
        total, cap = req.n * max_tokens, self.config.max_request_tokens
        if total > cap:
            raise InvalidRequest(
                f"n ({req.n}) x max_tokens ({max_tokens}) = {total} tokens; this server allows at most {cap} per "
                "request (lower n or max_tokens)",
                param="n" if req.n > 1 else "max_tokens",
            )
        if logprobs is not None:
            entries, cap = total * (logprobs + 1), self.config.max_logprob_entries
            if entries > cap:
                raise InvalidRequest(
                    f"n x max_tokens x (top logprobs + 1) = {entries} logprob entries; this server allows at most "
                    f"{cap} per request",
                    param="top_logprobs" if isinstance(req, ChatCompletionRequest) else "logprobs",
                )
        for key in req.logit_bias or {}:
            if not key.lstrip("-").isdigit() or not 0 <= int(key) < self.engine.vocab_size:
                raise InvalidRequest(f"logit_bias key {key!r} is not a token id of this model", param="logit_bias")

    def _max_tokens(self, prompt_len: int, requested: int | None, param: str, prompt_param: str) -> int:
        limit, cap = self.engine.max_model_len, self.config.max_tokens_cap
        if prompt_len >= limit:
            raise ContextLengthExceeded(
                f"the prompt is {prompt_len} tokens; this model's context length is {limit} tokens", param=prompt_param
            )
        if requested is None:
            return min(cap, limit - prompt_len)
        if requested > cap:
            raise InvalidRequest(f"{param} is {requested}; this server allows at most {cap}", param=param)
        if prompt_len + requested > limit:
            raise ContextLengthExceeded(
                f"prompt ({prompt_len} tokens) + {param} ({requested}) exceeds the context length {limit}", param=param
            )
        return requested

    def _options(self, req: SamplingRequest, max_tokens: int, **kwargs) -> SamplingOptions:
        return SamplingOptions(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            n=req.n,
            stop=tuple(req.stop_list()),
            seed=req.seed,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            top_k=req.top_k,
            min_p=req.min_p,
            repetition_penalty=req.repetition_penalty,
            logit_bias=tuple((int(k), v) for k, v in (req.logit_bias or {}).items()),
            ignore_eos=req.ignore_eos,
            **kwargs,
        )

    async def _run(self, job: Job, request_id: str):
        """Check, wait for a slot, tokenise (in the bounded pool, after admission, so a burst of large prompts
        queues instead of spending CPU it will then be refused), then generate; the slot is held for the whole
        generation, and closing this iterator early aborts the engine request."""
        self._check_common(job.req)
        async with self.gate.slot(job.req.n):
            loop = asyncio.get_running_loop()
            job.prompt_ids, job.options = await loop.run_in_executor(self._tokenizers, job.prepare, job.req)
            prompt_ids, options = job.prompt_ids, job.options
            timer = self.metrics.generation(len(prompt_ids))
            engine_request_id = f"{request_id}-{uuid.uuid4().hex[:8]}"  # client ids may repeat; engine ids must not
            finish_reasons: list[str] = []
            texts: dict[int, list[str]] = {}
            outcome = "aborted"  # client gone or error, unless the loop ends
            try:
                async for out in self.engine.generate(prompt_ids, options, engine_request_id):
                    timer.output(sum(c.num_tokens for c in out.choices))
                    finish_reasons += [c.finish_reason for c in out.choices if c.finish_reason]
                    if self.recorder is not None:
                        for c in out.choices:
                            texts.setdefault(c.index, []).append(c.text)
                    yield out
                outcome = "finished"
                timer.finish()
                if self.recorder is not None:
                    self.recorder(job, request_id, {i: "".join(parts) for i, parts in texts.items()}, finish_reasons)
            finally:
                logger.info(
                    "generation %s",
                    outcome,
                    extra={
                        "prompt_tokens": len(prompt_ids),
                        "completion_tokens": timer.completion_tokens,
                        "n": options.n,
                        "ttft_s": None if timer.ttft is None else round(timer.ttft, 4),
                        "finish_reasons": finish_reasons,
                    },
                )


# Characters a prompt may have per token of context before it is refused untokenised (English averages ~4).
PROMPT_CHARS_PER_TOKEN = 32


def prompt_chars(req: SamplingRequest) -> int:
    if isinstance(req, ChatCompletionRequest):
        return sum(len(m.text()) for m in req.messages)
    prompt = getattr(req, "prompt", "")
    return len(prompt) if isinstance(prompt, str) else 0


@dataclass
class Job:
    """One request on its way through the service: ``prepare`` (tokenise + check) runs after admission."""

    req: SamplingRequest
    prepare: Callable[[SamplingRequest], tuple[list[int], SamplingOptions]]
    prompt_ids: list[int] = field(default_factory=list)
    options: SamplingOptions | None = None


async def _prime(outputs: AsyncIterator[EngineOutput]) -> EngineOutput:
    """Wait for admission and the first engine output, so errors up to here get a real HTTP status."""
    try:
        return await anext(outputs)
    except StopAsyncIteration:
        raise EngineFailure("the engine returned no output") from None
    except BaseException:
        await outputs.aclose()
        raise

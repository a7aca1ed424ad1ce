"""The engine interface the service talks to, and its vLLM implementation (the only module that imports vllm).

vllm is imported inside ``VllmEngine.start`` rather than at the top, so the HTTP layer and its tests (which use
a fake ``Engine``) import this module without paying vLLM's import time or needing it installed. ``start`` also
sets the vLLM CPU environment defaults first, because vLLM reads them when it is imported and when the
EngineCore process is spawned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orpo_deploy.serve.config import ServeConfig, check_servable_model_dir
from orpo_deploy.serve.errors import EngineDead, EngineFailure, InvalidRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingOptions:
    """What the service asks of the engine for one request (engine-neutral)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias): hashable, as the dataclass is frozen
    logprobs: int | None = None  # None: none; k: the sampled token plus the k most likely
    ignore_eos: bool = False
    json_object: bool = False
    json_schema: dict[str, Any] | None = None
    add_special_tokens: bool = False


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ChoiceDelta:
    """New output of one choice since the previous ``EngineOutput``."""

    index: int
    text: str
    num_tokens: int
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # "stop" | "length" | None while running


@dataclass(frozen=True)
class EngineOutput:
    choices: list[ChoiceDelta]
    finished: bool


@dataclass
class EngineStats:
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    per_engine: dict[int, tuple[int, int, float]] = field(default_factory=dict)


class Engine(Protocol):
    """What the service needs from an inference engine."""

    max_model_len: int
    vocab_size: int
    version: str

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def generate(self, prompt_ids: list[int], options: SamplingOptions, request_id: str) -> AsyncIterator[EngineOutput]:
        """Delta outputs until one has ``finished``; closing the iterator early aborts the request."""
        ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None:
        """Raise ``EngineFailure`` when the engine cannot serve any more."""
        ...

    def stats(self) -> EngineStats: ...

    async def shutdown(self) -> None: ...


def apply_cpu_env_defaults(config: ServeConfig, environ: dict[str, str] | os._Environ = os.environ) -> None:
    """vLLM CPU settings measured to work here (shared/NOTES.md), set only where the operator left them unset."""
    defaults = {
        "VLLM_CPU_KVCACHE_SPACE": str(config.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": "auto",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
    }
    for key, value in defaults.items():
        environ.setdefault(key, value)
    if "VLLM_TARGET_DEVICE" not in environ:
        import torch

        if not torch.cuda.is_available():
            environ["VLLM_TARGET_DEVICE"] = "cpu"


class VllmEngine:
    """``Engine`` on vLLM's ``AsyncLLM`` in this process (its EngineCore runs in a child process)."""

    def __init__(self, llm: Any, stats: EngineStats) -> None:
        import vllm
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        self._llm = llm
        self._parse_prompt = parse_model_prompt
        self._tokenizer = llm.get_tokenizer()
        self._stats = stats  # filled by the stat logger passed to AsyncLLM
        self._aborts: set[asyncio.Task] = set()
        self.max_model_len = int(llm.model_config.max_model_len)
        self.vocab_size = int(llm.model_config.get_vocab_size())
        self.version = f"vllm {vllm.__version__}"

    @classmethod
    async def start(cls, config: ServeConfig, model_dir: Path) -> VllmEngine:
        """Build the engine in a worker thread so the event loop keeps answering /health while it loads."""
        check_servable_model_dir(model_dir)
        apply_cpu_env_defaults(config)
        stats = EngineStats()
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine-start")
        building = pool.submit(_build_async_llm, config, model_dir, stats)
        pool.shutdown(wait=False)
        try:
            llm = await asyncio.wrap_future(building)
        except asyncio.CancelledError:
            # Shutdown during start-up: the build cannot be interrupted, so stop the engine when it lands.
            building.add_done_callback(lambda f: f.exception() is None and f.result().shutdown())
            raise
        return cls(llm, stats)

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        try:
            text = self._tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja raises TemplateError subclasses, or ValueError without a template
            raise InvalidRequest(f"chat template failed: {exc}", param="messages") from exc
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=True))

    async def generate(
        self, prompt_ids: list[int], options: SamplingOptions, request_id: str
    ) -> AsyncIterator[EngineOutput]:
        from vllm.exceptions import VLLMClientError, VLLMError
        from vllm.v1.engine.exceptions import EngineDeadError

        params = self._sampling_params(options)
        (engine_input,) = self._llm.renderer.render_cmpl(
            [self._parse_prompt(self._llm.model_config, {"prompt_token_ids": prompt_ids})]
        )
        stream = self._llm.generate(engine_input, params, request_id)
        finished = False
        try:
            async for out in stream:
                finished = out.finished
                yield EngineOutput([self._delta(o, options) for o in out.outputs], finished)
        except VLLMClientError as exc:
            param = getattr(exc, "parameter", None)
            if param is None and params.structured_outputs is not None and "rammar" in str(exc):
                param = "response_format"  # the JSON schema did not compile
            raise InvalidRequest(str(exc), param=param) from exc
        except EngineDeadError as exc:  # 503, as for requests that arrive after: retry on another replica
            raise EngineDead("the inference engine died; this server is restarting, retry on another replica") from exc
        except VLLMError as exc:
            logger.error("generation failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            raise EngineFailure("generation failed") from exc
        finally:
            if not finished:
                # Client gone, or an error: free the slot and KV cache now. Shielded, because the caller may
                # itself be under cancellation (anyio re-cancels every await in a cancelled scope).
                task = asyncio.ensure_future(self._close_and_abort(stream, request_id))
                self._aborts.add(task)
                task.add_done_callback(self._aborts.discard)
                await asyncio.shield(task)

    async def _close_and_abort(self, stream: Any, request_id: str) -> None:
        try:
            await stream.aclose()
        finally:
            await self._llm.abort(request_id)

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    async def check_health(self) -> None:
        if self._llm.errored:
            raise EngineFailure("the inference engine is not running")

    def stats(self) -> EngineStats:
        return self._stats

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)
            # AsyncLLM.__del__ calls shutdown() again, at interpreter exit when the module globals it uses are
            # already None (a "TypeError ... ignored" on stderr). It is shut down: make the second call a no-op.
            llm.shutdown = lambda *args, **kwargs: None

    def _sampling_params(self, options: SamplingOptions) -> Any:
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        structured = None
        if options.json_schema is not None:
            structured = StructuredOutputsParams(json=options.json_schema)
        elif options.json_object:
            structured = StructuredOutputsParams(json_object=True)
        try:
            return SamplingParams(
                n=options.n,
                temperature=options.temperature,
                top_p=options.top_p,
                seed=options.seed,
                stop=list(options.stop) or None,
                presence_penalty=options.presence_penalty,
                frequency_penalty=options.frequency_penalty,
                top_k=options.top_k,
                min_p=options.min_p,
                repetition_penalty=options.repetition_penalty,
                logit_bias=dict(options.logit_bias) or None,
                max_tokens=options.max_tokens,
                logprobs=options.logprobs,
                ignore_eos=options.ignore_eos,
                structured_outputs=structured,
                output_kind=RequestOutputKind.DELTA,
            )
        except (VLLMClientError, ValueError) as exc:
            raise InvalidRequest(str(exc), param=getattr(exc, "parameter", None)) from exc

    @staticmethod
    def _delta(output: Any, options: SamplingOptions) -> ChoiceDelta:
        logprobs = None
        if options.logprobs is not None and output.logprobs is not None:
            logprobs = []
            for token_id, position in zip(output.token_ids, output.logprobs, strict=False):
                chosen = position[token_id]
                ranked = sorted((lp for lp in position.values() if lp.rank is not None), key=lambda lp: lp.rank)
                top = tuple((lp.decoded_token or "", lp.logprob) for lp in ranked[: options.logprobs])
                logprobs.append(TokenLogprob(chosen.decoded_token or "", chosen.logprob, top))
        finish = output.finish_reason if output.finish_reason in ("stop", "length") else None
        return ChoiceDelta(output.index, output.text, len(output.token_ids), logprobs, finish)


def _build_async_llm(config: ServeConfig, model_dir: Path, stats: EngineStats) -> Any:
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    # xgrammar reads the engine-wide whitespace setting (not the per-request flag of the same name), and vLLM only
    # accepts it with an explicit xgrammar or guidance backend.
    structured = (
        StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True) if config.json_compact else None
    )
    engine_args = dict(config.extra_engine_args)
    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu":
        # vLLM 0.32 on CPU kills its engine when a request that carries a `seed` has its prefill split across steps
        # ("CPU Generator does not use offset"): 32 concurrent seeded requests of ~130 tokens did it here. Whole
        # prefills avoid it; a long prompt then holds one step longer, which costs little at CPU batch sizes.
        engine_args.setdefault("enable_chunked_prefill", False)
    args = AsyncEngineArgs(
        model=str(model_dir),
        served_model_name=config.model_name,
        max_model_len=config.max_model_len,
        enforce_eager=config.enforce_eager,
        tensor_parallel_size=config.tensor_parallel_size,
        data_parallel_size=config.data_parallel_size,
        trust_remote_code=config.trust_remote_code,
        load_format="safetensors",
        structured_outputs_config=structured,
        **engine_args,
    )
    return AsyncLLM.from_engine_args(args, stat_loggers=[_stats_logger_class(stats)])


def _stats_logger_class(stats: EngineStats) -> type:
    """A vLLM stat logger that copies the scheduler's running/waiting/KV-usage figures into ``stats``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SchedulerStatsSink(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
            if scheduler_stats is None:
                return
            s = scheduler_stats
            stats.per_engine[engine_idx] = (s.num_running_reqs, s.num_waiting_reqs, s.kv_cache_usage)
            values = list(stats.per_engine.values())
            stats.running = sum(v[0] for v in values)
            stats.waiting = sum(v[1] for v in values)
            stats.kv_cache_usage = sum(v[2] for v in values) / len(values)

        def log_engine_initialized(self) -> None:
            pass

    return SchedulerStatsSink

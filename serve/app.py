"""The app factory: ``create_app(config, engine=None)``.

With no engine given, the lifespan starts vLLM in the background: the server answers /health ("starting")
and /ready (503) at once, and /ready turns 200 when the model is loaded (~20 s on the tiny model with
enforce_eager). Passing an engine (tests use a fake one) makes the app ready as soon as it starts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from orpo_deploy.core.manifest import MANIFEST_NAME, read_manifest, sha256_file
from orpo_deploy.serve.admission import AdmissionGate
from orpo_deploy.serve.auth import AuthMiddleware
from orpo_deploy.serve.config import ServeConfig
from orpo_deploy.serve.engine import Engine, EngineStats
from orpo_deploy.serve.errors import install_error_handlers
from orpo_deploy.serve.metrics import ServeMetrics
from orpo_deploy.serve.middleware import RequestContextMiddleware
from orpo_deploy.serve.routers import docs, feedback, generation, health, metrics, models
from orpo_deploy.serve.service import GenerationService

logger = logging.getLogger(__name__)


@dataclass
class ServeState:
    """Everything the routers reach through ``request.app.state.serve``."""

    config: ServeConfig
    metrics: ServeMetrics
    gate: AdmissionGate
    engine: Engine | None = None
    service: GenerationService | None = None
    provenance: dict[str, Any] | None = None
    fatal: BaseException | None = None
    started_at: float = field(default_factory=time.time)
    on_fatal: Callable[[], None] | None = None
    """Set by the CLI: stop the server (exit 1) when the engine cannot start or dies."""
    watchdog: asyncio.Task | None = None
    records: Any = None  # serve.records.RecordStore when --record is set
    model_sha: str | None = None  # sha256 of the served folder's orpo_manifest.json

    def attach(self, engine: Engine, model_dir: Path | None) -> None:
        self.engine = engine
        self.provenance = read_manifest(model_dir) if model_dir is not None and model_dir.is_dir() else None
        manifest = model_dir / MANIFEST_NAME if model_dir is not None else None
        self.model_sha = sha256_file(manifest) if manifest is not None and manifest.is_file() else None
        recorder = make_recorder(self) if self.records is not None else None
        self.service = GenerationService(engine, self.config, self.gate, self.metrics, recorder)

    def engine_stats(self) -> EngineStats:
        return self.engine.stats() if self.engine is not None else EngineStats()


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    state = ServeState(
        config=config,
        metrics=ServeMetrics(),
        gate=AdmissionGate(config.max_concurrency, config.max_queue, config.retry_after_seconds),
    )
    state.metrics.bind(lambda: state.gate.in_flight, lambda: state.gate.waiting, state.engine_stats)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starter = None
        if config.record:
            from orpo_deploy.serve.records import RecordError, RecordSettings, RecordStore, safe_url

            settings = RecordSettings(
                url=config.record, prompts=config.record_prompts, queue_size=config.record_queue,
                retention_days=config.record_retention_days, retention_count=config.record_retention_count,
            )  # fmt: skip
            try:
                state.records = await asyncio.to_thread(RecordStore, settings, state.metrics.records_dropped.inc)
            except RecordError as exc:
                state.fatal = exc
                logger.error("%s", exc)
                raise
            logger.info("recording completions", extra={"store": safe_url(config.record)})
        if engine is not None:
            state.attach(engine, Path(config.model) if config.model else None)
            state.watchdog = asyncio.create_task(watch_engine(state))
        else:
            starter = asyncio.create_task(_start_vllm(state))
        try:
            yield
        finally:
            for task in (starter, state.watchdog):
                if task is not None and not task.done():
                    task.cancel()
            if state.engine is not None and engine is None:
                await state.engine.shutdown()
                logger.info("engine stopped")
            if state.records is not None:
                await asyncio.to_thread(state.records.close)  # what is queued is written first

    app = FastAPI(
        title="orpo-serve",
        summary="OpenAI-compatible chat and text completions for an ORPO-trained model, on vLLM.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=None,  # served by routers.docs, behind the API key
        docs_url=None,
        redoc_url=None,
    )
    app.state.serve = state
    install_error_handlers(app)
    for module in (generation, models, health, metrics, docs, feedback):
        app.include_router(module.router)
    app.add_middleware(AuthMiddleware, config=config)  # inside CORS (preflights first), before any body is read
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=state.metrics,
        max_body_bytes=config.max_body_bytes,
        body_timeout=config.body_timeout_seconds,
    )
    return app


async def _start_vllm(state: ServeState) -> None:
    from orpo_deploy.core.models import resolve_model
    from orpo_deploy.serve.engine import VllmEngine

    started = time.perf_counter()
    try:
        model_dir = await asyncio.to_thread(resolve_model, state.config.model)
        engine = await VllmEngine.start(state.config, model_dir)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.fatal = exc
        logger.error("engine failed to start: %s: %s", type(exc).__name__, exc, exc_info=exc)
        if state.on_fatal is not None:
            state.on_fatal()
        return
    state.attach(engine, model_dir)
    state.watchdog = asyncio.create_task(watch_engine(state))
    freeze_startup_heap()
    logger.info(
        "engine ready",
        extra={
            "model": state.config.model_name,
            "max_model_len": engine.max_model_len,
            "startup_s": round(time.perf_counter() - started, 1),
        },
    )


# Time the in-flight requests get to receive their error event before a dead engine's process stops.
DEATH_GRACE_SECONDS = 2.0


async def watch_engine(state: ServeState) -> None:
    """Poll the engine; once it is dead, /ready and new requests answer 503 (``EngineDead``), in-flight ones end
    with an error event (vLLM raises in their streams), and after a short grace the process stops with exit 1
    so its supervisor (Kubernetes, systemd, the pipeline) restarts it, instead of a live process that fails
    every request."""
    from orpo_deploy.serve.errors import EngineFailure

    while True:
        await asyncio.sleep(state.config.engine_check_seconds)
        try:
            await state.engine.check_health()
        except EngineFailure as exc:
            state.fatal = exc
            logger.error("engine died (%s): answering 503 and stopping with exit 1", exc)
            await asyncio.sleep(DEATH_GRACE_SECONDS)
            if state.on_fatal is not None:
                state.on_fatal()
            return


def make_recorder(state: ServeState):
    """The service's hook for finished generations: one record per completion, queued (never awaited)."""
    from orpo_deploy.serve.logs import api_key_hash_var
    from orpo_deploy.serve.protocol import ChatCompletionRequest

    store, config = state.records, state.config

    def record(job, request_id: str, texts: dict[int, str], finish_reasons: list[str]) -> None:
        req = job.req
        chat = isinstance(req, ChatCompletionRequest)
        prompt = [{"role": m.role, "content": m.text()} for m in req.messages] if chat else req.prompt
        sampling = {"temperature": req.temperature, "top_p": req.top_p, "n": req.n, "seed": req.seed,
                    "max_tokens": job.options.max_tokens, "stop": list(req.stop_list())}  # fmt: skip
        choices = [{"index": i, "text": t} for i, t in sorted(texts.items())]
        completion_id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        store.submit(store.completion_record(completion_id, config.model_name, state.model_sha,
                                             api_key_hash_var.get(), prompt, sampling, choices))  # fmt: skip

    return record


def freeze_startup_heap() -> None:
    """Move every object alive after start-up into the collector's permanent generation (``gc.freeze``).

    Start-up leaves millions of long-lived objects (torch, transformers, vLLM's client) in the oldest generation,
    and the garbage of serving (chunks, dicts, per-request state) now and then triggers a full collection that
    walks all of them: a pause of every stream in the process. Measured with gc callbacks in orpo-serve on the
    tiny model: a full collection took 350-370 ms unfrozen, 1.1 ms frozen. vLLM's own server does the same
    after start-up (``freeze_gc_heap``).
    """
    gc.collect()
    gc.freeze()


async def drain(app: FastAPI, grace_seconds: float) -> bool:
    """Stop admitting requests (/ready -> 503), then wait up to ``grace_seconds`` for the admitted ones."""
    gate: AdmissionGate = app.state.serve.gate
    gate.begin_drain()
    logger.info("draining", extra={"in_flight": gate.in_flight, "waiting": gate.waiting, "grace_s": grace_seconds})
    drained = await gate.wait_idle(grace_seconds)
    logger.info("drained" if drained else "grace period over; stopping with requests in flight")
    return drained

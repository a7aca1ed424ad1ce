"""The one typed config of the serving stage: defaults < ``ORPO_SERVE_*`` environment variables < CLI flags.

Defaults that differ from vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``):

- ``host`` is 127.0.0.1, not all interfaces: exposing the server is an explicit choice (``--host 0.0.0.0``).
- ``kv_cache_gib`` is 1 (vLLM CPU reserves 4 GiB by default via ``VLLM_CPU_KVCACHE_SPACE``).
- ``max_tokens_cap`` bounds every request (vLLM lets one request ask for the whole context).
- ``max_concurrency``/``max_queue`` answer 429 when full (vLLM queues without bound by default).
- ``json_compact`` forbids free whitespace in JSON modes: small models otherwise spend the whole token budget on
  indentation (measured on the tiny model: 40 tokens of newlines after ``{"a"``); compact JSON is still JSON.
- Only safetensors weights are loaded (vLLM would also unpickle ``.bin`` files), and no remote code by default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from orpo_deploy.core.errors import ConfigError
from orpo_deploy.core.models import BUNDLED_NAME, TINY_NAME

ENV_PREFIX = "ORPO_SERVE_"
MIN_KEY_CHARS = 32  # a key is a secret, not a password: `openssl rand -hex 16` gives 32 characters
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    model: str | None = None
    """Model folder or bundled name (``smollm2-135m-instruct``, ``tiny-smollm2``); None means the bundled one."""
    served_model_name: str | None = None
    """The ``model`` id clients send and /v1/models lists; defaults to the bundled name or the folder's name."""
    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = 8000
    """TCP port to bind."""
    api_keys: tuple[str, ...] = ()
    """Accepted Bearer keys (at least 32 characters each); empty disables auth, allowed on loopback only unless
    allow_unauthenticated. Pass them as ORPO_SERVE_API_KEYS or in api_key_file: a --api-key on a command line is
    visible to every local user in `ps`."""
    api_key_file: str | None = None
    """A file of accepted keys, one per line (blank lines and # comments skipped), added to api_keys."""
    metrics_keys: tuple[str, ...] = ()
    """Keys that open /metrics and nothing else (a Prometheus scraper's); setting one requires a key on /metrics."""
    metrics_auth: bool = False
    """Require an API key on /metrics too (/health and /ready never need one)."""
    allow_unauthenticated: bool = False
    """Allow binding a non-loopback host with no API key (refused otherwise)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS; empty means CORS is off."""
    max_model_len: int | None = None
    """Context length (prompt + completion tokens); None takes the model's."""
    max_concurrency: int = 64
    """Requests generating at once; more wait in the queue."""
    max_queue: int = 256
    """Requests allowed to wait for a slot; beyond this the server answers 429 with Retry-After."""
    retry_after_seconds: int = 1
    """The Retry-After value sent with 429."""
    max_tokens_cap: int = 2048
    """Largest max_tokens a request may ask for (400 above it)."""
    max_request_tokens: int = 8192
    """Largest n x max_tokens of one request (400 above it): what one request may make the engine generate."""
    max_logprob_entries: int = 32768
    """Largest n x max_tokens x (top_logprobs + 1) of one request: bounds the size of a logprobs response."""
    allow_benchmark_params: bool = False
    """Accept ``ignore_eos`` (a benchmarking switch that makes every request run to max_tokens)."""
    max_prompt_chars: int | None = None
    """Largest prompt in characters, refused before tokenising; None = 32 x the context length in tokens."""
    tokenizer_threads: int = 2
    """Threads that tokenise prompts, off the event loop."""
    header_timeout_seconds: float = 10.0
    """A connection must deliver a request's headers within this many seconds, or it is closed (serve/http.py)."""
    body_timeout_seconds: float = 10.0
    """A request body must arrive within this many seconds of the first byte read (408 otherwise): a client that
    announces a large body and stalls does not hold a connection and its buffer."""
    max_connections: int = 1024
    """Open connections beyond which new ones get 503 at once (uvicorn's limit_concurrency)."""
    max_requests_per_key: int | None = None
    """Generation requests one API key may have in flight (429 beyond); None = no per-key cap."""
    stream_write_timeout_seconds: float = 30.0
    """A streaming client that reads nothing for this long is dropped and its generation aborted."""
    engine_check_seconds: float = 1.0
    """How often the engine's health is polled; a dead engine turns /ready 503 and stops the process (exit 1)."""
    max_body_bytes: int = 2 * 1024 * 1024
    """Largest request body (413 above it)."""
    kv_cache_gib: int = 1
    """KV cache size on CPU, in GiB (sets VLLM_CPU_KVCACHE_SPACE when unset)."""
    enforce_eager: bool = False
    """Skip torch.compile/graph capture: faster start-up (~20 s vs ~30 s on the tiny model), slower decode."""
    tensor_parallel_size: int = 1
    """vLLM tensor parallelism."""
    data_parallel_size: int = 1
    """vLLM data parallelism (engine replicas)."""
    trust_remote_code: bool = False
    """Allow model folders to run their own Python code."""
    grace_seconds: float = 30.0
    """After SIGTERM: how long in-flight requests may run before the server stops anyway."""
    json_compact: bool = True
    """Forbid free whitespace in JSON output modes (see the module docstring)."""
    log_prompts: bool = False
    """Log prompt text (off: prompts may hold personal data)."""
    log_level: str = "info"
    """Level for this server's JSON logs."""
    record: str | None = None
    """Record every completion in this store (serve/records.py): sqlite:///path.db or postgresql+psycopg://...;
    enables POST /v1/feedback and DELETE /v1/records. Off by default."""
    record_prompts: str = "full"
    """What is kept of prompts: full, hash (a sha256 only) or redact (roles and lengths)."""
    record_queue: int = 1024
    """Records waiting for the writer; beyond it records are dropped and counted, requests never wait."""
    record_retention_days: float | None = None
    """Delete records older than this many days; None = keep."""
    record_retention_count: int | None = None
    """Keep at most this many records (the newest); None = all."""
    extra_engine_args: dict[str, Any] = field(default_factory=dict)
    """Further vllm AsyncEngineArgs fields (code only, e.g. the benchmark)."""

    def __post_init__(self) -> None:
        positive = ("max_concurrency", "retry_after_seconds", "max_tokens_cap", "max_body_bytes", "kv_cache_gib")
        positive += ("max_request_tokens", "max_logprob_entries", "tokenizer_threads", "max_connections")
        for name in (
            "header_timeout_seconds",
            "body_timeout_seconds",
            "stream_write_timeout_seconds",
            "engine_check_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_requests_per_key is not None and self.max_requests_per_key < 1:
            raise ConfigError(f"max_requests_per_key must be >= 1 or empty, got {self.max_requests_per_key}")
        for name in positive + ("tensor_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ConfigError(f"max_model_len must be >= 16, got {self.max_model_len}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.grace_seconds < 0:
            raise ConfigError(f"grace_seconds must be >= 0, got {self.grace_seconds}")
        if self.api_key_file:
            self.api_keys = tuple(self.api_keys) + read_key_file(self.api_key_file)
        for key in self.api_keys + self.metrics_keys:
            if not key or any(c.isspace() for c in key):
                raise ConfigError("API keys must be non-empty and contain no whitespace")
            if len(key) < MIN_KEY_CHARS or key.lower().startswith("replace-me"):
                raise ConfigError(
                    f"an API key must be at least {MIN_KEY_CHARS} random characters and not a placeholder "
                    "(e.g. `openssl rand -hex 16`)"
                )
        if not self.api_keys and self.host not in LOOPBACK and not self.allow_unauthenticated:
            raise ConfigError(
                f"refusing to listen on {self.host} without an API key: set ORPO_SERVE_API_KEYS or api_key_file "
                "(or allow_unauthenticated, if something in front of this server authenticates)"
            )
        if self.record_prompts not in ("full", "hash", "redact"):
            raise ConfigError(f"record_prompts must be full, hash or redact, got {self.record_prompts!r}")
        if self.record_queue < 1:
            raise ConfigError(f"record_queue must be >= 1, got {self.record_queue}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error, got {self.log_level!r}")

    @property
    def model_name(self) -> str:
        """The id clients use for this model."""
        if self.served_model_name:
            return self.served_model_name
        if self.model is None:
            return BUNDLED_NAME
        if self.model in (BUNDLED_NAME, TINY_NAME):
            return self.model
        return Path(self.model).name or str(self.model)

    def replace(self, **changes: Any) -> ServeConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeConfig:
        """Defaults, then ``ORPO_SERVE_<FIELD>`` variables, then ``overrides`` (the CLI flags that were given)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or f.name == "extra_engine_args":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values)


def read_key_file(path: str) -> tuple[str, ...]:
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"api_key_file {path}: {exc.strerror or exc}") from None
    keys = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise ConfigError(f"api_key_file {path} holds no key")
    return keys


def _parse(name: str, type_: Any, raw: str) -> Any:
    """One environment variable as the field's type (dataclass field types are strings here)."""
    type_name = str(type_)
    try:
        if type_name.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if type_name == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if type_name.startswith("int"):
            return None if raw.lower() in ("", "none") and "None" in type_name else int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type_name}") from None
    if type_name == "str | None" and raw == "":
        return None
    return raw


def check_servable_model_dir(model_dir: Path) -> None:
    """Refuse folders whose weights are only pickles: unpickling can run arbitrary code."""
    names = [p.name for p in model_dir.iterdir()] if model_dir.is_dir() else []
    if any(n.endswith(".safetensors") for n in names):
        return
    if any(n.endswith((".bin", ".pt", ".pth")) for n in names):
        raise ConfigError(f"{model_dir}: only pickle (.bin/.pt) weights; convert them to safetensors to serve")
    raise ConfigError(f"{model_dir}: no .safetensors weights found")

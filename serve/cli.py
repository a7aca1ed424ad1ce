"""``orpo-serve``: serve a model folder over an OpenAI-style HTTP API.

    orpo-serve --model DIR [--port 8000] [--api-key KEY ...] [--max-model-len 2048] [--enforce-eager]

Settings come from defaults < ``ORPO_SERVE_*`` environment variables < these flags (see serve/config.py).
SIGTERM or Ctrl-C: /ready turns 503, new requests get 503, in-flight ones may finish within --grace-seconds,
then the server exits 0. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from types import FrameType

import uvicorn

from orpo_deploy.core.cli import ArgumentParser, UsageError
from orpo_deploy.core.models import ModelError, resolve_model
from orpo_deploy.serve.config import LOOPBACK, ConfigError, ServeConfig, check_servable_model_dir

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="orpo-serve", description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    p.add_argument("--model", help="model folder or bundled name (default: smollm2-135m-instruct)")
    p.add_argument("--served-model-name", help="the model id clients send (default: the model's name)")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument(
        "--api-key", dest="api_keys", action="append",
        help="accepted Bearer key; repeatable. Visible in `ps`: prefer ORPO_SERVE_API_KEYS or --api-key-file",
    )  # fmt: skip
    p.add_argument("--api-key-file", help="file of accepted keys, one per line (the recommended way)")
    p.add_argument("--metrics-key", dest="metrics_keys", action="append", help="a key that opens /metrics only")
    p.add_argument(
        "--allow-unauthenticated", action="store_true", help="allow a non-loopback --host without any API key"
    )
    p.add_argument("--max-model-len", type=int, help="context length in tokens (default: the model's)")
    p.add_argument("--max-concurrency", type=int, help="requests generating at once (default 64)")
    p.add_argument("--max-queue", type=int, help="requests waiting for a slot before 429 (default 256)")
    p.add_argument("--max-tokens-cap", type=int, help="largest max_tokens a request may ask (default 2048)")
    p.add_argument("--max-request-tokens", type=int, help="largest n x max_tokens of one request (default 8192)")
    p.add_argument("--max-logprob-entries", type=int, help="largest n x max_tokens x (top_logprobs+1) (default 32768)")
    p.add_argument("--allow-benchmark-params", action="store_true", help="accept ignore_eos (benchmarks only)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 2 MiB)")
    p.add_argument("--header-timeout-seconds", type=float, help="request headers must arrive within this (10)")
    p.add_argument("--body-timeout-seconds", type=float, help="a body must arrive within this (default 10; 408)")
    p.add_argument("--max-connections", type=int, help="open connections before 503 (default 1024)")
    p.add_argument("--max-requests-per-key", type=int, help="generation requests in flight per key (429 beyond)")
    p.add_argument("--stream-write-timeout-seconds", type=float, help="drop a stream not read for this long (30)")
    p.add_argument("--record", help="record completions in this store: sqlite:///file.db or postgresql+psycopg://...")
    p.add_argument("--record-prompts", choices=["full", "hash", "redact"], help="what is kept of prompts (full)")
    p.add_argument("--record-retention-days", type=float, help="delete records older than this")
    p.add_argument("--record-retention-count", type=int, help="keep at most this many records")
    p.add_argument("--max-prompt-chars", type=int, help="prompt characters refused untokenised (32 x context)")
    p.add_argument("--kv-cache-gib", type=int, help="CPU KV cache in GiB (default 1)")
    p.add_argument("--enforce-eager", action="store_true", help="no torch.compile: faster start, slower decode")
    p.add_argument("--tensor-parallel-size", type=int, help="vLLM tensor parallelism (default 1)")
    p.add_argument("--data-parallel-size", type=int, help="vLLM data parallelism (default 1)")
    p.add_argument("--metrics-auth", action="store_true", help="require an API key on /metrics")
    p.add_argument("--cors-origin", dest="cors_origins", action="append", help="allowed CORS origin; repeatable")
    p.add_argument("--trust-remote-code", action="store_true", help="let the model folder run its own code")
    p.add_argument("--grace-seconds", type=float, help="drain time after SIGTERM (default 30)")
    p.add_argument("--log-prompts", action="store_true", help="log prompt text (off by default)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level (default info)")
    return p


def parse_config(argv: list[str] | None) -> ServeConfig:
    flags = vars(build_parser().parse_args(argv))
    for name in ("api_keys", "cors_origins", "metrics_keys"):
        if name in flags:
            flags[name] = tuple(flags[name])
    return ServeConfig.from_env(**flags)


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(argv)
        model_dir = resolve_model(config.model)
        check_servable_model_dir(model_dir)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (UsageError, ConfigError, ModelError) as exc:
        print(f"orpo-serve: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unreadable model folder or file: say which, no traceback
        print(f"orpo-serve: error: cannot read the model: {exc}", file=sys.stderr)
        return 2

    from orpo_deploy.serve.app import create_app
    from orpo_deploy.serve.http import protocol_with_header_timeout
    from orpo_deploy.serve.logs import configure_logging

    configure_logging(config.log_level)
    if not config.api_keys and config.host not in LOOPBACK:
        logger.warning("no API key set while listening on %s: anyone who can reach it can use it", config.host)
    app = create_app(config)
    server = DrainingServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            limit_concurrency=config.max_connections,  # 503 for connections beyond it
            timeout_keep_alive=5,
            http=protocol_with_header_timeout(config.header_timeout_seconds),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
        ),
        app,
        config.grace_seconds,
    )
    state = app.state.serve
    state.on_fatal = server.stop_now
    server.run()
    return 1 if state.fatal is not None else 0


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains (see ``serve.app.drain``) before stopping.

    uvicorn would close the listening socket at once and, after shutdown, re-raise the signal (so the
    process would end by SIGTERM rather than exit 0). Here /ready answers 503 during the drain, so a load
    balancer still polling sees it, and the process exits 0.
    """

    def __init__(self, config: uvicorn.Config, app, grace_seconds: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_seconds = grace_seconds
        self._draining = False
        self._drain_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None or not self.started:
            logger.info("signal %s: stopping now", signal.Signals(sig).name)
            self.force_exit = self._draining
            self.stop_now()
            return
        self._draining = True
        logger.info("signal %s: draining for up to %.0f s", signal.Signals(sig).name, self.grace_seconds)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        from orpo_deploy.serve.app import drain

        async def drain_then_exit() -> None:
            await drain(self.app, self.grace_seconds)
            self.should_exit = True

        self._drain_task = asyncio.ensure_future(drain_then_exit())

    def stop_now(self) -> None:
        self.should_exit = True

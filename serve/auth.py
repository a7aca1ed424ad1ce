"""API keys: which keys a path accepts, constant-time matching, and the ASGI middleware that checks the key from the
headers *before any body is read* (FastAPI reads a body before it resolves dependencies, so a route dependency
alone lets an unauthenticated client make the server buffer up to ``max_body_bytes`` per connection).

Key kinds: ``api_keys`` open every route; ``metrics_keys`` open ``/metrics`` only (what a Prometheus scraper
needs, and nothing more). ``/health`` and ``/ready`` never need a key (probes); ``/metrics`` does when
``metrics_auth`` is on or a metrics key is configured.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from orpo_deploy.serve.config import ServeConfig
from orpo_deploy.serve.errors import Overloaded, Unauthorized, error_response
from orpo_deploy.serve.logs import api_key_hash_var

PUBLIC_PATHS = ("/health", "/ready")
GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")


def key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """Compare with every key in constant time per key, without stopping at the first match."""
    given_bytes = given.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given_bytes, key.encode())
    return matched


def keys_for(config: ServeConfig, path: str) -> tuple[str, ...] | None:
    """The keys that open ``path``; None when it is open to all (no keys configured, or a public path)."""
    if path in PUBLIC_PATHS:
        return None
    if path == "/metrics":
        if not (config.metrics_auth or config.metrics_keys):
            return None
        return (config.api_keys + config.metrics_keys) or None
    return config.api_keys or None


def check_key(config: ServeConfig, path: str, authorization: str | None) -> None:
    """Raise ``Unauthorized`` unless ``authorization`` (the header's value) carries a key that opens ``path``."""
    keys = keys_for(config, path)
    if keys is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
    if not key_matches(token.strip(), keys):
        raise Unauthorized("invalid API key")


class AuthMiddleware:
    """Answers 401 from the request line and headers alone; the body of a refused request is never read.

    With ``max_requests_per_key``, a key with that many generation requests in flight (streams included, until
    their last byte) gets 429: one client cannot take every slot of the shared queue.
    """

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.config = config
        self.in_flight: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":  # CORS preflights carry no key
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        path = scope.get("path", "")
        try:
            check_key(self.config, path, header)
        except Unauthorized as exc:
            await error_response(exc)(scope, receive, send)
            return
        token = header.partition(" ")[2].strip() if header else ""
        api_key_hash_var.set(hashlib.sha256(token.encode()).hexdigest() if token else None)
        cap = self.config.max_requests_per_key
        if cap is None or path not in GENERATION_PATHS or not header:
            await self.app(scope, receive, send)
            return
        key = header.partition(" ")[2].strip()
        if self.in_flight.get(key, 0) >= cap:
            err = Overloaded(
                f"this API key has {cap} requests in flight, its limit; retry later",
                retry_after=self.config.retry_after_seconds,
            )
            await error_response(err)(scope, receive, send)
            return
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[key] -= 1
            if not self.in_flight[key]:
                del self.in_flight[key]

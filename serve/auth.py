"""API keys: which keys a path accepts, constant-time matching, and the ASGI middleware that checks the key from the
headers *before any body is read* (FastAPI reads a body before it resolves dependencies, so a route dependency
alone lets an unauthenticated client make the server buffer up to ``max_body_bytes`` per connection).

Key kinds: ``api_keys`` open every route; ``metrics_keys`` open ``/metrics`` only (what a Prometheus scraper
needs, and nothing more). ``/health`` and ``/ready`` never need a key (probes); ``/metrics`` does when
``metrics_auth`` is on or a metrics key is configured.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from serve.config import ServeConfig
from serve.errors import Unauthorized, error_response

PUBLIC_PATHS = ("/health", "/ready")


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
    """Answers 401 from the request line and headers alone; the body of a refused request is never read."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") != "OPTIONS":  # CORS preflights carry no key
            header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
            try:
                check_key(self.config, scope.get("path", ""), header)
            except Unauthorized as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)

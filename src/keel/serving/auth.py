"""API keys of the model server: prediction keys, and admin keys for deployment changes.

Keys are configured hashed (``sha256:<hex>``, from ``hash_api_key``), so keel.yaml or the
environment never holds a usable key; a plain value is accepted too and hashed at start, never
kept. A client sends its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. With no
key configured the server is open. Health, readiness, metrics and the API description are always
open (probes and scrapers carry no key); admin routes need an admin key (401 without a known
key, 403 with a prediction key); every other route takes either kind.

    keys = ApiKeys.from_values(predict=[hash_api_key("s3cret")], admin=[])
    keys.role_of("s3cret")     # 'predict'
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from keel.errors import ConfigError

PREFIX = "sha256:"
OPEN_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc", "/v2", "/v2/health/live"}
    | {"/v2/health/ready"}
)
ADMIN_PREFIXES = ("/v1/admin/", "/v1/deployments")


def hash_api_key(key: str) -> str:
    """The form to configure a key in: ``sha256:`` and the hex digest of the key.

    >>> hash_api_key("s3cret")[:15]
    'sha256:1ec1c26'
    """
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def _stored(value: str) -> bytes:
    if value.startswith(PREFIX):
        digest = value[len(PREFIX) :]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(
                f"API key hash {value[:20]!r}... is not sha256: and 64 lowercase hex digits; "
                "make one with keel.serving.auth.hash_api_key"
            )
        return bytes.fromhex(digest)
    if not value:
        raise ConfigError("an empty API key is configured; remove it or set a real key")
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True)
class ApiKeys:
    """The sha256 digests of the prediction and admin keys."""

    predict: tuple[bytes, ...] = ()
    admin: tuple[bytes, ...] = ()

    @classmethod
    def from_values(cls, predict: Iterable[str], admin: Iterable[str]) -> ApiKeys:
        return cls(tuple(_stored(v) for v in predict), tuple(_stored(v) for v in admin))

    @property
    def enabled(self) -> bool:
        return bool(self.predict or self.admin)

    def role_of(self, key: str | None) -> str | None:
        """``"admin"``, ``"predict"`` or None for a key this server does not know."""
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        # Compare against every key (no early exit), so timing tells nothing about which.
        admin = sum(hmac.compare_digest(digest, d) for d in self.admin) > 0
        predict = sum(hmac.compare_digest(digest, d) for d in self.predict) > 0
        return "admin" if admin else "predict" if predict else None


class ApiKeyMiddleware:
    """Refuse requests without a suitable key with 401 or 403 and a message saying why."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.keys.enabled or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        role = self.keys.role_of(_presented(scope))
        if role is None:
            await _deny(
                send,
                401,
                "a valid API key is required; send it as 'Authorization: Bearer KEY' or "
                "'X-API-Key: KEY'",
            )
            return
        if role != "admin" and path.startswith(ADMIN_PREFIXES):
            await _deny(
                send,
                403,
                "this API key may request predictions but not change deployments; use an admin key",
            )
            return
        await self.app(scope, receive, send)


def _presented(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return bytes(value).decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return None


async def _deny(send: Send, status: int, message: str) -> None:
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="keel"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})

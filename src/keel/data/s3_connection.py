"""How Keel reaches an S3 endpoint: s3fs's botocore client (made on first use) and, for an
S3-compatible endpoint, the lean signed client of keel.data.s3http with the same endpoint,
region and credentials. When a remote's options name the endpoint and the keys outright, the
lean client opens without s3fs or botocore (about 0.3 s of imports and set-up per command)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from keel.errors import StoreError

if TYPE_CHECKING:
    from keel.data.remote import Remote
    from keel.data.s3_signing import Credentials
    from keel.data.s3http import ObjectClient


class S3Connection:
    """The clients of one remote's bucket: ``objects`` (the lean client, None where botocore
    carries everything: AWS, or ``fast=False``) and ``fs`` (s3fs, None until needed)."""

    def __init__(self, remote: Remote, bucket: str, *, fast: bool) -> None:
        self.remote = remote
        self.bucket = bucket
        self.fast = fast
        self.fs: Any = None
        self.objects: ObjectClient | None = None
        self._frozen: tuple[float, Credentials] | None = None

    async def open(self) -> None:
        """Open the lean client (and s3fs first, unless the options hold all it needs)."""
        settings = explicit_settings(self.remote.options) if self.fast else None
        if settings is not None:
            # Endpoint and keys are all in the options: the lean client needs no botocore
            # session (importing s3fs and building one costs about 0.3 s per command); s3fs
            # opens only when a call needs it (deletes, multipart uploads).
            endpoint, region, credentials = settings
            self.objects = await self._open_objects(endpoint, region, lambda: credentials)
            return
        client = await self.botocore()
        if self.fast:
            self.objects = await self._object_client(client)

    async def botocore(self) -> Any:
        """s3fs's botocore client (s3fs's filesystem made on first use)."""
        if self.fs is not None:
            return await self.fs.set_session()
        try:
            import s3fs
        except ImportError as exc:
            raise StoreError(
                f"{self.remote.describe()} needs s3fs, which is not installed (pip install s3fs)"
            ) from exc
        options = dict(self.remote.options)
        config = {
            "max_pool_connections": max(10, self.remote.jobs * 2),
            "request_checksum_calculation": "when_required",  # we send sha256 ourselves
            "response_checksum_validation": "when_required",  # pulls hash every object
            **dict(options.pop("config_kwargs", None) or {}),
        }
        self.fs = s3fs.S3FileSystem(
            asynchronous=True,
            skip_instance_cache=True,
            loop=asyncio.get_running_loop(),
            config_kwargs=config,
            **options,
        )
        return await self.fs.set_session()

    async def _object_client(self, client: Any) -> ObjectClient | None:
        endpoint = str(client.meta.endpoint_url)
        if is_aws(endpoint):
            return None
        anonymous = bool(getattr(self.fs, "anon", False))
        source = getattr(client._request_signer, "_credentials", None)
        if source is None and not anonymous:
            return None  # botocore raises its own clear "no credentials" error
        region = client.meta.region_name or "us-east-1"
        credentials = (lambda: None) if anonymous else (lambda: self._credentials(source))
        return await self._open_objects(endpoint, region, credentials)

    async def _open_objects(
        self, endpoint: str, region: str, credentials: Callable[[], Any]
    ) -> ObjectClient:
        from keel.data.s3http import ObjectClient

        objects = ObjectClient(
            endpoint,
            self.bucket,
            region,
            credentials,
            connections=max(self.remote.jobs, 1),
            ssl=self._ssl(),
        )
        await objects.open()
        return objects

    def _ssl(self) -> Any:
        """TLS verification as botocore's ``verify`` option says: False, a CA bundle, or
        the default (None)."""
        verify = dict(self.remote.options.get("client_kwargs") or {}).get("verify")
        if verify is False:
            return False
        if isinstance(verify, str):
            import ssl

            return ssl.create_default_context(cafile=verify)
        return None

    async def _credentials(self, source: Any) -> Credentials:
        from keel.data.s3_signing import Credentials

        # Refreshable credentials (roles, SSO) are re-read every minute, not per request.
        if self._frozen is None or time.monotonic() - self._frozen[0] > 60:
            frozen = source.get_frozen_credentials()
            if asyncio.iscoroutine(frozen):
                frozen = await frozen
            creds = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
            self._frozen = (time.monotonic(), creds)
        return self._frozen[1]

    async def close(self) -> None:
        if self.objects is not None:
            await self.objects.close()
        creator = getattr(self.fs, "_s3creator", None)
        if creator is not None:
            await creator.__aexit__(None, None, None)

    async def call(self, method: str, **kwargs: Any) -> Any:
        """One botocore call through s3fs (which translates errors, e.g. FileNotFoundError)."""
        await self.botocore()
        return await self.fs._call_s3(method, **kwargs)

    async def filesystem(self) -> Any:
        """s3fs's async filesystem, made on first use."""
        await self.botocore()
        return self.fs


def is_aws(endpoint: str) -> bool:
    """Whether ``endpoint`` is AWS itself (which keeps botocore for object bodies too)."""
    return (urlsplit(endpoint).hostname or "").endswith("amazonaws.com")


def explicit_settings(options: Mapping[str, Any]) -> tuple[str, str, Credentials] | None:
    """(endpoint, region, credentials) when the remote's options name an S3-compatible
    endpoint and its keys outright — nothing for botocore to look up — else None."""
    from keel.data.s3_signing import Credentials

    client_kwargs = dict(options.get("client_kwargs") or {})
    endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
    key, secret, token = options.get("key"), options.get("secret"), options.get("token")
    plain = all(isinstance(value, str) and value for value in (endpoint, key, secret))
    if not plain or options.get("anon") or options.get("profile") or is_aws(str(endpoint)):
        return None
    region = (
        client_kwargs.get("region_name")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    return str(endpoint), str(region), Credentials(str(key), str(secret), token or None)

"""A lean signed HTTP client for S3 object bodies (PUT and GET) and listings.

botocore spends about a millisecond of CPU on every request (endpoint rules, parameter
validation, event hooks, response parsing); moving ten thousand 40 KB objects that way is
CPU-bound at a few hundred objects per second — and its XML parser takes about 0.3 s per
listing page of 1,000 keys. This client signs requests itself (AWS Signature Version 4, header
form), sends them with aiohttp and reads listings with ElementTree, at a fraction of that cost.
Existence checks and deletes stay on botocore (few requests). Credentials, region
and endpoint come from the botocore client s3fs built, so every way botocore finds
credentials (options, environment, profiles, roles) still applies.

The payload hash that SigV4 signs is the object's sha256 — its name — so signing costs no
pass over the data; ``x-amz-checksum-sha256`` makes the server verify the body as well.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import aiohttp

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
RETRYABLE = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 5
STREAM_CHUNK = 1 << 20
# Left out of the signature: a proxy may rewrite them, and the checksum covers the body.
UNSIGNED = frozenset({"content-length", "content-type"})
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


class S3ResponseError(Exception):
    """A non-success answer from the server: HTTP ``status`` with S3's error ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


class Signer:
    """AWS Signature Version 4 (header form) for S3 requests; every header passed is signed
    except those in UNSIGNED.

    >>> Signer("us-east-1").headers("GET", "127.0.0.1:8333", "/b/k", {}, EMPTY_SHA256,
    ...                              Credentials("AKID", "secret"))["Authorization"][:16]
    'AWS4-HMAC-SHA256'
    """

    def __init__(self, region: str) -> None:
        self.region = region
        self._keys: dict[tuple[str, str], bytes] = {}

    def headers(
        self,
        method: str,
        host: str,
        path: str,
        extra: dict[str, str],
        payload_sha256: str,
        credentials: Credentials | None,
        *,
        query: dict[str, str] | None = None,
        now: float | None = None,
    ) -> dict[str, str]:
        """``extra`` plus the headers that authenticate the request (none when anonymous)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        headers = {**extra, "Host": host, "x-amz-content-sha256": payload_sha256}
        if credentials is None:
            return headers
        headers["x-amz-date"] = stamp
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        signed = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
        names = sorted(n for n in signed if n not in UNSIGNED)
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query(query or {}),
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                payload_sha256,
            ]
        )
        scope = f"{stamp[:8]}/{self.region}/s3/aws4_request"
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
        key = self._key(credentials.secret_key, stamp[:8])
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers

    def _key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is None:
            key = f"AWS4{secret}".encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, day): key}  # one day's key is all that is ever needed
            cached = key
        return cached


def canonical_query(query: dict[str, str]) -> str:
    """A query string as SigV4 signs it — and as it is sent: names sorted, every character
    but ``A-Za-z0-9-_.~`` percent-encoded (``/`` too)."""
    return "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(query.items())
    )


@dataclass(frozen=True)
class ListPage:
    """One page of a listing: (key, size) pairs, and the token of the next page if any."""

    objects: list[tuple[str, int]]
    next_token: str | None


class ObjectClient:
    """PUT and GET of whole objects at ``endpoint/bucket/key`` (path-style addressing), and
    listings of the bucket."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        region: str,
        credentials: Callable[[], Any],
        *,
        connections: int,
        ssl: Any = None,
    ) -> None:
        parts = urlsplit(endpoint)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.netloc
        self.base = f"{parts.path.rstrip('/')}/{quote(bucket, safe='')}"
        self.signer = Signer(region)
        self._credentials = credentials
        self._connections = connections
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl),
            auto_decompress=False,  # the stored bytes, exactly: they are hashed
            skip_auto_headers=("Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
            # HTTP(S)_PROXY / NO_PROXY as botocore honours them; only when one is set, as
            # aiohttp then looks them (and ~/.netrc) up on a thread for every request.
            trust_env=any(os.environ.get(name) for name in PROXY_VARIABLES),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def put(
        self,
        key: str,
        src: Path | bytes,
        sha256: str,
        size: int,
        advance: Callable[[int], None],
    ) -> str | None:
        """Upload ``src`` (a file, or bytes in memory) as ``key``; the server checks the body
        against ``sha256``. Returns the checksum the server echoed (None when it ignores
        checksums)."""
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        extra = {
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
            "x-amz-checksum-sha256": checksum,
        }
        stream = None if isinstance(src, bytes) or size <= STREAM_CHUNK else src
        data = None if stream is not None else src if isinstance(src, bytes) else src.read_bytes()
        small = stream is None
        error: BaseException
        for attempt in range(ATTEMPTS):
            sent = [0]
            body: Any = data if stream is None else _file_chunks(stream, sent, advance)
            try:
                headers = await self._signed("PUT", key, extra, sha256)
                async with self._http().put(self._url(key), data=body, headers=headers) as resp:
                    payload = await resp.read()
                    if resp.status == 200:
                        if small:
                            advance(size)
                        return resp.headers.get("x-amz-checksum-sha256")
                    error = _error(resp.status, payload)
            except (TimeoutError, OSError, _client_errors()) as exc:
                error = exc
            advance(-sent[0])  # a retry sends the bytes again
            await _retry_or_raise(error, attempt)
        raise AssertionError("unreachable")  # pragma: no cover - _retry_or_raise raised

    async def get(self, key: str, dest: Path, advance: Callable[[int], None]) -> str:
        """Download ``key`` into the local file ``dest``; returns the sha256 of the bytes
        written (hashed as they arrive, so the file need not be read back)."""
        error: BaseException
        for attempt in range(ATTEMPTS):
            written = 0
            try:
                headers = await self._signed("GET", key, {}, EMPTY_SHA256)
                async with self._http().get(self._url(key), headers=headers) as resp:
                    if resp.status != 200:
                        error = _error(resp.status, await resp.read())
                    else:
                        digest = hashlib.sha256()
                        with open(dest, "wb") as out:
                            async for chunk in resp.content.iter_any():
                                digest.update(chunk)
                                out.write(chunk)
                                written += len(chunk)
                                advance(len(chunk))
                        return digest.hexdigest()
            except (TimeoutError, OSError, _client_errors()) as exc:
                error = exc
            advance(-written)
            await _retry_or_raise(error, attempt)
        raise AssertionError("unreachable")  # pragma: no cover - _retry_or_raise raised

    async def get_range(self, key: str, start: int, length: int | None) -> bytes:
        """``length`` bytes of ``key`` from ``start`` (to the end when None), in memory."""
        wanted = f"bytes={start}-" + ("" if length is None else str(start + length - 1))
        extra = {} if start == 0 and length is None else {"Range": wanted}
        error: BaseException
        for attempt in range(ATTEMPTS):
            try:
                headers = await self._signed("GET", key, extra, EMPTY_SHA256)
                async with self._http().get(self._url(key), headers=headers) as resp:
                    payload = await resp.read()
                    if resp.status in (200, 206):
                        return payload
                    error = _error(resp.status, payload)
            except (TimeoutError, OSError, _client_errors()) as exc:
                error = exc
            await _retry_or_raise(error, attempt)
        raise AssertionError("unreachable")  # pragma: no cover - _retry_or_raise raised

    async def list_page(self, prefix: str, limit: int, token: str | None = None) -> ListPage:
        """Up to ``limit`` keys under ``prefix`` (ListObjectsV2), from ``token`` on."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(limit)}
        if token is not None:
            query["continuation-token"] = token
        error: BaseException
        for attempt in range(ATTEMPTS):
            try:
                headers = await self._signed("GET", "", {}, EMPTY_SHA256, query)
                url = self._url("", query)
                async with self._http().get(url, headers=headers) as resp:
                    payload = await resp.read()
                    if resp.status == 200:
                        return _list_page(payload)
                    error = _error(resp.status, payload)
            except (TimeoutError, OSError, _client_errors()) as exc:
                error = exc
            await _retry_or_raise(error, attempt)
        raise AssertionError("unreachable")  # pragma: no cover - _retry_or_raise raised

    async def _signed(
        self,
        method: str,
        key: str,
        extra: dict[str, str],
        payload: str,
        query: dict[str, str] | None = None,
    ) -> dict[str, str]:
        credentials = self._credentials()
        if asyncio.iscoroutine(credentials):
            credentials = await credentials
        path = self._path(key)
        return self.signer.headers(
            method, self.host, path, extra, payload, credentials, query=query
        )

    def _path(self, key: str) -> str:
        return f"{self.base}/{quote(key, safe='/~')}" if key else self.base

    def _url(self, key: str, query: dict[str, str] | None = None) -> Any:
        from yarl import URL

        suffix = f"?{canonical_query(query)}" if query else ""
        # signed as is: no requoting
        return URL(self.origin + self._path(key) + suffix, encoded=True)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("ObjectClient.open() was not awaited")
        return self._session


async def _file_chunks(
    src: Path, sent: list[int], advance: Callable[[int], None]
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with open(src, "rb") as f:
        while chunk := await loop.run_in_executor(None, f.read, STREAM_CHUNK):
            sent[0] += len(chunk)
            advance(len(chunk))
            yield chunk


def _list_page(payload: bytes) -> ListPage:
    """A ListObjectsV2 answer read with ElementTree (namespaces stripped)."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(payload)
    objects: list[tuple[str, int]] = []
    truncated, token = False, None
    for child in root:
        name = child.tag.rpartition("}")[2]
        if name == "Contents":
            fields = {part.tag.rpartition("}")[2]: part.text or "" for part in child}
            objects.append((fields.get("Key", ""), int(fields.get("Size", "0") or 0)))
        elif name == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif name == "NextContinuationToken":
            token = child.text
    return ListPage(objects, token if truncated and token else None)


def _client_errors() -> type[Exception]:
    import aiohttp

    return aiohttp.ClientError


def _error(status: int, payload: bytes) -> S3ResponseError:
    text = payload.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    return S3ResponseError(
        status,
        code.group(1) if code else "",
        message.group(1) if message else text[:200] or "(no message)",
    )


async def _retry_or_raise(error: BaseException, attempt: int) -> None:
    """Back off before the next attempt, or raise ``error`` when it cannot succeed later."""
    transient = not isinstance(error, S3ResponseError) or error.status in RETRYABLE
    if not transient or attempt + 1 >= ATTEMPTS:
        raise error
    await asyncio.sleep(min(0.1 * 2**attempt, 2.0))

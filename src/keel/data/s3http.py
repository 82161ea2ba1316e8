"""A lean signed HTTP client for S3 object bodies (PUT and GET), existence checks (HEAD) and
listings.

botocore spends about a millisecond of CPU on every request (endpoint rules, parameter
validation, event hooks, response parsing); moving ten thousand 40 KB objects that way is
CPU-bound at a few hundred objects per second — and its XML parser takes about 0.3 s per
listing page of 1,000 keys. This client signs requests itself (AWS Signature Version 4, header
form), sends them with aiohttp and reads listings with ElementTree, at a fraction of that cost.
Deletes stay on botocore (few requests). Credentials, region and endpoint come from
keel.data.s3_connection: the remote's options when they name them all, else the botocore
client s3fs built, so every way botocore finds credentials (options, environment, profiles,
roles) still applies.

The payload hash that SigV4 signs (keel.data.s3_signing) is the object's sha256 — its name —
so signing costs no pass over the data; ``x-amz-checksum-sha256`` makes the server verify the
body as well. Over plain HTTP without a proxy, a large body goes out without copies
(keel.data.s3_raw: a file with sendfile, memory straight from its buffer), and listings and
large downloads come in on raw connections too: aiohttp is imported (on a worker thread)
only when a small body or a HEAD first needs it, so a push starts sending about 70 ms sooner.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from keel.data.s3_signing import EMPTY_SHA256, Signer, canonical_query
from keel.errors import StoreError

if TYPE_CHECKING:
    import aiohttp

    from keel.data.arrival import Arrival

T = TypeVar("T")
Body = Path | bytes | memoryview  # what a PUT sends: a file, or bytes in memory
RETRYABLE = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 5
STREAM_CHUNK = 1 << 20
SINK_BLOCK = 4 << 20  # downloads are hashed and written off the event loop in blocks this big
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


class S3ResponseError(Exception):
    """A non-success answer from the server: HTTP ``status`` with S3's error ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


@dataclass(frozen=True)
class ListPage:
    """One page of a listing: (key, size, modified — seconds since the epoch, None when the
    server gave none) of each object, and the token of the next page if any."""

    objects: list[tuple[str, int, float | None]]
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
        # Large bodies go out without copies (keel.data.s3_raw) where nothing between
        # here and the server needs the bytes in user space: plain HTTP, no proxy.
        self._direct_to = (
            (parts.hostname, parts.port or 80)
            if parts.scheme == "http" and parts.hostname and not _proxy_set()
            else None
        )
        self._credentials = credentials
        self._connections = connections
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        # Over plain HTTP, listings and large bodies go on raw connections (keel.data.s3_raw):
        # aiohttp (some 70 ms of imports) loads when a small body or a HEAD first needs it,
        # on a worker thread while the transfers already run.
        if self._direct_to is None:
            await self._http()

    async def _http(self) -> aiohttp.ClientSession:
        """The aiohttp session, made on first use."""
        if self._session is not None:
            return self._session
        async with self._opening:
            if self._session is None:
                if "aiohttp" not in sys.modules:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(None, importlib.import_module, "aiohttp")
                self._session = self._new_session()
        return self._session

    def _new_session(self) -> aiohttp.ClientSession:
        import aiohttp

        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl),
            auto_decompress=False,  # the stored bytes, exactly: they are hashed
            skip_auto_headers=("Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
            # HTTP(S)_PROXY / NO_PROXY as botocore honours them; only when one is set, as
            # aiohttp then looks them (and ~/.netrc) up on a thread for every request.
            trust_env=_proxy_set(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def put(
        self,
        key: str,
        src: Body,
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
        direct = self._direct_to if size > STREAM_CHUNK else None
        sent = [0]

        async def once() -> str | None:
            sent[0] = 0
            if direct is not None:
                return await self._put_direct(direct, key, extra, sha256, src, size, sent, advance)
            headers = await self._signed("PUT", key, extra, sha256)
            body = _aiohttp_body(src, size, sent, advance)
            async with (await self._http()).put(self._url(key), data=body, headers=headers) as resp:
                _raise_unless(resp.status, (200,), await resp.read())
                if isinstance(body, bytes):  # a file's blocks report themselves
                    advance(size)
                return resp.headers.get("x-amz-checksum-sha256")

        def undo() -> None:
            advance(-sent[0])  # a retry sends the bytes again

        return await _retrying(once, undo)

    async def _put_direct(
        self,
        address: tuple[str, int],
        key: str,
        extra: dict[str, str],
        sha256: str,
        src: Body,
        size: int,
        sent: list[int],
        advance: Callable[[int], None],
    ) -> str | None:
        from keel.data.s3_raw import put

        host, port = address

        def moved(nbytes: int) -> None:
            sent[0] += nbytes
            advance(nbytes)

        headers = await self._signed("PUT", key, extra, sha256)
        answer = await put(host, port, self._path(key), headers, src, size, moved)
        _raise_unless(answer.status, (200,), answer.body)
        return answer.headers.get("x-amz-checksum-sha256")

    async def get(self, key: str, dest: Path, advance: Callable[[int], None]) -> str:
        """Download ``key`` into the local file ``dest``; returns the sha256 of the bytes
        written (hashed as they arrive, so the file need not be read back)."""
        written = [0]

        async def once() -> str:
            written[0] = 0
            headers = await self._signed("GET", key, {}, EMPTY_SHA256)
            async with (await self._http()).get(self._url(key), headers=headers) as resp:
                if resp.status != 200:
                    _raise_unless(resp.status, (200,), await resp.read())
                with open(dest, "wb") as out:
                    sink = _HashingSink(out)
                    try:
                        async for chunk in resp.content.iter_any():
                            await sink.add(chunk)
                            written[0] += len(chunk)
                            advance(len(chunk))
                        return await sink.finish()
                    finally:
                        await sink.settle()  # never write to a closed file

        def undo() -> None:
            advance(-written[0])

        return await _retrying(once, undo)

    @property
    def receives_directly(self) -> bool:
        """Whether `get_into` works here (plain HTTP without a proxy)."""
        return self._direct_to is not None

    async def get_into(self, key: str, arrival: Arrival, advance: Callable[[int], None]) -> None:
        """Download ``key`` into ``arrival`` (keel.data.arrival) on a raw connection; only
        where `receives_directly`. A failed attempt is started again from the first byte."""
        from keel.data.s3_raw import get

        if self._direct_to is None:
            raise RuntimeError("get_into needs a plain-HTTP endpoint without a proxy")
        host, port = self._direct_to
        received = [0]

        def moved(nbytes: int) -> None:
            received[0] += nbytes
            advance(nbytes)

        async def once() -> None:
            headers = await self._signed("GET", key, {}, EMPTY_SHA256)
            answer = await get(host, port, self._path(key), headers, arrival, moved)
            _raise_unless(answer.status, (200,), answer.body)

        def undo() -> None:
            advance(-received[0])
            received[0] = 0
            arrival.restart()

        await _retrying(once, undo)

    async def get_range_into(self, key: str, start: int, buffer: memoryview) -> None:
        """Read ``len(buffer)`` bytes of ``key`` from ``start`` into ``buffer`` on a raw
        connection; only where `receives_directly`."""
        from keel.data.s3_raw import Region, get

        if self._direct_to is None:
            raise RuntimeError("get_range_into needs a plain-HTTP endpoint without a proxy")
        if not buffer:
            return
        host, port = self._direct_to
        wanted = {"Range": f"bytes={start}-{start + len(buffer) - 1}"}

        async def once() -> None:
            region = Region(buffer)
            headers = await self._signed("GET", key, wanted, EMPTY_SHA256)
            answer = await get(host, port, self._path(key), headers, region, _nothing_moved, (206,))
            _raise_unless(answer.status, (206,), answer.body)
            if region.filled != len(buffer):  # a complete answer, yet short: not worth retrying
                raise StoreError(
                    f"{key} answered {region.filled} bytes for a read of {len(buffer)}; it is "
                    "damaged or truncated — push again"
                )

        await _retrying(once)

    async def head(self, key: str) -> int | None:
        """The size of object ``key``; None when there is no such object (404)."""

        async def once() -> int | None:
            headers = await self._signed("HEAD", key, {}, EMPTY_SHA256)
            async with (await self._http()).head(self._url(key), headers=headers) as resp:
                if resp.status == 404:
                    return None
                _raise_unless(resp.status, (200,), b"")  # a HEAD answer has no body
                return int(resp.headers.get("Content-Length", "0"))

        return await _retrying(once)

    async def get_range(self, key: str, start: int, length: int | None) -> bytes:
        """``length`` bytes of ``key`` from ``start`` (to the end when None), in memory."""
        wanted = f"bytes={start}-" + ("" if length is None else str(start + length - 1))
        extra = {} if start == 0 and length is None else {"Range": wanted}

        async def once() -> bytes:
            headers = await self._signed("GET", key, extra, EMPTY_SHA256)
            async with (await self._http()).get(self._url(key), headers=headers) as resp:
                payload = await resp.read()
                _raise_unless(resp.status, (200, 206), payload)
                return payload

        return await _retrying(once)

    async def list_page(self, prefix: str, limit: int, token: str | None = None) -> ListPage:
        """Up to ``limit`` keys under ``prefix`` (ListObjectsV2), from ``token`` on."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(limit)}
        if token is not None:
            query["continuation-token"] = token

        async def once() -> ListPage:
            headers = await self._signed("GET", "", {}, EMPTY_SHA256, query)
            if self._direct_to is not None:
                from keel.data.s3_raw import fetch

                target = f"{self._path('')}?{canonical_query(query)}"
                answer = await fetch(*self._direct_to, target, headers)
                status, payload = answer.status, answer.body
            else:
                async with (await self._http()).get(self._url("", query), headers=headers) as resp:
                    status, payload = resp.status, await resp.read()
            _raise_unless(status, (200,), payload)
            return _list_page(payload)

        return await _retrying(once)

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


class _HashingSink:
    """Hashes and writes a download in blocks of SINK_BLOCK on a worker thread, one block
    behind the network: the event loop keeps receiving (this and the other transfers)
    while the previous block is hashed and written."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._digest = hashlib.sha256()
        self._block: list[bytes] = []
        self._size = 0
        self._pending: asyncio.Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        self._block.append(chunk)
        self._size += len(chunk)
        if self._size >= SINK_BLOCK:
            await self._flush(in_thread=True)

    async def finish(self) -> str:
        await self._flush(in_thread=False)  # the last, small block: on the loop
        return self._digest.hexdigest()

    async def settle(self) -> None:
        """Wait for the block in flight (after a failure, its error is the failure's)."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending
            self._pending = None

    async def _flush(self, *, in_thread: bool) -> None:
        if self._pending is not None:
            await self._pending  # one block in flight at a time: blocks stay in order
            self._pending = None
        block, self._block, self._size = self._block, [], 0
        if in_thread:
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(None, self._write, block)
        else:
            self._write(block)

    def _write(self, block: list[bytes]) -> None:
        for chunk in block:
            self._digest.update(chunk)
            self._out.write(chunk)


def _aiohttp_body(
    src: Body, size: int, sent: list[int], advance: Callable[[int], None]
) -> bytes | AsyncIterator[bytes]:
    """What aiohttp sends for ``src``: bytes, or a large file's blocks as they are read. An
    in-memory body is copied: the transport may keep a view of unsent bytes after the
    request (when the connection closes mid-body), and the caller reuses its buffer."""
    if isinstance(src, Path):
        return _file_chunks(src, sent, advance) if size > STREAM_CHUNK else src.read_bytes()
    return src if isinstance(src, bytes) else bytes(src)


async def _file_chunks(
    src: Path, sent: list[int], advance: Callable[[int], None]
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with open(src, "rb") as f:
        while chunk := await loop.run_in_executor(None, f.read, STREAM_CHUNK):
            sent[0] += len(chunk)
            advance(len(chunk))
            yield chunk


def _proxy_set() -> bool:
    return any(os.environ.get(name) for name in PROXY_VARIABLES)


def _list_page(payload: bytes) -> ListPage:
    """A ListObjectsV2 answer read with ElementTree (namespaces stripped)."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(payload)
    except ElementTree.ParseError as exc:
        raise S3ResponseError(200, "MalformedListing", f"the listing is not XML ({exc})") from None
    objects: list[tuple[str, int, float | None]] = []
    truncated, token = False, None
    for child in root:
        name = child.tag.rpartition("}")[2]
        if name == "Contents":
            fields = {part.tag.rpartition("}")[2]: part.text or "" for part in child}
            size = int(fields.get("Size", "0") or 0)
            objects.append((fields.get("Key", ""), size, _timestamp(fields.get("LastModified"))))
        elif name == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif name == "NextContinuationToken":
            token = child.text
    return ListPage(objects, token if truncated and token else None)


def _timestamp(text: str | None) -> float | None:
    """An ISO 8601 time (S3's LastModified) as seconds since the epoch; None if unreadable."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def client_errors(*others: type[Exception]) -> tuple[type[Exception], ...]:
    """``others``, and aiohttp's error class once aiohttp is loaded (none comes before)."""
    module = sys.modules.get("aiohttp")
    return (*others, module.ClientError) if module is not None else others


def _error(status: int, payload: bytes) -> S3ResponseError:
    text = payload.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    return S3ResponseError(
        status,
        code.group(1) if code else "",
        message.group(1) if message else text[:200] or "(no message)",
    )


def _raise_unless(status: int, good: tuple[int, ...], payload: bytes) -> None:
    if status not in good:
        raise _error(status, payload)


def _nothing_moved(nbytes: int) -> None:
    pass


def _nothing() -> None:
    pass


async def _retrying(once: Callable[[], Awaitable[T]], undo: Callable[[], None] = _nothing) -> T:
    """``once()`` until it succeeds: a transport error or a retryable answer (RETRYABLE) is
    tried again after a back-off — ``undo`` first takes back what the attempt reported — up
    to ATTEMPTS times; any other answer is raised at once."""
    for attempt in range(ATTEMPTS):
        try:
            return await once()
        except client_errors(TimeoutError, OSError, S3ResponseError) as exc:
            transient = not isinstance(exc, S3ResponseError) or exc.status in RETRYABLE
            if not transient or attempt + 1 >= ATTEMPTS:
                raise
        undo()
        await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt raised

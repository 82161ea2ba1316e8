"""keel.data.s3_raw: a PUT whose body goes out with sendfile, and the answer read back.

Against a small asyncio HTTP server in the test (the S3 round trips of tests/data/
test_push_pull.py and test_remote.py send their large objects this way too)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.data.s3_raw import SEGMENT, put, read_answer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _answer_of(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    async def read() -> tuple[int, dict[str, str], bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        answer = await read_answer(reader)
        return answer.status, answer.headers, answer.body

    return asyncio.run(read())


def _chunked(body: bytes, cuts: list[int], trailer: bool) -> bytes:
    edges = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    pieces = [body[a:b] for a, b in itertools.pairwise(edges)]
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    return out + b"0\r\n" + (b"x-amz-checksum-crc32: AAAAAA==\r\n" if trailer else b"") + b"\r\n"


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=3000),
    framing=st.sampled_from(["length", "chunked", "close"]),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=6),
    trailer=st.booleans(),
    status=st.sampled_from([200, 400, 403, 503]),
)
def test_answers_are_read_whatever_their_framing(
    body: bytes, framing: str, cuts: list[int], trailer: bool, status: int
) -> None:
    head = f"HTTP/1.1 {status} Whatever\r\nX-Amz-Checksum-Sha256: abc=\r\n"
    if framing == "length":
        raw = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    elif framing == "chunked":
        raw = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + _chunked(body, cuts, trailer)
    else:
        raw = f"{head}\r\n".encode() + body
    got_status, headers, got_body = _answer_of(raw)
    assert (got_status, got_body) == (status, body)
    assert headers["x-amz-checksum-sha256"] == "abc="


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # cut off mid-body
        b"HTTP/1.1 200 OK\r\nContent-Le",  # cut off mid-head
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
    ],
)
def test_a_broken_answer_is_a_connection_error(raw: bytes) -> None:
    with pytest.raises(ConnectionError):
        _answer_of(raw)


async def _serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _put(
    tmp_path: Path, data: bytes, handler: Handler, in_memory: bool = False
) -> tuple[int, bytes, list[int]]:
    src: Path | memoryview = memoryview(bytearray(data) + b"unsent tail")
    if not in_memory:
        src = tmp_path / "object"
        src.write_bytes(data)
    progress: list[int] = []

    async def run() -> tuple[int, bytes, list[int]]:
        server, port = await _serve(handler)
        async with server:
            headers = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(data))}
            answer = await put(
                "127.0.0.1", port, "/bucket/k%2Fey?x=1", headers, src, len(data), progress.append
            )
        return answer.status, answer.body, progress

    return asyncio.run(run())


@pytest.mark.parametrize("in_memory", [False, True], ids=["file", "memory"])
@pytest.mark.parametrize("size", [0, 1, 5000, SEGMENT + 12345])
def test_the_body_arrives_whole_with_the_request_head(
    tmp_path: Path, size: int, in_memory: bool
) -> None:
    data = os.urandom(size)
    received: dict[str, object] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
        received["head"] = head
        received["body"] = await reader.readexactly(length)
        try:  # nothing past Content-Length (a memory body's buffer goes on)
            received["extra"] = await asyncio.wait_for(reader.read(1), 0.05)
        except TimeoutError:
            received["extra"] = b""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    status, body, progress = _put(tmp_path, data, handler, in_memory)
    assert (status, body) == (200, b"ok")
    assert (received["body"], received["extra"]) == (data, b"")
    head = str(received["head"])
    assert head.startswith("PUT /bucket/k%2Fey?x=1 HTTP/1.1\r\n")
    assert "\r\nConnection: close\r\n" in head
    assert sum(progress) == size
    assert all(0 < step <= SEGMENT for step in progress)


def test_a_refusal_sent_before_the_body_is_read_is_the_answer(tmp_path: Path) -> None:
    refusal = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head only: the body is never read
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(refusal))
        writer.write(refusal)
        await writer.drain()
        writer.close()

    for in_memory in (False, True):
        status, body, _ = _put(tmp_path, os.urandom(3 * SEGMENT), handler, in_memory)
        assert (status, body) == (403, refusal)


def test_a_server_that_hangs_up_without_answering_is_a_connection_error(
    tmp_path: Path,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    with pytest.raises(ConnectionError):  # reset while sending, or no answer after it
        _put(tmp_path, os.urandom(SEGMENT), handler)


def _object_client(port: int) -> Any:
    from keel.data.s3http import ObjectClient

    return ObjectClient(
        f"http://127.0.0.1:{port}", "bucket", "us-east-1", lambda: None, connections=2
    )


@pytest.mark.parametrize("in_memory", [False, True], ids=["file", "memory"])
def test_the_s3_client_sends_large_bodies_directly_over_plain_http(
    tmp_path: Path, in_memory: bool
) -> None:
    """ObjectClient.put of a body over STREAM_CHUNK — a file, or a view of a buffer —
    takes this module's path (its request closes the connection; aiohttp's keeps it), and
    the server's checksum comes back."""
    from keel.data.s3http import STREAM_CHUNK

    data = os.urandom(STREAM_CHUNK + 4097)
    src: Path | memoryview = memoryview(bytearray(data))
    if not in_memory:
        src = tmp_path / "object"
        src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    echoed = base64.b64encode(bytes.fromhex(sha)).decode()
    received: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        received["head"] = head
        received["body"] = await reader.readexactly(len(data))
        writer.write(
            f"HTTP/1.1 200 OK\r\nx-amz-checksum-sha256: {echoed}\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    async def run() -> str | None:
        server, port = await _serve(handler)
        client = _object_client(port)
        await client.open()
        try:
            async with server:
                return await client.put("k/ey", src, sha, len(data), lambda n: None)
        finally:
            await client.close()

    assert asyncio.run(run()) == echoed
    assert received["body"] == data
    head = received["head"]
    assert head.startswith("PUT /bucket/k/ey HTTP/1.1\r\n")
    assert "\r\nConnection: close\r\n" in head
    assert f"\r\nx-amz-checksum-sha256: {echoed}\r\n" in head


def test_a_proxy_or_tls_keeps_the_s3_client_on_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.data.s3http import ObjectClient

    assert _object_client(9000)._direct_to == ("127.0.0.1", 9000)
    tls = ObjectClient("https://s3.example.com", "b", "us-east-1", lambda: None, connections=1)
    assert tls._direct_to is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.com:3128")
    assert _object_client(9000)._direct_to is None


LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Contents><Key>p/a</Key><Size>3</Size>"
    b"<LastModified>2026-01-02T03:04:05+00:00</LastModified></Contents>"
    b"<Contents><Key>p/b</Key><Size>5</Size></Contents>"
    b"<IsTruncated>true</IsTruncated><NextContinuationToken>t/1</NextContinuationToken>"
    b"</ListBucketResult>"
)


def _listing_server(heads: list[str], bodies: list[bytes]) -> Handler:
    """Answers each request on a connection until the client closes it: a GET with LISTING,
    a PUT with 200 once its body (kept in ``bodies``) is read; every head goes to ``heads``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            except asyncio.IncompleteReadError:  # the client closed the connection
                break
            heads.append(head)
            if head.startswith("GET "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(LISTING))
                writer.write(LISTING)
            else:
                length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
                bodies.append(await reader.readexactly(length))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    return handler


def test_over_plain_http_listings_go_raw_and_aiohttp_waits_for_a_small_body() -> None:
    """A listing page takes a raw connection; opening the client makes no aiohttp session —
    the first small body (which aiohttp carries, on a kept-alive connection) does."""
    heads: list[str] = []
    bodies: list[bytes] = []

    async def run() -> tuple[Any, list[bool]]:
        server, port = await _serve(_listing_server(heads, bodies))
        client = _object_client(port)
        await client.open()
        made: list[bool] = []
        try:
            async with server:
                made.append(client._session is not None)
                page = await client.list_page("p/", 1000, token="t/0")
                made.append(client._session is not None)
                sha = hashlib.sha256(b"abc").hexdigest()
                await client.put("p/c", b"abc", sha, 3, lambda n: None)
                made.append(client._session is not None)
        finally:
            await client.close()
        return page, made

    page, made = asyncio.run(run())
    assert made == [False, False, True]
    assert page.objects == [("p/a", 3, 1767323045.0), ("p/b", 5, None)]
    assert page.next_token == "t/1"
    listing = heads[0]
    assert listing.startswith("GET /bucket?continuation-token=t%2F0&list-type=2&max-keys=1000")
    assert "&prefix=p%2F HTTP/1.1\r\n" in listing
    assert "\r\nConnection: close\r\n" in listing
    assert heads[1].startswith("PUT /bucket/p/c HTTP/1.1\r\n")
    assert "Connection: close" not in heads[1]
    assert bodies == [b"abc"]


def test_a_refused_raw_listing_raises_the_servers_error() -> None:
    from keel.data.s3http import S3ResponseError

    refusal = b"<Error><Code>AccessDenied</Code><Message>no listing</Message></Error>"
    calls: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls.append((await reader.readuntil(b"\r\n\r\n")).decode("latin-1"))
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(refusal))
        writer.write(refusal)
        await writer.drain()
        writer.close()

    async def run() -> None:
        server, port = await _serve(handler)
        client = _object_client(port)
        await client.open()
        try:
            async with server:
                await client.list_page("p/", 10)
        finally:
            await client.close()

    with pytest.raises(S3ResponseError) as caught:
        asyncio.run(run())
    assert (caught.value.status, caught.value.code) == (403, "AccessDenied")
    assert len(calls) == 1  # a refusal is not retried


def test_without_raw_connections_the_client_lists_and_sends_through_aiohttp(
    tmp_path: Path,
) -> None:
    """Where raw connections are not used (TLS, a proxy), `open()` makes the aiohttp session
    and listings and large bodies go through it — on kept-alive connections."""
    from keel.data.s3http import STREAM_CHUNK

    data = os.urandom(STREAM_CHUNK + 999)
    src = tmp_path / "object"
    src.write_bytes(data)
    heads: list[str] = []
    bodies: list[bytes] = []

    async def run() -> tuple[Any, bool]:
        server, port = await _serve(_listing_server(heads, bodies))
        client = _object_client(port)
        client._direct_to = None  # as for an https endpoint or one behind a proxy
        await client.open()
        made = client._session is not None
        try:
            async with server:
                page = await client.list_page("p/", 1000)
                sha = hashlib.sha256(data).hexdigest()
                await client.put("p/big", src, sha, len(data), lambda n: None)
        finally:
            await client.close()
        return page, made

    page, made = asyncio.run(run())
    assert made
    assert [key for key, _, _ in page.objects] == ["p/a", "p/b"]
    assert heads[0].startswith("GET /bucket?list-type=2&max-keys=1000&prefix=p%2F HTTP/1.1")
    assert all("Connection: close" not in head for head in heads)
    assert heads[1].startswith("PUT /bucket/p/big HTTP/1.1\r\n")
    assert bodies == [data]

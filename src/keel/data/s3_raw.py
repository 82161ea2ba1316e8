"""Raw HTTP/1.1 exchanges for keel.data.s3http: one PUT whose body the client does not copy,
one GET whose body lands in the caller's buffers, and one GET read whole (a listing page).

Uploading through aiohttp reads a cache file into Python block by block and writes each block
to the socket, and an in-memory body gets copied into the transport's buffer: two copies of
every byte on the client. Here a file body goes out with sendfile(2) — the kernel hands the
file's page-cache pages to the socket itself (a push of the data benchmark's 1.6 GB of large
files spent about 3 CPU-seconds in those copies) — and an in-memory body (a pack, see
keel.data.packs) is written to the socket straight from its buffer. Only for plain-HTTP
endpoints reached without a proxy — TLS needs the bytes in user space — and the rest stays on
aiohttp. Each upload opens its own connection and closes it after the answer: such bodies are
large and few, a connection is cheap.

A large download (`get`) is received straight into the caller's page-aligned buffers
(keel.data.arrival), each block handed on — hashed and written — on a worker thread while the
next one arrives: no chunk objects, no copy in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SEGMENT = 16 << 20  # progress is reported after each segment of this many bytes
CONNECT_TIMEOUT = 30.0
IO_TIMEOUT = 300.0  # no progress for this long (a segment sent, the answer read) fails


HEAD_LIMIT = 64 << 10  # an answer's status line and headers must fit in this many bytes


class Receiver(Protocol):
    """Where a GET's body goes: `buffer` gives the space for the next bytes, `take` (called on
    a worker thread) the bytes received into it."""

    def buffer(self) -> memoryview: ...

    def take(self, view: memoryview) -> None: ...


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


async def put(
    host: str,
    port: int,
    target: str,
    headers: Mapping[str, str],
    body: Path | bytes | memoryview,
    size: int,
    advance: Callable[[int], None],
) -> Answer:
    """PUT ``size`` bytes — of the file ``body``, or ``body`` itself — to ``target`` (path and
    query, already encoded) on ``host:port``; ``headers`` must hold Host and Content-Length.
    ``advance`` is called with the bytes sent as they go. A connection error raises OSError;
    an answer the server sends before taking the whole body (a refusal) is returned like any
    other."""
    loop = asyncio.get_running_loop()
    sock = await asyncio.wait_for(_connect(host, port), CONNECT_TIMEOUT)
    head = _request("PUT", target, headers)
    try:
        await asyncio.wait_for(loop.sock_sendall(sock, head), IO_TIMEOUT)
        if isinstance(body, Path):
            await _send_file(sock, body, size, advance)
        else:
            await _send_memory(sock, memoryview(body)[:size], advance)
    except OSError as failure:
        # The server may have answered and closed early (say, 403): that answer is the
        # error worth reporting; without one, the connection error stands.
        with contextlib.suppress(OSError, TimeoutError):
            return await _answer_on(sock, 5.0)
        raise failure
    except BaseException:
        sock.close()
        raise
    return await _answer_on(sock, IO_TIMEOUT)


async def get(
    host: str,
    port: int,
    target: str,
    headers: Mapping[str, str],
    receiver: Receiver,
    advance: Callable[[int], None],
    ok: tuple[int, ...] = (200,),
) -> Answer:
    """GET ``target`` from ``host:port``; the body of an answer with a status in ``ok`` goes
    to ``receiver`` (its Answer has an empty body), any other answer is returned whole.
    ``advance`` is called with the bytes received as they come. A connection error or a
    cut-off body raises OSError."""
    loop = asyncio.get_running_loop()
    sock = await asyncio.wait_for(_connect(host, port), CONNECT_TIMEOUT)
    head = _request("GET", target, headers)
    try:
        async with asyncio.timeout(IO_TIMEOUT):
            await loop.sock_sendall(sock, head)
            raw, rest = await _head_on(sock)
        answer = _parse_head(raw)
        length = answer.headers.get("content-length", "")
        chunked = "chunked" in answer.headers.get("transfer-encoding", "").lower()
        if answer.status not in ok or chunked or not length.isdigit():
            # An error, or a body framed otherwise (S3 gives a length for objects): read it
            # all and parse it as usual.
            whole = await _until_close(sock, raw + rest)
            reader = asyncio.StreamReader()
            reader.feed_data(whole)
            reader.feed_eof()
            answer = await read_answer(reader)
            if answer.status in ok:
                await _deliver(memoryview(answer.body), receiver)
                advance(len(answer.body))
                return Answer(answer.status, answer.headers, b"")
            return answer
        await _receive(sock, rest, int(length), receiver, advance)
        return answer
    finally:
        sock.close()


async def fetch(host: str, port: int, target: str, headers: Mapping[str, str]) -> Answer:
    """GET ``target`` from ``host:port``, the whole answer read into memory (a listing page:
    a small body). A connection error raises OSError."""
    loop = asyncio.get_running_loop()
    sock = await asyncio.wait_for(_connect(host, port), CONNECT_TIMEOUT)
    try:
        await asyncio.wait_for(
            loop.sock_sendall(sock, _request("GET", target, headers)), IO_TIMEOUT
        )
    except BaseException:
        sock.close()
        raise
    return await _answer_on(sock, IO_TIMEOUT)


def _request(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    """The head of a request that closes its connection after the answer."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return "\r\n".join([*lines, "Connection: close", "", ""]).encode("latin-1")


class Region:
    """A Receiver filling one buffer from its start (a ranged read of known length)."""

    def __init__(self, buffer: memoryview) -> None:
        self._buffer = buffer
        self.filled = 0

    def buffer(self) -> memoryview:
        return self._buffer[self.filled :]

    def take(self, view: memoryview) -> None:
        self.filled += len(view)


async def _head_on(sock: socket.socket) -> tuple[bytes, bytes]:
    """(the answer's head, up to and including the blank line; the bytes read past it)."""
    loop = asyncio.get_running_loop()
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > HEAD_LIMIT:
            raise ConnectionError("unreadable HTTP response: its head is too long")
        more = await loop.sock_recv(sock, HEAD_LIMIT)
        if not more:
            raise ConnectionError("the server closed the connection mid-answer")
        data += more
    return data[: end + 4], data[end + 4 :]


def _parse_head(raw: bytes) -> Answer:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(parts[1]), headers, b"")


async def _until_close(sock: socket.socket, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = [data]
    async with asyncio.timeout(IO_TIMEOUT):
        while more := await loop.sock_recv(sock, 1 << 20):
            chunks.append(more)
    return b"".join(chunks)


async def _receive(
    sock: socket.socket,
    first: bytes,
    length: int,
    receiver: Receiver,
    advance: Callable[[int], None],
) -> None:
    """Receive ``length`` body bytes (``first`` already read) into the receiver's buffers,
    each full buffer taken on a worker thread while the next one fills."""
    loop = asyncio.get_running_loop()
    taking: asyncio.Future[None] | None = None
    got = 0
    try:
        while got < length:
            view = receiver.buffer()
            if not view:
                raise ConnectionError(f"the answer holds more than the {got} bytes expected")
            room = min(len(view), length - got)
            filled = len(first[:room])
            view[:filled] = first[:filled]
            first = first[filled:]
            async with asyncio.timeout(IO_TIMEOUT):
                while filled < room:
                    n = await loop.sock_recv_into(sock, view[filled:room])
                    if not n:
                        raise ConnectionError(
                            f"the server closed the connection after {got + filled} of "
                            f"{length} bytes"
                        )
                    filled += n
            if taking is not None:
                await taking  # one block in flight: blocks stay in order, buffers free
            taking = loop.run_in_executor(None, receiver.take, view[:filled])
            got += filled
            advance(filled)
    except BaseException:
        if taking is not None:  # let the block in flight end before its buffer is dropped
            with contextlib.suppress(Exception):
                await taking
        raise
    if taking is not None:
        await taking


async def _deliver(body: memoryview, receiver: Receiver) -> None:
    loop = asyncio.get_running_loop()
    while body:
        view = receiver.buffer()
        if not view:
            raise ConnectionError("the answer holds more bytes than expected")
        n = min(len(view), len(body))
        view[:n] = body[:n]
        await loop.run_in_executor(None, receiver.take, view[:n])
        body = body[n:]


async def _connect(host: str, port: int) -> socket.socket:
    """A non-blocking socket connected to ``host:port`` (a name is resolved off the loop)."""
    loop = asyncio.get_running_loop()
    failure: OSError = OSError(f"{host} has no address")
    for family, _, _, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failure


async def _send_file(
    sock: socket.socket, src: Path, size: int, advance: Callable[[int], None]
) -> None:
    loop = asyncio.get_running_loop()
    with open(src, "rb") as file:
        offset = 0
        while offset < size:
            count = min(SEGMENT, size - offset)
            sent = await asyncio.wait_for(loop.sock_sendfile(sock, file, offset, count), IO_TIMEOUT)
            if sent != count:  # the file shrank under us
                raise ConnectionAbortedError(
                    f"{src} ended after {offset + sent} of {size} bytes while it was sent"
                )
            offset += sent
            advance(sent)


async def _send_memory(
    sock: socket.socket, view: memoryview, advance: Callable[[int], None]
) -> None:
    loop = asyncio.get_running_loop()
    for offset in range(0, len(view), SEGMENT):
        segment = view[offset : offset + SEGMENT]
        await asyncio.wait_for(loop.sock_sendall(sock, segment), IO_TIMEOUT)
        advance(len(segment))


async def _answer_on(sock: socket.socket, timeout: float) -> Answer:
    """The answer sent on ``sock``, read within ``timeout`` seconds; closes ``sock``."""
    try:
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        return await asyncio.wait_for(read_answer(reader), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """The status, headers and body of one HTTP/1.1 response (Content-Length, chunked, or
    until the connection closes). A cut-off response raises ConnectionError."""
    try:
        head = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        headers = head.headers
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
    except asyncio.IncompleteReadError as exc:
        raise ConnectionError("the server closed the connection mid-answer") from exc
    except (asyncio.LimitOverrunError, ValueError) as exc:
        raise ConnectionError(f"unreadable HTTP response: {exc}") from exc
    return Answer(head.status, headers, bytes(body))


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)

"""One HTTP/1.1 PUT whose body is a local file sent with sendfile(2), for keel.data.s3http.

Uploading a large cache object through aiohttp reads it into Python, block by block, and
writes each block to the socket: two copies of every byte on the client. With sendfile the
kernel hands the file's page-cache pages to the socket itself, so the client copies nothing
(a push of the data benchmark's 1.6 GB of large files spent about 3 CPU-seconds in those two
copies). Only for plain-HTTP endpoints reached without a proxy — TLS needs the bytes in user
space — and only for file bodies; the rest stays on aiohttp. Each upload opens its own
connection and closes it after the answer: large files are few, a connection is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

SEGMENT = 16 << 20  # progress is reported after each segment of this many bytes
CONNECT_TIMEOUT = 30.0
IO_TIMEOUT = 300.0  # no progress for this long (a segment sent, the answer read) fails


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


async def put_file(
    host: str,
    port: int,
    target: str,
    headers: Mapping[str, str],
    src: Path,
    size: int,
    advance: Callable[[int], None],
) -> Answer:
    """PUT ``size`` bytes of ``src`` to ``target`` (path and query, already encoded) on
    ``host:port``; ``headers`` must hold Host and Content-Length. ``advance`` is called with
    the bytes sent as they go. A connection error raises OSError; an answer the server sends
    before taking the whole body (a refusal) is returned like any other."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
    try:
        lines = [f"PUT {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1"))
        try:
            await _send_body(writer, src, size, advance)
        except OSError:
            # The server may have answered and closed early (say, 403): that answer is
            # the error worth reporting; without one, the connection error stands.
            answer = await _answer_if_any(reader)
            if answer is None:
                raise
            return answer
        return await asyncio.wait_for(read_answer(reader), IO_TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _send_body(
    writer: asyncio.StreamWriter, src: Path, size: int, advance: Callable[[int], None]
) -> None:
    loop = asyncio.get_running_loop()
    await writer.drain()
    with open(src, "rb") as file:
        offset = 0
        while offset < size:
            count = min(SEGMENT, size - offset)
            sent = await asyncio.wait_for(
                loop.sendfile(writer.transport, file, offset, count), IO_TIMEOUT
            )
            if sent != count:  # the file shrank under us
                raise ConnectionAbortedError(
                    f"{src} ended after {offset + sent} of {size} bytes while it was sent"
                )
            offset += sent
            advance(sent)


async def _answer_if_any(reader: asyncio.StreamReader) -> Answer | None:
    try:
        return await asyncio.wait_for(read_answer(reader), 5.0)
    except (OSError, TimeoutError):
        return None


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """The status, headers and body of one HTTP/1.1 response (Content-Length, chunked, or
    until the connection closes). A cut-off response raises ConnectionError."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP response: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
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
    return Answer(int(parts[1]), headers, bytes(body))


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

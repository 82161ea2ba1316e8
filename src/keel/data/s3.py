"""The S3 remote backend (AWS S3 and S3-compatible servers such as SeaweedFS or MinIO).

Connection, credentials and region come from s3fs (its options go in
``data.remotes.NAME.options``). Deletes use its async botocore client.
Object bodies and listings of an S3-compatible endpoint (any endpoint that is not
amazonaws.com) go through keel.data.s3http, a lean signed client, because botocore's
per-request CPU cost caps small-object transfers at a few hundred per second; AWS itself keeps
botocore (virtual hosted buckets, region redirects). keel.data.s3_connection opens both clients
(s3fs only once a call needs botocore, when the options name the endpoint and the keys).

Every upload is one PUT — atomic, the object appears whole or not at all — carrying
``x-amz-checksum-sha256``; the server refuses a body that does not hash to it. When a server
ignores that header (its answer does not echo it), the object is checked afterwards with a
HEAD: size, and ETag against the MD5 when the ETag is one. Objects over 5 GiB (the single PUT
limit) go as a multipart upload through s3fs, verified by size.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.hashing import CHUNK, is_sha256, sha256_file
from keel.data.backends import corrupted_source
from keel.data.s3_connection import S3Connection
from keel.errors import InvalidInputError, NotFoundError, StoreError

if TYPE_CHECKING:
    from keel.data.arrival import Arrival
    from keel.data.remote import Remote
    from keel.data.s3http import Body

SINGLE_PUT_LIMIT = 5 << 30
# Up to this many objects, listing the remote page by page (a request per 1,000, one after the
# other) is quicker than listing its 256 prefixes (256 requests, however few objects).
FLAT_LIST_LIMIT = 16_000
LIST_PAGE = 1000  # keys per listing request (S3's maximum)
CORRUPT_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})


class S3Backend:
    """Objects at ``s3://bucket/prefix/objects/ab/cdef...``. ``fast=False`` forces botocore
    for object bodies too (what AWS endpoints use; tests run both paths)."""

    def __init__(self, remote: Remote, *, fast: bool = True) -> None:
        bucket, _, prefix = remote.url.split("://", 1)[1].partition("/")
        if not bucket:
            raise InvalidInputError(
                f"{remote.describe()} names no bucket; write its url as s3://BUCKET/PREFIX"
            )
        self.remote = remote
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.conn = S3Connection(remote, bucket, fast=fast)

    def key(self, sha256: str) -> str:
        return f"{self.prefix}objects/{sha256[:2]}/{sha256[2:]}"

    async def open(self) -> None:
        await self.conn.open()

    async def close(self) -> None:
        await self.conn.close()

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await self.conn.call(method, Bucket=self.bucket, **kwargs)

    async def list_small(self) -> dict[str, int] | None:
        found, more = await self._list(f"{self.prefix}objects/", limit=FLAT_LIST_LIMIT)
        return None if more else found

    async def list_prefix(self, prefix: str) -> dict[str, int]:
        found, _ = await self._list(f"{self.prefix}objects/{prefix}/", limit=None)
        return found

    async def _list(self, start: str, *, limit: int | None) -> tuple[dict[str, int], bool]:
        """Objects under key prefix ``start``: every page, or pages until ``limit`` objects
        were seen — then also whether more follow."""
        found: dict[str, int] = {}
        base = f"{self.prefix}objects/"
        token: str | None = None
        while True:
            page, token = await self._list_page(start, token)
            for key, size, _ in page:
                sha = key[len(base) :].replace("/", "", 1)
                if is_sha256(sha):
                    found[sha] = size
            if token is None:
                return found, False
            if limit is not None and len(found) >= limit:
                return found, True

    async def _list_page(
        self, start: str, token: str | None
    ) -> tuple[list[tuple[str, int, float | None]], str | None]:
        """One page of keys under ``start`` and the next page's token: through the lean client
        where there is one (botocore parses a page of 1,000 keys in about 0.3 s of CPU)."""
        if self.conn.objects is not None:
            page = await self._fast(self.conn.objects.list_page(start, LIST_PAGE, token), None)
            return page.objects, page.next_token
        kwargs: dict[str, Any] = {"Prefix": start, "MaxKeys": LIST_PAGE}
        if token is not None:
            kwargs["ContinuationToken"] = token
        try:
            answer = await self._call("list_objects_v2", **kwargs)
        except FileNotFoundError as exc:
            raise self._no_bucket() from exc
        objects = [
            (str(item["Key"]), int(item["Size"]), _epoch(item.get("LastModified")))
            for item in answer.get("Contents", [])
        ]
        more = answer.get("IsTruncated") and answer.get("NextContinuationToken")
        return objects, str(answer["NextContinuationToken"]) if more else None

    async def stat(self, sha256: str) -> int | None:
        if self.conn.objects is not None:
            # the lean client: no botocore to import and build for a few existence checks
            size: int | None = await self._fast(self.conn.objects.head(self.key(sha256)), None)
            return size
        try:
            head = await self._call("head_object", Key=self.key(sha256))
        except FileNotFoundError:
            return None
        return int(head["ContentLength"])

    async def upload(
        self, sha256: str, src: Path, size: int, advance: Callable[[int], None]
    ) -> None:
        key = self.key(sha256)
        try:
            echoed = await self._put(key, sha256, src, size, advance)
        except _RefusedError as exc:
            # The server hashed something else than the name says: the cache object is
            # damaged, or the bytes were damaged on the way (then one more try).
            loop = asyncio.get_running_loop()
            if (await loop.run_in_executor(None, sha256_file, src))[0] != sha256:
                raise corrupted_source(sha256, src) from None
            echoed = await self._put_again(key, sha256, src, size, advance, exc)
        await self._check_stored(key, sha256, src, size, echoed)

    async def put_blob(self, name: str, data: bytes | memoryview, sha256: str) -> None:
        key = f"{self.prefix}{name}"
        try:
            echoed = await self._put(key, sha256, data, len(data), _ignore)
        except _RefusedError as exc:  # hashed in memory just now: damaged in transit
            echoed = await self._put_again(key, sha256, data, len(data), _ignore, exc)
        await self._check_stored(key, sha256, data, len(data), echoed)

    async def _put_again(
        self,
        key: str,
        sha256: str,
        body: Body,
        size: int,
        advance: Callable[[int], None],
        first: _RefusedError,
    ) -> str | None:
        try:
            return await self._put(key, sha256, body, size, advance)
        except _RefusedError:
            raise StoreError(
                f"{self.remote.describe()} refused {key} twice as corrupted in transit "
                f"({first}); check the network, then push again"
            ) from None

    async def _check_stored(
        self, key: str, sha256: str, body: Body, size: int, echoed: str | None
    ) -> None:
        expected = base64.b64encode(bytes.fromhex(sha256)).decode()
        if echoed is not None and echoed != expected:
            raise StoreError(
                f"{self.remote.describe()} stored {key} with checksum {echoed} "
                f"instead of {expected}; push again"
            )
        if echoed is None:
            await self._check_after_put(key, body, size)

    async def _put(
        self,
        key: str,
        sha256: str,
        body: Body,
        size: int,
        advance: Callable[[int], None],
    ) -> str | None:
        if size > SINGLE_PUT_LIMIT and isinstance(body, Path):
            fs = await self.conn.filesystem()
            await fs._put_file(str(body), f"{self.bucket}/{key}")
            advance(size)
            return None
        if self.conn.objects is not None:
            put = self.conn.objects.put(key, body, sha256, size, advance)
            echoed: str | None = await self._fast(put, sha256, body)
            return echoed
        echoed = await self._put_botocore(key, sha256, body, size)
        advance(size)
        return echoed

    async def _put_botocore(self, key: str, sha256: str, body: Body, size: int) -> str | None:
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        client = await (await self.conn.filesystem()).get_s3(self.bucket)
        with contextlib.ExitStack() as stack:
            payload: Any = bytes(body) if isinstance(body, memoryview) else body
            if isinstance(body, Path):
                stream = stack.enter_context(open(body, "rb"))
                payload = stream.read() if size <= (64 << 20) else stream
            try:
                answer = await client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=payload,
                    ContentLength=size,
                    ChecksumSHA256=checksum,
                )
            except Exception as exc:  # botocore's ClientError: translate by its code
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code in CORRUPT_CODES:
                    raise _RefusedError(str(exc)) from exc
                if code == "NoSuchBucket":
                    raise self._no_bucket() from exc
                if code == "AccessDenied":
                    await self._bucket_must_exist()
                raise
        value = answer.get("ChecksumSHA256")
        return str(value) if value else None

    async def _check_after_put(self, key: str, body: Body, size: int) -> None:
        """For servers that ignore x-amz-checksum-sha256: compare size and MD5 ETag."""
        head = await self._call("head_object", Key=key)
        etag = str(head.get("ETag", "")).strip('"')
        md5 = ""
        if len(etag) == 32 and "-" not in etag:
            if not isinstance(body, Path):
                md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
            else:
                md5 = await asyncio.get_running_loop().run_in_executor(None, _md5_file, body)
        if int(head["ContentLength"]) != size or (md5 and md5 != etag):
            await self._call("delete_object", Key=key)
            raise StoreError(
                f"{key} on {self.remote.describe()} did not match what was sent "
                "(size or MD5); it was deleted — push again"
            )

    async def download(self, sha256: str, dest: Path, advance: Callable[[int], None]) -> str | None:
        if self.conn.objects is not None:
            digest: str = await self._fast(
                self.conn.objects.get(self.key(sha256), dest, advance), sha256
            )
            return digest
        try:
            await (await self.conn.filesystem())._get_file(
                f"{self.bucket}/{self.key(sha256)}", str(dest)
            )
        except FileNotFoundError:
            raise self._not_found(sha256) from None
        advance(dest.stat().st_size)
        return None

    def receives_into(self) -> bool:
        objects = self.conn.objects
        return objects is not None and objects.receives_directly

    async def download_into(
        self, sha256: str, arrival: Arrival, advance: Callable[[int], None]
    ) -> None:
        if self.conn.objects is None:
            raise RuntimeError("this S3 remote downloads through botocore: use download")
        await self._fast(self.conn.objects.get_into(self.key(sha256), arrival, advance), sha256)

    async def _fast(self, request: Any, sha256: str | None, src: Body | None = None) -> Any:
        """Await an s3http request — about object ``sha256``, or a listing (None) —
        translating S3 error answers into Keel errors."""
        from keel.data.remote import RemoteAccessError
        from keel.data.s3http import S3ResponseError, client_errors

        try:
            return await request
        except S3ResponseError as exc:
            if exc.status == 403 or exc.code in ("AccessDenied", "InvalidAccessKeyId"):
                await self._bucket_must_exist()
                raise PermissionError(str(exc)) from None
            if exc.code == "NoSuchBucket":
                raise self._no_bucket() from None
            if exc.status == 404 and src is None and sha256 is not None:
                raise self._not_found(sha256) from None
            if exc.status in (301, 307):
                raise RemoteAccessError(
                    f"{self.remote.describe()}: the bucket is in another region ({exc}); set "
                    f"region_name in data.remotes.{self.remote.name}.options.client_kwargs"
                ) from None
            if exc.code in CORRUPT_CODES and src is not None:
                raise _RefusedError(str(exc)) from None
            raise StoreError(f"{self.remote.describe()}: {exc}") from None
        except client_errors(TimeoutError) as exc:
            raise ConnectionError(f"Cannot connect to {self.remote.url}: {exc}") from exc

    async def delete(self, hashes: list[str]) -> None:
        await self._delete_keys([self.key(sha) for sha in hashes])

    async def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            answer = await self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreError(
                    f"{len(errors)} object(s) could not be deleted from {self.remote.describe()}"
                    f" (first: {first.get('Key')}: {first.get('Code')} {first.get('Message')})"
                )

    async def get_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        key = f"{self.prefix}{name}"
        if self.conn.objects is not None:
            data: bytes = await self._fast(self.conn.objects.get_range(key, start, length), name)
            return data
        kwargs: dict[str, Any] = {}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        try:
            answer = await self._call("get_object", Key=key, **kwargs)
        except FileNotFoundError:
            raise NotFoundError(f"{name} is not on {self.remote.describe()}") from None
        async with answer["Body"] as stream:
            return bytes(await stream.read())

    async def get_blob_into(self, name: str, start: int, buffer: memoryview) -> None:
        if self.conn.objects is None:
            raise RuntimeError("this S3 remote reads through botocore: use get_blob")
        key = f"{self.prefix}{name}"
        await self._fast(self.conn.objects.get_range_into(key, start, buffer), name)

    async def list_blobs(self, folder: str) -> dict[str, tuple[int, float | None]]:
        start = f"{self.prefix}{folder}/"
        found: dict[str, tuple[int, float | None]] = {}
        token: str | None = None
        while True:
            page, token = await self._list_page(start, token)
            for key, size, modified in page:
                name = key[len(self.prefix) :]
                if "/" not in name[len(folder) + 1 :]:
                    found[name] = (size, modified)
            if token is None:
                return found

    async def delete_blobs(self, names: list[str]) -> None:
        await self._delete_keys([f"{self.prefix}{name}" for name in names])

    async def _bucket_must_exist(self) -> None:
        """Some servers answer 403 for a bucket that does not exist: say which it is."""
        try:
            await self._call("head_bucket")
        except FileNotFoundError:
            raise self._no_bucket() from None
        except Exception:  # refused too: the credentials error stands
            return

    def _no_bucket(self) -> StoreError:
        from keel.data.remote import RemoteAccessError

        return RemoteAccessError(
            f"bucket {self.bucket!r} of {self.remote.describe()} does not exist; create it "
            "(e.g. `aws s3 mb s3://BUCKET`) or fix data.remotes in keel.yaml"
        )

    def _not_found(self, sha256: str) -> NotFoundError:
        return NotFoundError(
            f"object {sha256} is not on {self.remote.describe()}; push it from a machine "
            "whose cache has it"
        )


def _ignore(nbytes: int) -> None:
    pass


def _epoch(value: Any) -> float | None:
    """botocore's LastModified (a datetime) as seconds since the epoch."""
    return float(value.timestamp()) if hasattr(value, "timestamp") else None


class _RefusedError(Exception):
    """The server refused an upload body as not matching its checksum."""


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

"""Remotes: where versioned data is shared between machines.

A remote is any fsspec URL named in keel.yaml (``data.remotes``). Objects live at
``<url>/objects/ab/cdef...`` — the cache's layout — named by their sha256, so an object is
written once and never changes; small objects are stored in packs under ``<url>/packs/``
(keel.data.packs):

    data:
      remote: storage
      remotes:
        storage: {url: "s3://bucket/keel-data", options: {endpoint_url: "http://127.0.0.1:8333"}}
        backup: {url: /mnt/nas/keel-data}

Supported and tested: local folders (relative paths resolve against the project root) and S3
or S3-compatible endpoints (SeaweedFS, MinIO, ...; options are s3fs's: key, secret,
endpoint_url, client_kwargs, ...). Any other fsspec URL — ``gs://`` with gcsfs, ``az://`` with
adlfs — goes through fsspec's generic API (tested on fsspec's in-memory filesystem; GCS and
Azure themselves are not reachable from the tests), and their uploads are verified by size only
(object-store uploads there are atomic, so a partial object never appears). See
keel.data.transfer for what "verified" means on each kind of remote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from keel.core.hashing import is_sha256
from keel.errors import InvalidInputError, NotFoundError, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from keel.data.arrival import Arrival, Copies
    from keel.data.cache import DataCache
    from keel.data.pointer import Pointer
    from keel.data.transfer import TransferProgress, TransferReport
    from keel.project import Project

HOW_TO_ADD = (
    "add one to keel.yaml, e.g.\n  data:\n    remote: storage\n    remotes:\n"
    '      storage: {url: "s3://bucket/keel-data"}   # or a folder: {url: /mnt/shared/keel}'
)


class RemoteAccessError(StoreError):
    """Raised when a remote refuses the credentials, does not exist or cannot be reached:
    nothing can be transferred, so a push or pull stops at once."""


@dataclass(frozen=True)
class Remote:
    """A named remote: ``url`` (absolute for local folders) plus fsspec ``options``.

    >>> remote = remote_for(project)                       # doctest: +SKIP
    >>> remote.missing(hashes)                              # doctest: +SKIP
    {'9f2c...'}
    >>> remote.push(cache_for(project), hashes).transferred  # doctest: +SKIP
    1
    """

    name: str
    url: str
    options: Mapping[str, Any] = field(default_factory=dict)
    jobs: int = 8

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    def object_url(self, sha256: str) -> str:
        """Where object ``sha256`` lives on this remote (e.g. for DatasetVersion.uri)."""
        if not is_sha256(sha256):
            raise InvalidInputError(f"{sha256!r} is not a sha256 hex digest (64 hex characters)")
        return f"{self.url.rstrip('/')}/objects/{sha256[:2]}/{sha256[2:]}"

    def describe(self) -> str:
        return f"remote '{self.name}' ({self.url})"

    def missing(
        self,
        hashes: Iterable[str],
        sizes: Mapping[str, int] | None = None,
        *,
        indexes: Path | None = None,
    ) -> set[str]:
        """The hashes not on the remote (an object whose size differs from ``sizes`` counts
        as missing). Reads the pack indexes (kept in ``indexes`` when given: the data
        cache's ``pack_indexes``) and lists the remote's prefixes in parallel rather than
        asking per object."""
        from keel.data import inventory

        return inventory.missing(self, hashes, sizes, indexes=indexes)

    def push(
        self,
        cache: DataCache,
        hashes: Iterable[str],
        *,
        jobs: int | None = None,
        progress: TransferProgress | None = None,
        loose: Iterable[str] = (),
    ) -> TransferReport:
        """Upload the objects of ``hashes`` that the remote lacks, verifying each one. Small
        objects travel packed, except those in ``loose`` (what pointers name themselves)."""
        from keel.data import transfer

        return transfer.push(
            self, cache, hashes, jobs=jobs or self.jobs, progress=progress, loose=loose
        )

    def pull(
        self,
        cache: DataCache,
        hashes: Iterable[str],
        *,
        jobs: int | None = None,
        sizes: Mapping[str, int] | None = None,
        progress: TransferProgress | None = None,
        stored: Callable[[str], None] | None = None,
        copies: Copies | None = None,
    ) -> TransferReport:
        """Download the objects of ``hashes`` that the cache lacks; each is sha256-verified
        before it enters the cache (and ``stored`` is told). ``sizes`` (when known) sizes
        the progress bar; ``copies`` names workspace files a large object's bytes may be
        written to as they arrive (keel.data.arrival)."""
        from keel.data import transfer

        return transfer.pull(
            self,
            cache,
            hashes,
            jobs=jobs or self.jobs,
            sizes=sizes,
            progress=progress,
            stored=stored,
            copies=copies,
        )


def remote_for(project: Project, name: str | None = None) -> Remote:
    """The remote called ``name``, else the default one (``data.remote``, or the only one).

    Unknown names and projects without remotes raise InvalidInputError saying how to fix it.

    >>> remote_for(project, "storage").url                   # doctest: +SKIP
    's3://bucket/keel-data'
    """
    found = configured_remote(project, name)
    if found is None:
        raise InvalidInputError(f"no data remote is configured; {HOW_TO_ADD}")
    return found


def configured_remote(project: Project, name: str | None = None) -> Remote | None:
    """Like remote_for, but None when no remote is configured and none is named."""
    data = project.config.data
    if name is None:
        name = data.remote
        if name is None and len(data.remotes) == 1:
            name = next(iter(data.remotes))
        if name is None:
            if data.remotes:
                raise InvalidInputError(
                    f"several data remotes are configured ({', '.join(sorted(data.remotes))}) "
                    "and none is the default; pass --remote NAME or set data.remote in keel.yaml"
                )
            return None
    config = data.remotes.get(name)
    if config is None:
        known = ", ".join(sorted(data.remotes)) or "none"
        raise InvalidInputError(
            f"data remote {name!r} is not configured (configured: {known}); "
            f"check the name, or {HOW_TO_ADD}"
        )
    url = config.url
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        path = Path(url).expanduser()
        url = str((path if path.is_absolute() else project.root / path).resolve())
    return Remote(name, url.rstrip("/") or "/", dict(config.options), data.jobs)


def objects_of(
    cache: DataCache, pointers: Iterable[Pointer], remote: Remote | None = None
) -> set[str]:
    """Every object the ``pointers`` need: file objects, folder manifests and their entries.

    A folder's manifest must be in the cache; one that is not is pulled from ``remote``
    first (a small object), else NotFoundError says how to get it.

    >>> len(objects_of(cache, [read_pointer("data/images.keel")], remote))  # doctest: +SKIP
    10001
    """
    from keel.data.manifest import parse_manifest

    pointers = list(pointers)
    manifests = {p.sha256 for p in pointers if p.kind == "dir"}
    absent = {sha for sha in manifests if not cache.has(sha)}
    if absent and remote is not None:
        remote.pull(cache, absent)
    found = {p.sha256 for p in pointers}
    for pointer in pointers:
        if pointer.kind != "dir":
            continue
        if not cache.has(pointer.sha256):
            raise NotFoundError(
                f"the manifest of folder {pointer.path} ({pointer.sha256}) is not in the data "
                "cache; `keel data pull` fetches it from the remote"
            )
        found.update(e.sha256 for e in parse_manifest(cache.read_bytes(pointer.sha256)))
    return found


class Backend(Protocol):
    """What transfer.py needs from a kind of remote. All methods run on one event loop;
    a backend owns its connections between ``open`` and ``close``."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def list_prefix(self, prefix: str) -> dict[str, int]:
        """sha256 -> size of the complete objects under ``objects/<prefix>/``."""
        ...

    async def list_small(self) -> dict[str, int] | None:
        """Every object (sha256 -> size) when a few requests can list them all (a remote
        of up to some thousands of objects), else None and the caller lists prefix by
        prefix."""
        ...

    async def stat(self, sha256: str) -> int | None:
        """The object's size, None when it is absent."""
        ...

    async def upload(
        self, sha256: str, src: Path, size: int, advance: Callable[[int], None]
    ) -> None:
        """Store ``src`` as object ``sha256`` atomically, verify it, report bytes sent."""
        ...

    async def download(self, sha256: str, dest: Path, advance: Callable[[int], None]) -> str | None:
        """Write object ``sha256`` to the local file ``dest`` (unverified: the cache checks);
        returns the sha256 of the bytes written when they were hashed on the way, else None."""
        ...

    def receives_into(self) -> bool:
        """Whether `download_into` works with this backend (else: `download`)."""
        ...

    async def download_into(
        self, sha256: str, arrival: Arrival, advance: Callable[[int], None]
    ) -> None:
        """Receive object ``sha256`` into ``arrival`` (unverified: its `finish` checks)."""
        ...

    async def delete(self, hashes: list[str]) -> None: ...

    # Named blobs beside the objects (packs and their indexes, keel.data.packs): ``name`` is
    # a path relative to the remote's url, such as "packs/<sha256>.idx".

    async def put_blob(self, name: str, data: bytes | memoryview, sha256: str) -> None:
        """Store ``data`` (which hashes to ``sha256``) as ``name`` atomically, verified."""
        ...

    async def get_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of blob ``name`` from ``start`` (all of it when None)."""
        ...

    async def get_blob_into(self, name: str, start: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the bytes of blob ``name`` from ``start``; only where
        `receives_into`. A blob that ends first raises StoreError."""
        ...

    async def list_blobs(self, folder: str) -> dict[str, tuple[int, float | None]]:
        """name -> (size, modified: seconds since the epoch, None when unknown) of the
        complete blobs directly under ``folder``."""
        ...

    async def delete_blobs(self, names: list[str]) -> None: ...


def open_backend(remote: Remote) -> Backend:
    """The backend for ``remote``'s URL scheme (a local folder, S3, or generic fsspec)."""
    if remote.protocol in ("file", "local"):
        from keel.data.backends import LocalBackend

        return LocalBackend(remote)
    if remote.protocol in ("s3", "s3a"):
        from keel.data.s3 import S3Backend

        return S3Backend(remote)
    from keel.data.backends import FsspecBackend

    return FsspecBackend(remote)


def access_error(remote: Remote, exc: BaseException) -> RemoteAccessError | None:
    """Translate a refused-credentials or unreachable-remote error from any backend into one
    RemoteAccessError naming the remote and what to check; None for other errors."""
    if isinstance(exc, RemoteAccessError):
        return exc
    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, PermissionError) or _looks_like_auth(text):
        return RemoteAccessError(
            f"{remote.describe()} refused access ({_short(text)}); check the credentials: "
            f"data.remotes.{remote.name}.options in keel.yaml (key/secret), or the "
            "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE for S3), "
            "and that they may read and write this bucket/path"
        )
    if isinstance(exc, ConnectionError) or "Could not connect" in text or "Cannot connect" in text:
        return RemoteAccessError(
            f"cannot reach {remote.describe()} ({_short(text)}); check that the server is up "
            f"and data.remotes.{remote.name} in keel.yaml points at it (endpoint_url)"
        )
    return None


_AUTH_WORDS = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "NoCredentialsError",
    "Unable to locate credentials",
    "AuthorizationHeaderMalformed",
    "Forbidden",
)


def _looks_like_auth(text: str) -> bool:
    return any(word in text for word in _AUTH_WORDS)


def _short(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."

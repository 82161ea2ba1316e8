"""`push` and `pull` of tracked data: what `keel data push` / `keel data pull` do, as library
calls.

    import keel.data

    keel.data.push(project)                        # every tracked path, to the default remote
    keel.data.pull(project, ["data/images"], remote="backup")

A push sends every object the pointer files need (folders: the manifest and each file) that
the remote lacks; what a pointer names itself stays loose, the small files of folders travel in
packs (keel.data.packs). A pull fetches what the cache lacks and makes the workspace match the
pointer files (keel.data.restore.checkout), then fetches what paths already matching the
workspace still lack in the cache, so that the cache ends complete either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.data.pointer import Pointer
    from keel.data.restore import CheckoutReport
    from keel.data.transfer import TransferProgress, TransferReport
    from keel.data.tree import ProgressFn
    from keel.project import Project


@dataclass(frozen=True)
class PullReport:
    """What a pull did: ``fetched`` objects from ``remote``, and the checkout it made."""

    remote: str
    fetched: int
    checkout: CheckoutReport
    seconds: float


def push(
    project: Project,
    paths: Sequence[str | Path] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    progress: TransferProgress | None = None,
) -> TransferReport:
    """Upload the objects of the tracked data (every tracked path, or ``paths``) that the
    remote (``remote``, else the default one) lacks; each upload is verified.

    >>> keel.data.push(project).transferred                    # doctest: +SKIP
    10005
    """
    from keel.data.cache import cache_for
    from keel.data.remote import objects_of, remote_for

    target = remote_for(project, remote)
    cache = cache_for(project)
    pointers = tracked(project, paths)
    hashes = objects_of(cache, pointers, target)
    named = {pointer.sha256 for pointer in pointers}  # keep an address of their own
    return target.push(cache, hashes, jobs=jobs, progress=progress, loose=named)


def pull(
    project: Project,
    paths: Sequence[str | Path] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    transfer_progress: TransferProgress | None = None,
) -> PullReport:
    """Download what the tracked data (every tracked path, or ``paths``) needs from the remote
    — each object sha256-verified — and update the workspace to match the pointer files
    (``force`` overwrites changes not saved with `keel data add`).

    >>> keel.data.pull(project).checkout.restored               # doctest: +SKIP
    ['data/images']
    """
    from keel.data.cache import cache_for
    from keel.data.remote import objects_of, remote_for
    from keel.data.restore import checkout

    started = time.monotonic()
    target = remote_for(project, remote)
    result = checkout(
        project,
        paths=paths,
        remote=target.name,
        force=force,
        jobs=jobs,
        progress=progress,
        transfer_progress=transfer_progress,
    )
    # Paths the workspace already matched were not fetched: their objects may still be
    # missing from the cache (restored paths had all theirs fetched).
    cache = cache_for(project)
    unchanged = set(result.unchanged)
    matched = [p for p in tracked(project, paths) if p.path in unchanged]
    manifests = target.pull(cache, {p.sha256 for p in matched if p.kind == "dir"}, jobs=jobs)
    rest = target.pull(cache, objects_of(cache, matched), jobs=jobs, progress=transfer_progress)
    fetched = result.fetched + manifests.transferred + rest.transferred
    return PullReport(target.name, fetched, result, time.monotonic() - started)


def tracked(project: Project, paths: Sequence[str | Path] | None = None) -> list[Pointer]:
    """The pointers of ``paths`` (tracked paths or their .keel files; relative ones are
    relative to the project root), else every pointer in the workspace."""
    from keel.data.paths import project_relative
    from keel.data.pointer import (
        SUFFIX,
        data_path_for,
        find_pointers,
        pointer_file_for,
        read_pointer,
        untracked,
    )

    root = project.root
    if paths is None:
        return [read_pointer(p, root) for p in find_pointers(root)]
    files = []
    for given in paths:
        path = Path(given) if Path(given).is_absolute() else root / given
        files.append(path if path.name.endswith(SUFFIX) else pointer_file_for(path))
    missing = [
        project_relative(root, data_path_for(file), must_exist=False)
        for file in files
        if not file.is_file()
    ]
    if missing:
        raise untracked(missing)
    return [read_pointer(f, root) for f in files]

"""Model manifests: one JSON object that names each file of a saved model by its sha256.

The manifest's own sha256 is the model version's ``artifact_sha256``, so that one hash pins
every byte of the model. Fetching downloads the manifest and the files through the artifact
store (which verifies each object) into a local cache folder named by that hash; a cached copy
is reused only after its files hash as the manifest says.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from keel.core.hashing import is_sha256, sha256_bytes, sha256_file
from keel.errors import ArtifactCorruptedError

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore

MANIFEST_FORMAT = "keel-model/1"
MANIFEST_FILE = "manifest.json"
MODEL_FOLDER = "model"


def upload_package(
    artifacts: ArtifactStore,
    directory: Path,
    *,
    flavor: str,
    signature: dict[str, Any] | None,
    library_versions: dict[str, str],
) -> str:
    """Store every file under ``directory`` and a manifest naming them; returns its sha256.

    >>> upload_package(project.artifacts, Path("saved"), flavor="sklearn",  # doctest: +SKIP
    ...                signature=None, library_versions={"scikit-learn": "1.9.0"})
    '3f5a...'
    """
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            info = artifacts.put_file(path)
            files[path.relative_to(directory).as_posix()] = {
                "sha256": info.sha256,
                "size": info.size,
            }
    manifest = {
        "format": MANIFEST_FORMAT,
        "flavor": flavor,
        "files": files,
        "signature": signature,
        "library_versions": library_versions,
    }
    # Canonical JSON: the same model files always give the same manifest hash.
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return artifacts.put_bytes(data).sha256


def fetch_package(artifacts: ArtifactStore, sha256: str, cache_root: Path) -> Path:
    """Return a local folder holding the model files of manifest ``sha256``, all verified.

    >>> fetch_package(project.artifacts, version.artifact_sha256, project.keel_dir / "models")
    ... # doctest: +SKIP
    PosixPath('.../.keel/models/3f5a.../model')
    """
    target = cache_root / sha256
    if target.exists() and _cache_is_intact(target, sha256):
        return target / MODEL_FOLDER
    data = artifacts.get_bytes(sha256)
    files = _parse(data, sha256)
    staging = cache_root / f".tmp-{sha256[:16]}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        for relpath, entry in files.items():
            artifacts.get_file(entry["sha256"], staging / MODEL_FOLDER / relpath)
        (staging / MODEL_FOLDER).mkdir(parents=True, exist_ok=True)
        (staging / MANIFEST_FILE).write_bytes(data)
        _install(staging, target, sha256)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / MODEL_FOLDER


def _install(staging: Path, target: Path, sha256: str) -> None:
    """Move a complete download into place; a half-written cache folder is never visible."""
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)  # a damaged copy: replace it
    try:
        os.rename(staging, target)
    except OSError:
        # Another process installed the same model first; keep its copy if it is intact.
        if not _cache_is_intact(target, sha256):
            raise


def _cache_is_intact(folder: Path, sha256: str) -> bool:
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return False
    data = manifest.read_bytes()
    if sha256_bytes(data) != sha256:
        return False
    try:
        files = _parse(data, sha256)
    except ArtifactCorruptedError:
        return False
    model = folder / MODEL_FOLDER
    present = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    if present != set(files):
        return False
    return all(
        sha256_file(model / relpath) == (entry["sha256"], entry["size"])
        for relpath, entry in files.items()
    )


def _parse(data: bytes, sha256: str) -> dict[str, dict[str, Any]]:
    """The files of a manifest, refusing any form or path that could not have been written."""
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        ok = manifest.get("format") == MANIFEST_FORMAT and isinstance(files, dict)
    except (ValueError, TypeError, KeyError, AttributeError):
        ok = False
    if ok:
        ok = all(_safe(relpath) and _entry_ok(entry) for relpath, entry in files.items())
    if not ok:
        raise ArtifactCorruptedError(
            f"model manifest {sha256} is not a valid {MANIFEST_FORMAT} manifest; "
            "re-register the model from its source"
        )
    return dict(files)


def _safe(relpath: object) -> bool:
    if not isinstance(relpath, str) or not relpath or "\\" in relpath:
        return False
    path = PurePosixPath(relpath)
    return not path.is_absolute() and ".." not in path.parts


def _entry_ok(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and is_sha256(entry["sha256"])
        and isinstance(entry.get("size"), int)
    )

"""The data benchmark's data set: 4 files of 400 MiB and 10,000 files of about 40 KiB (30 to
50 KiB, 40 on average), random bytes, 2.09 GB in all. Generated once under
.bench/data-set/ and reused; a manifest written last (relative path → sha256, size) marks it
complete and is what each side checks its pulled bytes against.

    python bench/data/dataset.py            # generate if missing, print where it is
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import CACHE_DIR, log

MIB = 1024 * 1024
KIB = 1024


@dataclass(frozen=True)
class Spec:
    large_files: int = 4
    large_size: int = 400 * MIB
    small_files: int = 10_000
    small_min: int = 30 * KIB
    small_max: int = 50 * KIB
    seed: int = 0

    @property
    def key(self) -> str:
        """Names the folder, so that a different spec never reuses another's files."""
        text = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(text).hexdigest()[:12]


FULL = Spec()
# --quick: the same shape, 1/100 of the bytes, for a smoke run of the whole pipeline.
QUICK = Spec(large_files=2, large_size=8 * MIB, small_files=500)


def ensure(spec: Spec, root: Path = CACHE_DIR / "data-set") -> Path:
    """The folder holding ``data/`` and ``manifest.json`` for ``spec``, generated if missing.

    >>> folder = ensure(QUICK)  # doctest: +SKIP
    >>> (folder / "data").is_dir()  # doctest: +SKIP
    True
    """
    folder = root / spec.key
    if (folder / "manifest.json").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # a generation that was interrupted
    log(f"generating the data set under {folder} (once)")
    files = _generate(spec, folder / "data")
    manifest = {"spec": asdict(spec), "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return folder


def load_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    return manifest


def _generate(spec: Spec, data: Path) -> dict[str, dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(spec.seed)
    files: dict[str, dict[str, Any]] = {}
    (data / "large").mkdir(parents=True)
    (data / "small").mkdir()
    for i in range(spec.large_files):
        name = f"large/part-{i}.bin"
        digest = hashlib.sha256()
        with (data / name).open("wb") as out:
            for offset in range(0, spec.large_size, 64 * MIB):  # bounded memory
                chunk = rng.bytes(min(64 * MIB, spec.large_size - offset))
                digest.update(chunk)
                out.write(chunk)
        files[name] = {"sha256": digest.hexdigest(), "size": spec.large_size}
    sizes = rng.integers(spec.small_min, spec.small_max + 1, size=spec.small_files)
    for i, size in enumerate(sizes.tolist()):
        name = f"small/s{i:05d}.bin"
        chunk = rng.bytes(size)
        (data / name).write_bytes(chunk)
        files[name] = {"sha256": hashlib.sha256(chunk).hexdigest(), "size": size}
    return files


def total_bytes(manifest: dict[str, Any]) -> int:
    return sum(int(entry["size"]) for entry in manifest["files"].values())


if __name__ == "__main__":
    spec = QUICK if "--quick" in sys.argv else FULL
    where = ensure(spec)
    manifest = load_manifest(where)
    print(f"{where}: {len(manifest['files']):,} files, {total_bytes(manifest) / 1e9:.2f} GB")

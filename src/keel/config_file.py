"""Where a project's configuration comes from, and the part of it remembered between commands.

Validating keel.yaml takes pydantic, whose import and model building cost a command such as
`keel data status` (or a git hook's `keel data checkout`) more than the work itself. So after a
successful validation the project writes what the hot data commands need — the cache folder,
link types, jobs and the remotes' names, never a URL or an option (they may hold credentials) —
to ``.keel/data-settings.json``, under a fingerprint of every input of the configuration:
keel.yaml's bytes, the ``KEEL_*`` environment and the configuration code itself. A later command
whose inputs have the same fingerprint reads those settings back without pydantic; any change
(or an unreadable file) means a full validation, which also surfaces a mistake in keel.yaml at
once, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "keel.yaml"
ENV_PREFIX = "KEEL_"
SNAPSHOT_FILE = "data-settings.json"
_FORMAT = 1  # bump when DataSettings changes shape


@dataclass(frozen=True)
class DataSettings:
    """What `keel.data` reads of the ``data`` section without needing a remote's address."""

    cache: str
    link: tuple[str, ...]
    jobs: int
    remote: str | None  # the default remote's name
    remote_names: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSettings:
        return cls(
            cache=str(data["cache"]),
            link=tuple(str(link) for link in data["link"]),
            jobs=int(data["jobs"]),
            remote=None if data["remote"] is None else str(data["remote"]),
            remote_names=tuple(str(name) for name in data["remote_names"]),
        )


def fingerprint(root: Path, environ: Mapping[str, str]) -> str:
    """A digest of everything the configuration is resolved from."""
    digest = hashlib.sha256(f"keel-config/{_FORMAT}\0".encode())
    try:
        digest.update((root / CONFIG_FILE).read_bytes())
    except OSError:
        digest.update(b"\0no keel.yaml\0")
    for name in sorted(key for key in environ if key.startswith(ENV_PREFIX)):
        digest.update(f"\0{name}={environ[name]}".encode())
    # the defaults and rules live in keel/config.py: a new version of it is a new input
    code = os.stat(Path(__file__).with_name("config.py"))
    digest.update(f"\0{code.st_size}:{code.st_mtime_ns}".encode())
    return digest.hexdigest()


def read_snapshot(keel_dir: Path, expected: str) -> DataSettings | None:
    """The remembered settings if they were written for ``expected``, else None."""
    try:
        saved = json.loads((keel_dir / SNAPSHOT_FILE).read_text("utf-8"))
        if saved.get("fingerprint") != expected:
            return None
        return DataSettings.from_dict(saved["data"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, half-written or from another version: validate instead


def write_snapshot(keel_dir: Path, fingerprint_: str, settings: DataSettings) -> None:
    """Remember ``settings`` (atomically: a reader sees the old file or the new one). Only in an
    existing ``.keel`` folder; a read-only project just validates every time."""
    if not keel_dir.is_dir():
        return
    target = keel_dir / SNAPSHOT_FILE
    temporary = target.with_name(f".{SNAPSHOT_FILE}.{os.getpid()}")
    payload = {"fingerprint": fingerprint_, "data": asdict(settings)}
    try:
        temporary.write_text(json.dumps(payload), "utf-8")
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)

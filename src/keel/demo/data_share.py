"""The demo's data shared the way a team shares it: pushed to a remote named in keel.yaml
(`keel data push`), then pulled into a fresh git clone of the project (`keel data pull`),
which must end up with the same bytes and a clean `keel data status`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.project import Project

REMOTE_NAME = "shared"
REMOTE_FOLDER = "remote-storage"  # a folder remote inside the demo project (git-ignored)


@dataclass(frozen=True)
class DataShare:
    """``pushed`` objects (``bytes``) to ``remote``; a fresh clone ``pulled`` objects and
    ``identical`` says whether its data matched byte for byte with a clean status."""

    remote: str
    pushed: int
    bytes: int
    pulled: int
    identical: bool


def share_data(project: Project, commit: Callable[[str, str], None]) -> DataShare:
    """Configure the folder remote, commit it (``commit(paths, message)``), push, clone the
    repository into a temporary folder and pull there."""
    import keel.data
    from keel.project import Project

    root = project.root
    remote = root / REMOTE_FOLDER
    config = root / "keel.yaml"
    config.write_text(
        config.read_text("utf-8").replace(
            "  remotes: {}",
            f"  remote: {REMOTE_NAME}\n  remotes:\n    {REMOTE_NAME}: {{url: '{remote}'}}",
        ),
        "utf-8",
    )
    with (root / ".gitignore").open("a", encoding="utf-8") as ignore:
        ignore.write(f"{REMOTE_FOLDER}/\n")
    commit("keel.yaml .gitignore", "Share the data through a folder remote")

    shared = Project(root, environ={})
    try:
        pushed = keel.data.push(shared)
    finally:
        shared.close()
    with tempfile.TemporaryDirectory(prefix="keel-demo-clone-") as folder:
        clone = Path(folder) / "clone"
        _clone(root, clone)
        cloned = Project(clone, environ={})
        try:
            pulled = keel.data.pull(cloned)
            identical = keel.data.status(cloned).clean and _same_files(root, clone)
        finally:
            cloned.close()
    return DataShare(str(remote), pushed.transferred, pushed.bytes, pulled.fetched, identical)


def _same_files(root: Path, clone: Path) -> bool:
    mine = {p.relative_to(root): p for p in (root / "data").rglob("*") if p.is_file()}
    theirs = {p.relative_to(clone): p for p in (clone / "data").rglob("*") if p.is_file()}
    return mine.keys() == theirs.keys() and all(
        mine[k].read_bytes() == theirs[k].read_bytes() for k in mine
    )


def _clone(root: Path, clone: Path) -> None:
    """`git clone`; without git, what a clone would hold of Keel's: keel.yaml and the
    pointer files."""
    try:
        subprocess.run(
            ["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True
        )
        return
    except (OSError, subprocess.CalledProcessError):
        pass
    from keel.data.pointer import find_pointers

    shutil.rmtree(clone, ignore_errors=True)
    for path in [root / "keel.yaml", *find_pointers(root)]:
        target = clone / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)

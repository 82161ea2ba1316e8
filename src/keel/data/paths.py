"""Which paths may be versioned, and the .gitignore entries that keep the data out of git."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from keel.data.pointer import SUFFIX, pointer_file_for
from keel.errors import InvalidInputError

RESERVED = frozenset({".keel", ".git"})


def project_relative(root: Path, path: str | Path, *, must_exist: bool = True) -> str:
    """The posix path of ``path`` relative to project ``root`` (a relative ``path`` is taken
    relative to the root), after checking it may be versioned.

    >>> project_relative(Path("/p"), "/p/data/train.csv")
    'data/train.csv'
    """
    given = Path(path)
    full = Path(os.path.normpath(given if given.is_absolute() else root / given))
    try:
        rel = full.relative_to(root)
    except ValueError:
        raise InvalidInputError(
            f"{path} is outside the project at {root}; move the data into the project "
            "(or run keel from the project that holds it)"
        ) from None
    parts = rel.parts
    if not parts:
        raise InvalidInputError(
            f"{path} is the project root; version a data file or folder inside it"
        )
    if parts[0] in RESERVED or ".git" in parts:
        raise InvalidInputError(f"{path} is inside {parts[0]}/, which Keel and git manage")
    if full.name.endswith(SUFFIX):
        raise InvalidInputError(
            f"{path} is a pointer file; pass the data path ({full.name[: -len(SUFFIX)]})"
        )
    if must_exist and not os.path.lexists(full):
        raise InvalidInputError(f"{path} does not exist; check the path")
    return rel.as_posix()


def check_not_nested(root: Path, rel: str) -> None:
    """Refuse data inside an already tracked folder."""
    parts = rel.split("/")
    for n in range(1, len(parts)):
        parent = "/".join(parts[:n])
        if pointer_file_for(root / parent).is_file():
            raise InvalidInputError(
                f"{rel} is inside the tracked folder {parent}; run `keel data add {parent}` to "
                "record its new state"
            )


def check_no_pointers_inside(rel: str, names: Iterable[str]) -> None:
    """Refuse a folder whose files (``names``, relative to it) include pointer files."""
    inner = next((name for name in names if name.endswith(SUFFIX)), None)
    if inner is not None:
        raise InvalidInputError(
            f"{rel} holds tracked data ({rel}/{inner}); add the folders inside it one by one "
            "or remove that pointer first"
        )


def ignore_in_git(root: Path, rel: str) -> bool:
    """Add ``/NAME`` to the .gitignore next to the data at ``rel``; True when it changed."""
    data = root / rel
    ignore = data.parent / ".gitignore"
    entry = "/" + data.name
    lines = ignore.read_text("utf-8").splitlines() if ignore.exists() else []
    if entry in lines or data.name in lines:
        return False
    text = "\n".join([*lines, entry]) + "\n"
    temp = ignore.with_name(f".gitignore.keel-tmp-{os.getpid()}")
    try:
        temp.write_text(text, "utf-8")
        os.replace(temp, ignore)
    finally:
        temp.unlink(missing_ok=True)
    return True

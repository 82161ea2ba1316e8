"""Pointer files: the small ``PATH.keel`` file committed to git in place of the data at PATH.

A pointer names the data by content (sha256 of the file, or of the folder's manifest object),
with its size and file count, so a git commit pins the exact bytes of every dataset:

    # keel data pointer: commit this file to git; the data itself lives in the keel cache/remote
    kind: dir
    sha256: 9f2c...        (64 hex digits)
    size: 2090000000       (bytes of data: the file, or the sum of the folder's files)
    files: 10004

The file is strict: a hand-edited pointer that does not hold exactly these keys with valid
values is refused with an error naming the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from keel.data.manifest import is_sha256
from keel.errors import InvalidInputError, NotFoundError

SUFFIX = ".keel"
HEADER = "# keel data pointer: commit this file to git; the data lives in the keel cache/remote\n"
KEYS = ("kind", "sha256", "size", "files")
# Folders never searched for pointer files: Keel's own state, git's, and bulky tool folders.
SKIP_DIRS = frozenset(
    {".keel", ".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".tox"}
)

Kind = Literal["file", "dir"]


@dataclass(frozen=True)
class Pointer:
    """A versioned file or folder: ``path`` is the data's path relative to the project root
    (posix form, e.g. ``data/train.csv``); the pointer file is ``path + ".keel"``.

    >>> Pointer("data/train.csv", "ab" * 32, 1024, 1, "file").pointer_name
    'data/train.csv.keel'
    """

    path: str
    sha256: str
    size: int
    files: int
    kind: Kind

    @property
    def pointer_name(self) -> str:
        return self.path + SUFFIX

    def data_path(self, root: Path) -> Path:
        return root / self.path

    def pointer_path(self, root: Path) -> Path:
        return root / self.pointer_name


def pointer_file_for(data_path: Path) -> Path:
    """``data/train.csv`` -> ``data/train.csv.keel``."""
    return data_path.with_name(data_path.name + SUFFIX)


def data_path_for(pointer_path: Path) -> Path:
    """``data/train.csv.keel`` -> ``data/train.csv``."""
    if not pointer_path.name.endswith(SUFFIX) or pointer_path.name == SUFFIX:
        raise InvalidInputError(f"{pointer_path} is not a pointer file (expected NAME{SUFFIX})")
    return pointer_path.with_name(pointer_path.name[: -len(SUFFIX)])


def untracked(paths: Iterable[str], where: str = "in the workspace") -> NotFoundError:
    """The error for data paths that have no pointer file (the same for every command)."""
    return NotFoundError(
        f"no pointer file for {', '.join(sorted(paths))} {where}; `keel data status` lists "
        "the tracked paths, `keel data add PATH` starts tracking one"
    )


def read_pointer(path: str | Path, root: str | Path | None = None) -> Pointer:
    """Read and validate the pointer file at ``path``.

    ``root`` is the project root that ``Pointer.path`` is relative to (default: the nearest
    folder holding keel.yaml above the pointer, else the pointer's own folder).

    >>> read_pointer("data/train.csv.keel").sha256        # doctest: +SKIP
    '9f2c...'
    """
    file = Path(path).absolute()
    base = Path(root).absolute() if root is not None else _find_root(file.parent)
    try:
        text = file.read_text("utf-8")
    except FileNotFoundError:
        raise InvalidInputError(
            f"pointer file {file} does not exist; `keel data add PATH` creates it"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read pointer file {file}: {exc}") from None
    rel = _relative(data_path_for(file), base)
    return parse_pointer(text, rel, source=str(file))


def parse_pointer(text: str, path: str, *, source: str | None = None) -> Pointer:
    """Validate pointer-file ``text`` for the data at project-relative ``path`` (used for
    pointer files read from git at another revision, too)."""
    where = source or path + SUFFIX
    fix = f"restore it with `git checkout -- {path}{SUFFIX}` or run `keel data add {path}` again"
    data = _simple_mapping(text)
    if data is None:
        data = _yaml_mapping(text, where, fix)
    keys = set(data)
    if keys != set(KEYS):
        odd = sorted(keys - set(KEYS)) or None
        lacking = sorted(set(KEYS) - keys) or None
        detail = ", ".join(
            part
            for part in (
                f"unknown keys {odd}" if odd else "",
                f"missing keys {lacking}" if lacking else "",
            )
            if part
        )
        raise InvalidInputError(f"pointer file {where} has {detail}; {fix}")
    kind, sha, size, files = (data[k] for k in KEYS)
    problem = _problem(kind, sha, size, files)
    if problem:
        raise InvalidInputError(f"pointer file {where}: {problem}; {fix}")
    return Pointer(path, sha, int(size), int(files), "file" if kind == "file" else "dir")


def _simple_mapping(text: str) -> dict[str, Any] | None:
    """The pointer as Keel writes it (``key: value`` lines), without the cost of YAML; None
    for anything else, which then goes through the YAML parser."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(": ")
        if not sep or key not in KEYS or key in out or not value or value != value.strip():
            return None
        if value[0] in "\"'[{&*!|>%@`#":
            return None
        out[key] = value
    return out


def _yaml_mapping(text: str, where: str, fix: str) -> dict[str, Any]:
    import yaml

    try:
        # BaseLoader keeps every scalar a string: a hash of only digits stays a hash.
        data: Any = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        raise InvalidInputError(f"pointer file {where} is not valid YAML; {fix}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"pointer file {where} is not a mapping of {KEYS}; {fix}")
    return {str(key): value for key, value in data.items()}


def _problem(kind: Any, sha: Any, size: Any, files: Any) -> str:
    if kind not in ("file", "dir"):
        return f"kind must be 'file' or 'dir' (got {kind!r})"
    if not isinstance(sha, str) or not is_sha256(sha):
        return f"sha256 must be 64 lowercase hex digits (got {sha!r})"
    for name, value in (("size", size), ("files", files)):
        if not isinstance(value, str) or not value.isascii() or not value.isdigit():
            return f"{name} must be a non-negative integer (got {value!r})"
    if kind == "file" and files != "1":
        return f"a file pointer has files: 1 (got {files!r})"
    return ""


def render_pointer(pointer: Pointer) -> str:
    """The exact text of a pointer file (stable, so unchanged data leaves git clean)."""
    return (
        HEADER
        + f"kind: {pointer.kind}\nsha256: {pointer.sha256}\n"
        + f"size: {pointer.size}\nfiles: {pointer.files}\n"
    )


def write_pointer(pointer: Pointer, root: str | Path) -> Path:
    """Write ``pointer`` next to its data under project ``root`` atomically (temp + rename):
    a reader sees the old pointer or the new one, never half of one. Returns the file.

    >>> write_pointer(Pointer("data/x.csv", sha, 10, 1, "file"), project.root)  # doctest: +SKIP
    """
    target = Path(root) / pointer.pointer_name
    text = render_pointer(pointer)
    try:
        if target.read_text("utf-8") == text:
            return target  # unchanged: keep the mtime so tools watching it stay quiet
    except (OSError, UnicodeDecodeError):
        pass
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        temp.write_text(text, "utf-8")
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def find_pointers(root: str | Path) -> list[Path]:
    """Every ``*.keel`` pointer file under project ``root``, sorted, skipping .keel/, .git/,
    virtualenvs and the data folders that pointers track (a tracked folder holds no pointers).

    >>> find_pointers(project.root)                       # doctest: +SKIP
    [PosixPath('/p/data/images.keel'), PosixPath('/p/data/train.csv.keel')]
    """
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        tracked = {f[: -len(SUFFIX)] for f in files if f.endswith(SUFFIX) and f != SUFFIX}
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and d not in tracked)
        found.extend(
            Path(folder, f)
            for f in files
            if f.endswith(SUFFIX) and f != SUFFIX and Path(folder, f).is_file()
        )
    return sorted(found)


def _find_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / "keel.yaml").is_file():
            return folder
    return start


def _relative(data: Path, root: Path) -> str:
    try:
        return data.relative_to(root).as_posix()
    except ValueError:
        raise InvalidInputError(
            f"{data} is outside the project at {root}; keep versioned data inside the project"
        ) from None

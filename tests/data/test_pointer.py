"""Pointer files and folder manifests: strict formats that round-trip and refuse hand edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.data.manifest import Entry, build_manifest, parse_manifest
from keel.data.pointer import (
    Pointer,
    find_pointers,
    parse_pointer,
    read_pointer,
    render_pointer,
    write_pointer,
)
from keel.errors import InvalidInputError

SHA = "ab" * 32

shas = st.text("0123456789abcdef", min_size=64, max_size=64)
sizes = st.integers(min_value=0, max_value=2**62)


@given(sha=shas, size=sizes, files=st.integers(min_value=0, max_value=10**7))
def test_pointer_text_round_trips(sha: str, size: int, files: int) -> None:
    pointer = Pointer("data/images", sha, size, files, "dir")
    assert parse_pointer(render_pointer(pointer), "data/images") == pointer


def test_write_then_read_is_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text("project: p\n")
    pointer = Pointer("data/train.csv", SHA, 10, 1, "file")
    (tmp_path / "data").mkdir()
    file = write_pointer(pointer, tmp_path)
    assert file == tmp_path / "data" / "train.csv.keel"
    assert read_pointer(file) == pointer  # root found from keel.yaml
    assert read_pointer(file, tmp_path) == pointer
    assert not [p for p in (tmp_path / "data").iterdir() if "tmp" in p.name]


def test_rewriting_the_same_pointer_keeps_the_file(tmp_path: Path) -> None:
    pointer = Pointer("x.bin", SHA, 1, 1, "file")
    file = write_pointer(pointer, tmp_path)
    before = file.stat().st_mtime_ns, file.stat().st_ino
    write_pointer(pointer, tmp_path)
    assert (file.stat().st_mtime_ns, file.stat().st_ino) == before


BAD_EDITS = {
    "not yaml": "kind: [file\n",
    "a list": "- 1\n",
    "unknown key": f"kind: file\nsha256: {SHA}\nsize: 1\nfiles: 1\nmd5: x\n",
    "missing key": f"kind: file\nsha256: {SHA}\nsize: 1\n",
    "short hash": "kind: file\nsha256: abc\nsize: 1\nfiles: 1\n",
    "upper-case hash": f"kind: file\nsha256: {SHA.upper()}\nsize: 1\nfiles: 1\n",
    "negative size": f"kind: file\nsha256: {SHA}\nsize: -1\nfiles: 1\n",
    "text size": f"kind: file\nsha256: {SHA}\nsize: big\nfiles: 1\n",
    "bool files": f"kind: dir\nsha256: {SHA}\nsize: 1\nfiles: true\n",
    "bad kind": f"kind: link\nsha256: {SHA}\nsize: 1\nfiles: 1\n",
    "file with 2 files": f"kind: file\nsha256: {SHA}\nsize: 1\nfiles: 2\n",
}


@pytest.mark.parametrize("text", BAD_EDITS.values(), ids=BAD_EDITS.keys())
def test_a_hand_edited_pointer_names_the_file_and_the_fix(tmp_path: Path, text: str) -> None:
    file = tmp_path / "train.csv.keel"
    file.write_text(text)
    with pytest.raises(InvalidInputError) as err:
        read_pointer(file, tmp_path)
    message = str(err.value)
    assert str(file) in message
    assert "git checkout -- train.csv.keel" in message
    assert "keel data add train.csv" in message


def test_reading_a_missing_pointer_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="keel data add"):
        read_pointer(tmp_path / "nothing.keel", tmp_path)


def test_find_pointers_skips_keel_git_and_tracked_folders(tmp_path: Path) -> None:
    for rel in ["a.csv.keel", "d/b.keel", ".keel/c.keel", ".git/x.keel", "d/b/inner.keel"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "d" / "b").mkdir(exist_ok=True)
    found = [p.relative_to(tmp_path).as_posix() for p in find_pointers(tmp_path)]
    assert found == ["a.csv.keel", "d/b.keel"]


entries = st.dictionaries(
    st.lists(
        st.text(
            st.characters(exclude_characters="/\0", exclude_categories=["Cs"]), min_size=1
        ).filter(lambda s: s not in (".", "..")),
        min_size=1,
        max_size=3,
    ).map("/".join),
    st.tuples(shas, sizes),
    max_size=20,
)


@given(entries)
def test_manifest_round_trips_and_is_canonical(found: dict[str, tuple[str, int]]) -> None:
    items = [Entry(path, sha, size) for path, (sha, size) in found.items()]
    data = build_manifest(items)
    assert build_manifest(reversed(items)) == data  # order-independent bytes
    assert parse_manifest(data) == sorted(items)
    rows = [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in sorted(items)]
    assert data == json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", "", "a\0b"])
def test_manifest_refuses_paths_that_escape_the_folder(path: str) -> None:
    data = json.dumps([{"path": path, "sha256": SHA, "size": 1}]).encode()
    with pytest.raises(InvalidInputError, match="not a safe relative path"):
        parse_manifest(data)


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b"{}",
        b'[{"path":"a","sha256":"x","size":1}]',
        b'[{"path":"a","size":1}]',
        b'[{"path":"b","sha256":"' + SHA.encode() + b'","size":1},'
        b'{"path":"a","sha256":"' + SHA.encode() + b'","size":1}]',
    ],
    ids=["json", "not a list", "bad hash", "missing key", "unsorted"],
)
def test_manifest_refuses_malformed_bytes(data: bytes) -> None:
    with pytest.raises(InvalidInputError, match="manifest"):
        parse_manifest(data)


def test_manifest_refuses_duplicates() -> None:
    with pytest.raises(InvalidInputError, match="twice"):
        build_manifest([Entry("a", SHA, 1), Entry("a", SHA, 2)])

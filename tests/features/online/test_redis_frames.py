"""Rows and keys framed as RESP arguments: the vectorized frames are byte for byte what
formatting each argument on its own gives."""

from __future__ import annotations

import numpy as np
import pytest

from keel.features.online.codec import Layout
from keel.features.online.columns import to_column
from keel.features.online.redis_wire import PairFrames, RowFrames, bulk


def packed(rows: int, *, text: bool) -> tuple[list[bytes], object]:
    """Rows of a float, an int (with nulls) and, with ``text``, a str feature; with the
    packed bytes of each row (made one by one) and the Packed block."""
    from keel.features.online.codec import pack_rows

    values = {
        "f": to_column("f", np.linspace(-1, 1, rows), rows),
        "i": to_column("i", [None if r % 3 == 0 else r for r in range(rows)], rows),
    }
    if text:
        values["s"] = to_column("s", ["é" * (r % 4) for r in range(rows)], rows)
    layout = Layout("v", "1", list(values), "".join(c.kind for c in values.values()))
    event = np.arange(rows, dtype=np.int64) - 3
    prefix = (event, event * 2)
    block = pack_rows(layout, list(values.values()), rows, prefix)
    return block.rows(), block


def resp(*arguments: bytes) -> bytes:
    return b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in arguments)


@pytest.mark.parametrize("text", [False, True])
def test_row_frames_are_bulk_strings(text: bool) -> None:
    rows, block = packed(11, text=text)
    frames = RowFrames(block, offset=100)  # type: ignore[arg-type]
    assert frames.offset == 100
    for start, end in [(0, 11), (2, 5), (10, 11)]:
        assert bytes(frames.frame(start, end)) == bulk(rows[start:end])


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("keys_as", ["table", "same-length list", "mixed-length list"])
def test_pair_frames_alternate_prefixed_keys_and_rows(text: bool, keys_as: str) -> None:
    rows, block = packed(11, text=text)
    prefix = b"shop:r:v:"
    keys = [b"i" + r.to_bytes(8, "big") for r in range(11)]
    given: object = keys
    if keys_as == "table":
        given = np.frombuffer(b"".join(keys), np.uint8).reshape(11, 9)
    elif keys_as == "mixed-length list":
        keys = [b"s" + b"x" * r for r in range(11)]
        given = keys
    frames = PairFrames(prefix, given, block, offset=7)  # type: ignore[arg-type]
    assert frames.offset == 7
    for start, end in [(0, 11), (3, 4), (6, 11)]:
        pairs = [a for r in range(start, end) for a in (prefix + keys[r], rows[r])]
        assert bytes(frames.frame(start, end)) == resp(*pairs)

"""In-process caches of a store's catalog, shared by the backends' read paths.

Layouts are immutable (their id is a hash of their content), so a layout once fetched is cached
for the life of the store. Each view's feature names are cached to validate requests without a
round trip; a request naming an unknown feature refreshes the entry once before failing, so a
view re-versioned by another process is picked up.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from keel.errors import InvalidInputError, NotFoundError
from keel.features.online.codec import Layout, Projector

_LAYOUT_ID = struct.Struct("<q")
_MAX_CHECKED = 4096

FetchLayout = Callable[[int], "str | bytes | None"]
FetchView = Callable[[str], "str | bytes | None"]
Decoder = Callable[[bytes, int], "tuple[tuple[Any, ...], str] | None"]


def view_entry(version: str, features: list[str]) -> str:
    """The JSON a store keeps per view: its current version and feature names."""
    return json.dumps({"version": version, "features": features}, separators=(",", ":"))


def entry_version(entry: str | bytes) -> str:
    version: str = json.loads(entry)["version"]
    return version


class Catalog:
    """Layout and view caches over two backend look-ups (each returns stored JSON or None)."""

    def __init__(self, fetch_layout: FetchLayout, fetch_view: FetchView) -> None:
        self._fetch_layout = fetch_layout
        self._fetch_view = fetch_view
        self._layouts: dict[int, Layout] = {}
        self._checked: set[tuple[str, tuple[str, ...]]] = set()

    def check(self, view: str, features: tuple[str, ...]) -> None:
        """Raise unless ``view`` exists and its current version has every one of ``features``."""
        if (view, features) in self._checked:
            return
        entry = self._fetch_view(view)
        if entry is None:
            raise NotFoundError(
                f"the online store has no feature view {view!r}; materialize it first "
                "(`keel features materialize`)"
            )
        known = json.loads(entry)["features"]
        unknown = [name for name in features if name not in known]
        if unknown:
            raise InvalidInputError(
                f"feature view {view!r} has no feature {unknown[0]!r} in its current version; "
                f"its features: {', '.join(known)}"
            )
        if len(self._checked) >= _MAX_CHECKED:
            self._checked.clear()
        self._checked.add((view, features))

    def decoder(self, features: tuple[str, ...]) -> Decoder:
        """A function giving (values of ``features``, version) of the row packed at
        ``blob[start:]`` — None when the row's layout is gone (its view is being deleted).

        Made once per read: the layout and projection of each layout id are looked up once,
        not once per row.
        """
        resolved: dict[int, tuple[Layout, Projector | None] | None] = {}
        unpack_id = _LAYOUT_ID.unpack_from

        def decode(blob: bytes, start: int) -> tuple[tuple[Any, ...], str] | None:
            layout_id = unpack_id(blob, start)[0]
            try:
                entry = resolved[layout_id]
            except KeyError:
                entry = resolved[layout_id] = self._resolve(layout_id, features)
            if entry is None:
                return None
            layout, project = entry
            values = layout.decode(blob, start)
            return (values if project is None else project(values)), layout.version

        return decode

    def _resolve(
        self, layout_id: int, features: tuple[str, ...]
    ) -> tuple[Layout, Projector | None] | None:
        layout = self._layouts.get(layout_id) or self._load(layout_id)
        return None if layout is None else (layout, layout.projector(features))

    def remember(self, layout: Layout) -> None:
        self._layouts[layout.id] = layout

    def forget(self, view: str) -> None:
        """Drop what is cached about ``view`` (after deleting it)."""
        self._checked = {item for item in self._checked if item[0] != view}
        self._layouts = {k: v for k, v in self._layouts.items() if v.view != view}

    def _load(self, layout_id: int) -> Layout | None:
        spec = self._fetch_layout(layout_id)
        if spec is None:
            return None
        layout = self._layouts[layout_id] = Layout.from_spec(spec)
        return layout

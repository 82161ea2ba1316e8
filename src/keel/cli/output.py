"""How the CLI prints: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour, no wrapping) so scripts can parse it."""
    print(json.dumps(data, default=_default, indent=2, sort_keys=False))


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    markup: bool = False,
) -> None:
    """A table; cells are plain text (user data such as '[x]' stays literal) unless ``markup``
    says the caller escaped them and added rich markup on purpose."""
    table = Table(title=_plain(title), show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(value, markup) for value in row))
    console.print(table)


def print_fields(title: str, fields: Iterable[tuple[str, Any]], *, markup: bool = False) -> None:
    table = Table(title=_plain(title), show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in fields:
        table.add_row(Text(name), _cell(value, markup))
    console.print(table)


def _cell(value: Any, markup: bool) -> str | Text:
    text = format_value(value)
    return text if markup else Text(text)


def _plain(title: str | None) -> Text | None:
    return None if title is None else Text(title, style="bold")


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    return str(value)

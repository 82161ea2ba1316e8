"""Identifiers: run ids are 32 hex characters, sortable by creation time."""

from __future__ import annotations

import os
import time


def new_id() -> str:
    # A millisecond prefix keeps ids roughly time-ordered (index-friendly); 10 random bytes
    # make collisions across processes practically impossible.
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"

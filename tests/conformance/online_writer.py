"""A writer process for the concurrent-writers conformance test.

    python -m tests.conformance.online_writer URL VIEW SEED BARRIER_DIR

Writes ``plan(SEED)`` batch by batch once every writer is ready (each drops a file in
BARRIER_DIR and waits for the others), so the writes interleave; the test recomputes the same
plans to know the winners.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

WRITERS = 2
KEYS = 200
BATCHES = 30
ROWS_PER_BATCH = 150


def plan(seed: int) -> list[list[tuple[int, int]]]:
    """Batches of (key, event_us); event parity is the seed's, so writers never tie."""
    rng = random.Random(seed)
    return [
        [
            (rng.randrange(KEYS), rng.randrange(1_000_000) * 2 + seed % 2)
            for _ in range(ROWS_PER_BATCH)
        ]
        for _ in range(BATCHES)
    ]


def main(url: str, view: str, seed: int, barrier: Path) -> None:
    from keel.features.online import RowBatch, open_online_store

    store = open_online_store(url)
    (barrier / f"ready-{seed}").touch()
    deadline = time.monotonic() + 30
    while len(list(barrier.iterdir())) < WRITERS and time.monotonic() < deadline:
        time.sleep(0.001)
    try:
        for batch in plan(seed):
            keys = [(key, "k") for key, _ in batch]
            events = [event for _, event in batch]
            rows = RowBatch(
                keys=keys,
                features={"writer": [seed] * len(batch), "event": events},
                event_ts=events,
            )
            store.write_batch(view, "v1", rows)
    finally:
        store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))

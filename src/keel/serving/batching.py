"""Adaptive batching: the predict requests that arrive together are answered in one pass.

An online lookup or a model call costs about the same for one row as for twenty, so under load
a server that predicts request by request spends most of its time on per-call overhead. The
batcher merges the requests for an endpoint that are waiting at the same moment of the event
loop — no timer, no added wait: a request alone is predicted at once, as before; requests that
arrive while the loop is busy are predicted together when it gets to them. Each request still
gets only its own predictions, its own request ids, and its own error (see
``Predictor.predict_batch``).

    batcher = Batcher(predictor)
    served = await batcher.predict("fraud", [{"user_id": 7, "amount": 12.5}])
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.serving.predict import Predictor, Served

_Waiting = tuple[object, "asyncio.Future[Served]"]


class Batcher:
    """Gathers the predict requests waiting in one event-loop turn, per endpoint."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self._waiting: dict[str, list[_Waiting]] = {}

    async def predict(self, name: str, rows: object) -> Served:
        """``rows``' answer from endpoint ``name``, predicted with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Served] = loop.create_future()
        waiting = self._waiting.setdefault(name, [])
        waiting.append((rows, future))
        if len(waiting) == 1:
            # Runs after every callback already due in this turn: the requests whose bytes
            # arrived together have all reached this point by then.
            loop.call_soon(self._flush, name)
        return await future

    def _flush(self, name: str) -> None:
        waiting = self._waiting.pop(name, [])
        if not waiting:
            return
        try:
            results: list[Served | KeelError] = self.predictor.predict_batch(
                name, [rows for rows, _ in waiting]
            )
        except Exception as exc:  # not a request's fault: every waiting request gets it
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(waiting, results, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(result, KeelError):
                future.set_exception(result)
            else:
                future.set_result(result)

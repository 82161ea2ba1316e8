"""``POST /v1/feedback``: labels or outcomes for predictions already made, whenever they arrive.

    POST /v1/feedback  {"request_id": "5f0c...", "label": 1}
    POST /v1/feedback  {"items": [{"request_id": "5f0c...", "outcome": 12.5, "time": "..."}]}
    202 {"accepted": 1}

Feedback is appended to the prediction log's feedback segments and joined to the predictions
by request id when they are read (keel.serving.predlog.read_predictions); the newest wins.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from keel.errors import InvalidInputError

router = APIRouter(tags=["feedback"])


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    label: Any = None
    outcome: Any = None
    time: datetime | None = Field(default=None, description="when it was observed (default: now)")


class FeedbackRequest(BaseModel):
    """One item (its fields at the top level) or a batch under ``items``."""

    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackItem] | None = None
    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    label: Any = None
    outcome: Any = None
    time: datetime | None = None


@router.post("/v1/feedback", status_code=202)
async def feedback(body: FeedbackRequest, request: Request) -> dict[str, int]:
    """Attach a label or an outcome to the predictions of one or more request ids."""
    if (body.items is None) == (body.request_id is None):
        raise InvalidInputError("send exactly one of 'request_id' (one item) or 'items' (a batch)")
    items = body.items or [
        FeedbackItem(
            request_id=str(body.request_id), label=body.label, outcome=body.outcome, time=body.time
        )
    ]
    log = request.app.state.feedback
    for item in items:
        if item.label is None and item.outcome is None:
            raise InvalidInputError(
                f"feedback for request {item.request_id!r} has neither 'label' nor 'outcome'; "
                "send one of them"
            )
        if item.time is not None and item.time.tzinfo is None:
            raise InvalidInputError(
                f"feedback time {item.time.isoformat()} has no time zone; send e.g. "
                "2026-03-01T12:00:00Z"
            )
    for item in items:
        when = item.time or datetime.now(UTC)
        time_us = int(when.timestamp() * 1_000_000)
        log.attach(item.request_id, label=item.label, outcome=item.outcome, time_us=time_us)
    return {"accepted": len(items)}

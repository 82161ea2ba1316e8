"""Keel's own JSON protocol: ``POST /v1/endpoints/{name}/predict``.

A request carries one row (``{"row": {...}}``) or a batch (``{"rows": [...]}``); a row holds
the entity keys and request fields (or, for an endpoint without a feature service, every model
input). The answer gives a prediction and a request id per row, in order:

    POST /v1/endpoints/fraud/predict  {"rows": [{"user_id": 7, "amount": 12.5}]}
    200 {"predictions": [0.91], "model_version": 3, "variant": "primary",
         "request_ids": ["5f0c..."], "variants": ["primary"], "model_versions": [3]}

Under a canary or an A/B test the rows of a batch may be answered by different variants:
``variants`` and ``model_versions`` give each row's; ``variant`` and ``model_version`` are
the first row's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from keel.errors import InvalidInputError
from keel.serving.batching import Batcher
from keel.serving.predict import Predictor

router = APIRouter(tags=["predict"])


class PredictRequest(BaseModel):
    """One row or a batch of rows: entity keys plus request fields."""

    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] | None = Field(default=None, examples=[[{"user_id": 7}]])
    row: dict[str, Any] | None = Field(default=None, examples=[{"user_id": 7}])


class PredictResponse(BaseModel):
    predictions: list[Any]
    model: str
    model_version: int
    variant: str
    request_ids: list[str]
    variants: list[str]
    model_versions: list[int]


@router.post("/v1/endpoints/{name}/predict", response_model=PredictResponse)
async def predict(name: str, body: PredictRequest, request: Request) -> dict[str, Any]:
    """Predict one row or a batch for endpoint ``name``."""
    if (body.rows is None) == (body.row is None):
        raise InvalidInputError(
            "send exactly one of 'rows' (a list of objects) or 'row' (one object)"
        )
    rows = body.rows if body.rows is not None else [body.row]
    # Runs on the event loop on purpose: a lookup plus a small model takes well under a
    # millisecond, less than a thread hand-off costs; requests that arrive together are
    # predicted in one pass (keel.serving.batching); more workers give more parallelism.
    batcher: Batcher = request.app.state.batcher
    served = await batcher.predict(name, rows)
    return {
        "predictions": served.predictions,
        "model": served.endpoint.version.name,
        "model_version": served.model_version,
        "variant": served.variant,
        "request_ids": served.request_ids,
        "variants": served.variants,
        "model_versions": served.model_versions,
    }


def predictor_of(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor

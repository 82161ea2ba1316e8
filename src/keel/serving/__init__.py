"""Serving: the model server (`keel serve`) and the prediction log every request is written to
before its response is sent, compacted to Parquet for monitoring and skew checks."""

from __future__ import annotations

"""Fixtures shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.data.remote import Remote
from tests.data.remote_support import REMOTE_KINDS, make_remote


@pytest.fixture(params=REMOTE_KINDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    """A remote of each kind in turn: a local folder, S3 (the lean client and botocore),
    and fsspec's in-memory filesystem; the S3 kinds carry the ``s3`` mark."""
    if request.param.startswith("s3"):
        request.applymarker(pytest.mark.s3)
    return make_remote(request.param, request, tmp_path)

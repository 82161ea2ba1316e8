"""Safe deployment: who serves an endpoint (primary, shadow, canary, A/B arms), every transition
with its author and reason in the metadata store, the gates a canary must pass, and the
statistics of A/B tests."""

from __future__ import annotations

"""The synthetic card-transaction dataset behind `keel demo` (see docs/demo-data.md)."""

from __future__ import annotations

from keel.demo.data import DemoData, generate, write_parquet
from keel.demo.scenario import FraudProfile, Scenario

__all__ = ["DemoData", "FraudProfile", "Scenario", "generate", "write_parquet"]

"""Keel: get machine-learning models out of the notebook and keep them healthy in production."""

from __future__ import annotations

__version__ = "0.1.0"

"""Shared primitives (hashing, UTC time, ids). Imports nothing else from Keel."""

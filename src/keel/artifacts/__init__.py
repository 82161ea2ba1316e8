"""Artifact backend: content-addressed objects on any fsspec filesystem."""

from keel.artifacts.store import ArtifactStore, ObjectInfo

__all__ = ["ArtifactStore", "ObjectInfo"]

"""Data versioning: content-addressed files and folders tracked in git by small pointer files.

    import keel.data

    keel.data.add(project, ["data/train.csv", "data/images"])   # or `keel data add ...`
    with keel.data.open("data/train.csv", rev="v1.0") as f:     # bytes as of a git revision
        df = pandas.read_csv(f)
    keel.data.resolve("data/images").sha256                     # the version a run records
    keel.data.push(project); keel.data.pull(project)            # or `keel data push/pull`

Names resolve lazily, so importing this package costs nothing until one is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DatasetVersion": "keel.data.api",
    "GcReport": "keel.data.gc",
    "Pointer": "keel.data.pointer",
    "Remote": "keel.data.remote",
    "add": "keel.data.workspace",
    "checkout": "keel.data.restore",
    "gc": "keel.data.gc",
    "install_hooks": "keel.data.hooks",
    "open": "keel.data.api",
    "pull": "keel.data.sync",
    "push": "keel.data.sync",
    "remote_for": "keel.data.remote",
    "resolve": "keel.data.api",
    "status": "keel.data.workspace",
}

__all__ = [
    "DatasetVersion",
    "GcReport",
    "Pointer",
    "Remote",
    "add",
    "checkout",
    "gc",
    "install_hooks",
    "open",
    "pull",
    "push",
    "remote_for",
    "resolve",
    "status",
]

if TYPE_CHECKING:
    from keel.data.api import DatasetVersion, open, resolve
    from keel.data.gc import GcReport, gc
    from keel.data.hooks import install_hooks
    from keel.data.pointer import Pointer
    from keel.data.remote import Remote, remote_for
    from keel.data.restore import checkout
    from keel.data.sync import pull, push
    from keel.data.workspace import add, status


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

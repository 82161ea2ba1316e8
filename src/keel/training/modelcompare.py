"""Is a rebuilt model the registered one? Bit for bit (the package hash the registry would give
it, file by file) and in what it predicts on the recorded validation set.

    comparison = compare_models(project, version, Path("out/model"), validation, features)
    comparison.identical                    # same artifact sha256
    comparison.predictions.max_abs          # else: how far apart the predictions are
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.hashing import sha256_bytes, sha256_file
from keel.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from keel.project import Project
    from keel.registry.loaded import LoadedModel
    from keel.registry.lookup import ModelVersion


@dataclass(frozen=True)
class FileDifference:
    """A model file whose bytes differ; a None hash means the file is missing on that side."""

    path: str
    recorded: str | None
    new: str | None


@dataclass(frozen=True)
class PredictionDifference:
    """Predictions of the registered (``a``) and the rebuilt (``b``) model on the same rows.

    ``max_rel`` is max |a - b| / |a| over rows where a != 0 (inf where a == 0 != b);
    ``output`` says what was compared ('predict_proba' or 'predict').
    """

    rows: int
    output: str
    differing_rows: int
    max_abs: float
    max_rel: float
    # The first few differing rows: (row, registered value, rebuilt value), for the report.
    examples: list[tuple[int, str, str]] = field(default_factory=list)

    # |a - b| and |a| per value, kept for ``within`` when the outputs are numeric.
    delta: np.ndarray | None = field(default=None, repr=False, compare=False)
    scale: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def equal(self) -> bool:
        return self.differing_rows == 0

    def within(self, rtol: float, atol: float) -> bool:
        """Whether every value satisfies |a - b| <= atol + rtol * |a| (numpy.isclose's rule).

        >>> import numpy as np
        >>> compare_predictions(np.array([1.0, 2.0]), np.array([1.0, 2.1])).within(0.1, 0.0)
        True
        """
        if self.equal:
            return True
        if self.delta is None or self.scale is None:
            return False
        return bool((self.delta <= atol + rtol * self.scale).all())


@dataclass(frozen=True)
class ModelComparison:
    """The registered version against the rebuilt package."""

    recorded_sha256: str
    new_sha256: str
    files: list[FileDifference]
    predictions: PredictionDifference | None
    warnings: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.recorded_sha256 == self.new_sha256


def package_files(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "size"}}`` of every file of a saved model folder."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            sha, size = sha256_file(path)
            files[path.relative_to(folder).as_posix()] = {"sha256": sha, "size": size}
    return files


def package_sha256(folder: Path) -> str:
    """The ``artifact_sha256`` the registry would give the model saved in ``folder`` (by
    ``keel.registry.packaging.save_model``), computed without storing anything.

    >>> package_sha256(Path("out/model")) == version.artifact_sha256   # doctest: +SKIP
    True
    """
    from keel.registry.manifest import MANIFEST_FORMAT
    from keel.registry.packaging import read_manifest

    saved = read_manifest(Path(folder))
    # The same fields and canonical JSON as keel.registry.manifest.upload_package.
    manifest = {
        "format": MANIFEST_FORMAT,
        "flavor": saved["flavor"],
        "files": package_files(folder),
        "signature": saved.get("signature"),
        "library_versions": {str(k): str(v) for k, v in saved.get("library_versions", {}).items()},
    }
    return sha256_bytes(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())


def compare_models(
    project: Project,
    version: ModelVersion,
    new_folder: Path,
    validation: pd.DataFrame,
    features: Sequence[str],
    *,
    code_root: Path | None = None,
) -> ModelComparison:
    """Compare registered ``version`` with the model saved in ``new_folder``: package hash, the
    files that differ, and predictions on ``validation[features]``. ``code_root`` goes on
    sys.path while the models load (a pickled model may reference the project's modules).
    Library-version warnings raised while loading are returned in ``warnings``.
    """
    from keel.registry.manifest import fetch_package
    from keel.registry.packaging import load_model

    missing = [name for name in features if name not in validation.columns]
    if missing:
        raise InvalidInputError(
            f"the recorded validation set lacks feature columns {missing}; it cannot be used "
            "to compare predictions"
        )
    recorded_folder = fetch_package(
        project.artifacts, version.artifact_sha256, project.keel_dir / "models"
    )
    recorded_files = package_files(recorded_folder)
    new_files = package_files(new_folder)
    differing = [
        FileDifference(path, _sha(recorded_files, path), _sha(new_files, path))
        for path in sorted(set(recorded_files) | set(new_files))
        if _sha(recorded_files, path) != _sha(new_files, path)
    ]
    frame = validation.loc[:, list(features)]
    with _on_path(code_root), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = load_model(recorded_folder)
        new = load_model(Path(new_folder))
        predictions = compare_predictions(*_outputs(old, new, frame))
    return ModelComparison(
        recorded_sha256=version.artifact_sha256,
        new_sha256=package_sha256(new_folder),
        files=differing,
        predictions=predictions,
        warnings=sorted({str(w.message) for w in caught}),
    )


def compare_predictions(
    recorded: np.ndarray, new: np.ndarray, output: str = "predict"
) -> PredictionDifference:
    """How far apart two models' outputs on the same rows are.

    >>> import numpy as np
    >>> diff = compare_predictions(np.array([0.5, 0.25]), np.array([0.5, 0.26]))
    >>> diff.differing_rows, round(diff.max_abs, 2), round(diff.max_rel, 2)
    (1, 0.01, 0.04)
    """
    import numpy as np

    a, b = np.asarray(recorded), np.asarray(new)
    if a.shape != b.shape:
        return PredictionDifference(
            rows=len(a),
            output=output,
            differing_rows=len(a),
            max_abs=float("inf"),
            max_rel=float("inf"),
            examples=[(-1, f"shape {a.shape}", f"shape {b.shape}")],
        )
    rows_a, rows_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    numeric = np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number)
    delta: np.ndarray | None = None
    scale: np.ndarray | None = None
    if numeric:
        delta, rel, scale = _gaps(rows_a.astype("float64"), rows_b.astype("float64"))
        row_differs = (delta > 0).any(axis=1)
        max_abs = float(delta.max()) if delta.size else 0.0
        max_rel = float(rel.max()) if rel.size else 0.0
    else:
        row_differs = (rows_a != rows_b).any(axis=1)
        max_abs = max_rel = float("inf") if row_differs.any() else 0.0
    where = np.flatnonzero(row_differs)
    examples = [(int(i), _show(a[i]), _show(b[i])) for i in where[:5]]
    return PredictionDifference(
        rows=len(a),
        output=output,
        differing_rows=len(where),
        max_abs=max_abs,
        max_rel=max_rel,
        examples=examples,
        delta=delta,
        scale=scale,
    )


def _gaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|a - b|, |a - b| / |a| and |a| per value; NaN on both sides counts as equal, on one
    side as an infinite gap."""
    import numpy as np

    both_nan = np.isnan(a) & np.isnan(b)
    # Huge or tiny values overflow to inf here, which is the right answer for a gap.
    with np.errstate(all="ignore"):
        delta = np.where(both_nan, 0.0, np.abs(a - b))
        delta = np.where(np.isnan(delta), np.inf, delta)
        rel = np.where(delta == 0, 0.0, delta / np.abs(a))
    rel = np.where(np.isnan(rel), np.inf, rel)
    return delta, rel, np.abs(np.nan_to_num(a))


def _outputs(
    old: LoadedModel, new: LoadedModel, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, str]:
    # Probabilities move before labels do, so they show a near-miss that labels would hide.
    if old.has_predict_proba and new.has_predict_proba:
        return old.predict_proba(frame), new.predict_proba(frame), "predict_proba"
    return old.predict(frame), new.predict(frame), "predict"


def _sha(files: dict[str, dict[str, Any]], path: str) -> str | None:
    entry = files.get(path)
    return None if entry is None else str(entry["sha256"])


def _show(value: Any) -> str:
    import numpy as np

    text = np.array2string(np.asarray(value), precision=6, separator=", ")
    return text if len(text) <= 60 else text[:57] + "..."


@contextmanager
def _on_path(folder: Path | None) -> Iterator[None]:
    import sys

    if folder is None:
        yield
        return
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)

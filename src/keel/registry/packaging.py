"""Save a model to a folder and load it back: the model's files plus ``keel-model.json``.

``keel-model.json`` records the format version, the flavor and its data (file name, kind), the
signature, the library versions the model was saved with and the Python version. It is
written last, so a folder without it is not a complete model.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import FlavorError, InvalidInputError, KeelError
from keel.registry.flavors import get_flavor, select_flavor
from keel.registry.flavors.base import (
    Flavor,
    FlavorModel,
    LibraryVersionWarning,
    library_version,
    type_name,
)
from keel.registry.loaded import LoadedModel
from keel.registry.signature import Schema, Signature, infer_schema

MANIFEST = "keel-model.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelPackage:
    """What ``save_model`` wrote: files are relative to the folder, sorted, manifest included."""

    flavor: str
    signature: Signature | None
    library_versions: dict[str, str]
    files: list[str]


def save_model(
    model: object,
    directory: Path,
    *,
    input_example: object = None,
    flavor: str | None = None,
) -> ModelPackage:
    """Write ``model`` into the empty folder ``directory`` (created if missing).

    The flavor is detected unless named; with an ``input_example`` the signature's inputs are
    inferred from it and its outputs from predicting on it with the model as loaded back from
    the folder, which also proves the files load. On any error the folder is left as it was
    (empty, or absent if save_model created it).

    >>> package = save_model(pipeline, Path("out"), input_example=train.head(5))
    >>> package.files
    ['keel-model.json', 'model.pkl']
    """
    directory = Path(directory)
    chosen = select_flavor(model, flavor)
    inputs = None if input_example is None else infer_schema(input_example)
    created = _claim_directory(directory)
    try:
        saved = chosen.save(model, directory)
        signature = None
        if inputs is not None:
            outputs = _infer_outputs(chosen, directory, saved.data, inputs, input_example)
            signature = Signature(inputs=inputs, outputs=outputs)
        _write_manifest(
            directory, chosen.name, model, saved.data, signature, saved.library_versions
        )
    except BaseException:
        _clear(directory, created)
        raise
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    return ModelPackage(chosen.name, signature, dict(saved.library_versions), files)


def load_model(directory: Path) -> LoadedModel:
    """Load a model written by ``save_model``.

    Warns with LibraryVersionWarning when a recorded library (or the Python minor version)
    differs from what is installed; raises FlavorError when the folder is not a Keel model or
    the model cannot be loaded.

    >>> model = load_model(Path("out"))
    >>> model.predict(test_frame)
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    flavor = get_flavor(str(manifest["flavor"]))
    versions = {str(k): str(v) for k, v in manifest.get("library_versions", {}).items()}
    _warn_on_version_mismatch(versions, manifest.get("python_version"))
    runtime = _load_runtime(flavor, directory, manifest["flavor_data"])
    signature = manifest.get("signature")
    return LoadedModel(
        flavor=flavor.name,
        signature=None if signature is None else Signature.from_dict(signature),
        library_versions=versions,
        runtime=runtime,
        python_version=manifest.get("python_version"),
    )


def read_manifest(directory: Path) -> dict[str, Any]:
    """The parsed ``keel-model.json`` of a model folder, checked for a known format."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FlavorError(
            f"{directory} is not a Keel model folder (no {MANIFEST}); save one with save_model"
        ) from exc
    except (OSError, ValueError) as exc:
        raise FlavorError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or not {"flavor", "flavor_data"} <= manifest.keys():
        raise FlavorError(f"{path} is not a Keel model manifest (no 'flavor' or 'flavor_data')")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FlavorError(
            f"{path} has format version {version!r}, newer than this Keel reads "
            f"({FORMAT_VERSION}); upgrade Keel to load it"
        )
    return manifest


def _claim_directory(directory: Path) -> bool:
    """Check the target folder is empty (creating it if missing); True if created here."""
    if directory.exists():
        if not directory.is_dir():
            raise InvalidInputError(f"{directory} is a file; save_model needs an empty folder")
        if any(directory.iterdir()):
            raise InvalidInputError(
                f"{directory} is not empty; save_model needs an empty folder "
                "so that the package holds only the model's files"
            )
        return False
    directory.mkdir(parents=True)
    return True


def _clear(directory: Path, created: bool) -> None:
    if created:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _load_runtime(flavor: Flavor, directory: Path, data: Mapping[str, Any]) -> FlavorModel:
    try:
        return flavor.load(directory, data)
    except KeelError:
        raise
    except Exception as exc:  # a library's own error (corrupt file, unpickling) at the boundary
        raise FlavorError(
            f"cannot load the {flavor.name} model in {directory}: {type(exc).__name__}: {exc}"
        ) from exc


def _infer_outputs(
    flavor: Flavor, directory: Path, data: Mapping[str, Any], inputs: Schema, example: object
) -> Schema:
    # Predicting with the model as loaded back from the folder also proves the files load.
    runtime = _load_runtime(flavor, directory, data)
    prepared = Signature(inputs=inputs).validate_input(example)
    try:
        output = runtime.predict(prepared)
    except Exception as exc:  # any error of the user's model: report it with the fix
        raise InvalidInputError(
            f"the {flavor.name} model failed to predict on input_example "
            f"({type(exc).__name__}: {exc}); pass rows like the ones it was trained on"
        ) from exc
    import numpy as np

    return infer_schema(np.asarray(output))


def _write_manifest(
    directory: Path,
    flavor: str,
    model: object,
    data: Mapping[str, Any],
    signature: Signature | None,
    library_versions: Mapping[str, str],
) -> None:
    from keel import __version__

    manifest = {
        "format_version": FORMAT_VERSION,
        "flavor": flavor,
        "flavor_data": dict(data),
        "model_type": type_name(model),
        "signature": None if signature is None else signature.to_dict(),
        "library_versions": dict(library_versions),
        "python_version": platform.python_version(),
        "keel_version": __version__,
    }
    # Written to a temporary name and renamed: the manifest appears complete or not at all.
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)


def _warn_on_version_mismatch(recorded: Mapping[str, str], python_version: object) -> None:
    for name, saved in sorted(recorded.items()):
        installed = library_version(name)
        if installed != saved:
            warnings.warn(
                f"this model was saved with {name} {saved} but {name} {installed} is "
                f"installed; its predictions may differ — install {name}=={saved} or "
                "re-save the model under the current version",
                LibraryVersionWarning,
                stacklevel=3,
            )
    if isinstance(python_version, str) and _minor(python_version) != _minor(
        platform.python_version()
    ):
        warnings.warn(
            f"this model was saved with Python {python_version} but this is Python "
            f"{platform.python_version()}; pickled models may fail to load or behave "
            f"differently — load it under Python {_minor(python_version)}",
            LibraryVersionWarning,
            stacklevel=3,
        )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])

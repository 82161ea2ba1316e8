"""The public face: a sorted __all__, every name importable, and `import keel` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import keel


def test_all_is_sorted_unique_and_matches_the_lazy_table() -> None:
    assert keel.__all__ == sorted(set(keel.__all__))
    assert keel.__all__ == sorted(keel._EXPORTS)


def test_every_exported_name_resolves() -> None:
    for name in keel.__all__:
        value = getattr(keel, name)
        assert value is not None
        module = getattr(value, "__module__", "")
        assert module.startswith("keel."), f"{name} comes from {module}"


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        keel.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_import_keel_imports_no_heavy_library() -> None:
    heavy = ["sqlalchemy", "pandas", "numpy", "sklearn", "alembic", "pydantic", "pyarrow", "fsspec"]
    code = f"import sys, keel; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_imports_no_heavy_library() -> None:
    heavy = ["sqlalchemy", "pandas", "numpy", "sklearn", "alembic", "pyarrow", "fsspec"]
    code = (
        "import sys\n"
        "from keel.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED=' + ','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "LOADED="

"""keel.deploy's public names resolve lazily to the functions and classes that define them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import keel.deploy


def test_every_exported_name_resolves_to_its_definition() -> None:
    for name in keel.deploy.__all__:
        module = importlib.import_module(keel.deploy._EXPORTS[name])
        assert getattr(keel.deploy, name) is getattr(module, name)
    assert set(keel.deploy.__all__) == set(keel.deploy._EXPORTS)


def test_importing_the_package_imports_none_of_its_parts() -> None:
    code = (
        "import sys, keel.deploy; "
        "print(sorted(m for m in sys.modules if m.startswith('keel.deploy.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

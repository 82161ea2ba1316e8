"""The environment a run recorded against the one a reproduction runs in: every package added,
removed or at another version, and the Python and platform; and, on request, a virtual
environment built with the recorded versions.

    diff = compare_environments(get_environment(project, run.environment_sha256),
                                capture_environment())
    [change.describe() for change in diff.changes]     # ['numpy 2.4.0 -> 2.4.1', ...]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from keel.core.hashing import sha256_bytes
from keel.errors import StoreError
from keel.tracking.records import EnvironmentRecord

# The installer itself is not part of what a model was trained with, and each environment
# brings its own.
INSTALLER_PACKAGES = frozenset({"pip"})
_PIP_TIMEOUT_S = 1800.0

# Run by the target interpreter: the same canonical names as keel.tracking.environment, but
# standalone, since the target environment may not hold Keel yet.
_LIST_SCRIPT = """
import importlib.metadata as m, json, platform, re
out = {}
for d in m.distributions():
    name, version = d.metadata["Name"], d.version
    if name and version:
        out.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
print(json.dumps({"python": platform.python_version(), "platform": platform.platform(),
                  "packages": dict(sorted(out.items()))}))
"""


class EnvironmentBuildError(StoreError):
    """Raised when a virtual environment with the recorded package versions cannot be built
    (no network, a version no index holds, a package that does not build here)."""


@dataclass(frozen=True)
class PackageChange:
    """One package that differs: ``recorded`` None means added since, ``current`` None removed."""

    name: str
    recorded: str | None
    current: str | None

    @property
    def kind(self) -> str:
        if self.recorded is None:
            return "added"
        if self.current is None:
            return "removed"
        return "changed"

    def describe(self) -> str:
        return f"{self.name} {self.recorded or '(none)'} -> {self.current or '(none)'}"


@dataclass(frozen=True)
class EnvironmentDiff:
    """What differs between the recorded and the current environment; empty when identical."""

    recorded_python: str
    current_python: str
    recorded_platform: str
    current_platform: str
    changes: list[PackageChange] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.changes and self.recorded_python == self.current_python

    def of_kind(self, kind: str) -> list[PackageChange]:
        return [change for change in self.changes if change.kind == kind]


def compare_environments(
    recorded: EnvironmentRecord, current: EnvironmentRecord
) -> EnvironmentDiff:
    """Every package added, removed or changed from ``recorded`` to ``current``, by name.

    >>> old = EnvironmentRecord("a", "3.11.7", "linux", {"numpy": "2.4.0", "six": "1.0"})
    >>> new = EnvironmentRecord("b", "3.11.7", "linux", {"numpy": "2.4.1", "rich": "14.0"})
    >>> [c.describe() for c in compare_environments(old, new).changes]
    ['numpy 2.4.0 -> 2.4.1', 'rich (none) -> 14.0', 'six 1.0 -> (none)']
    """
    names = sorted(set(recorded.packages) | set(current.packages))
    changes = [
        PackageChange(name, recorded.packages.get(name), current.packages.get(name))
        for name in names
        if recorded.packages.get(name) != current.packages.get(name)
    ]
    return EnvironmentDiff(
        recorded_python=recorded.python_version,
        current_python=current.python_version,
        recorded_platform=recorded.platform,
        current_platform=current.platform,
        changes=changes,
    )


def environment_of(python: str | Path) -> EnvironmentRecord:
    """The environment of another interpreter (e.g. a built virtual environment's)."""
    try:
        done = subprocess.run(
            [str(python), "-c", _LIST_SCRIPT], capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentBuildError(f"cannot run {python}: {exc}") from exc
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise EnvironmentBuildError(f"cannot list the packages of {python}: {reason}")
    body = json.loads(done.stdout)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return EnvironmentRecord(
        sha256_bytes(canonical.encode("utf-8")),
        str(body["python"]),
        str(body["platform"]),
        {str(k): str(v) for k, v in body["packages"].items()},
    )


def requirements(recorded: EnvironmentRecord) -> list[str]:
    """pip requirement lines pinning every recorded package. A package installed here from a
    local folder (e.g. Keel itself, or the project's own package) at the recorded version is
    installed from that folder, editable if it is editable here, since no index holds it.

    >>> requirements(EnvironmentRecord("a", "3.11", "linux", {"numpy": "2.4.0"}))
    ['numpy==2.4.0']
    """
    from importlib.metadata import PackageNotFoundError, distribution

    lines = []
    for name, version in sorted(recorded.packages.items()):
        if name in INSTALLER_PACKAGES:
            continue
        try:
            local = distribution(name)
        except PackageNotFoundError:
            local = None
        found = _local_url(local.read_text("direct_url.json")) if local is not None else None
        if found is not None and local is not None and local.version == version:
            url, editable = found
            lines.append(f"-e {url}" if editable else f"{name} @ {url}")
        else:
            lines.append(f"{name}=={version}")
    return lines


def build_environment(recorded: EnvironmentRecord, dest: Path) -> Path:
    """Create a virtual environment at ``dest`` holding exactly the recorded package versions
    and return its interpreter. Needs the package index (or PIP_* settings pointing at a
    mirror or wheel folder); EnvironmentBuildError says what pip could not install.

    >>> python = build_environment(get_environment(project, sha), Path(".keel/r/1/venv"))
    ... # doctest: +SKIP
    """
    dest = Path(dest)
    base = _interpreter_for(recorded.python_version)
    _step([base, "-m", "venv", "--without-pip", str(dest)], "create a virtual environment")
    python = dest / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    listing = dest / "keel-requirements.txt"
    listing.write_text("\n".join(requirements(recorded)) + "\n", encoding="utf-8")
    # The pip of this interpreter installs into the new one (--python): no pip bootstrap in
    # the new environment, which is both slow and offline-hostile.
    install = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    flags = ["--disable-pip-version-check", "--no-input", "--no-deps", "-r", str(listing)]
    _step([*install, *flags], f"install the recorded packages (listed in {listing})")
    return python


def _interpreter_for(version: str) -> str:
    """An interpreter of the recorded minor version if one is on PATH, else this one."""
    minor = ".".join(version.split(".")[:2])
    if minor == ".".join(platform.python_version().split(".")[:2]):
        return sys.executable
    return shutil.which(f"python{minor}") or sys.executable


def _step(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, timeout=_PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentBuildError(f"could not {what}: {exc}") from exc
    if done.returncode != 0:
        text = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        errors = [line for line in text if "ERROR" in line or "error" in line] or text
        detail = " | ".join(errors[-3:]) or f"exit code {done.returncode}"
        raise EnvironmentBuildError(
            f"could not {what}: {detail}; check the network or point pip at a mirror "
            "(PIP_INDEX_URL) or a wheel folder (PIP_FIND_LINKS), or reproduce without --env"
        )


def _local_url(direct_url: str | None) -> tuple[str, bool] | None:
    """The folder URL of a package installed from a local folder, and whether editable."""
    if not direct_url:
        return None
    try:
        info = json.loads(direct_url)
    except ValueError:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("dir_info"), dict):
        return None
    url = info.get("url")
    if isinstance(url, str) and url.startswith("file://"):
        return url, bool(info["dir_info"].get("editable"))
    return None

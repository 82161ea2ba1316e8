"""The Project: one object that resolves configuration into stores. Every API and CLI call goes
through it; nothing is read or opened until first used.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.config_file import (
    CONFIG_FILE,
    DataSettings,
    fingerprint,
    read_snapshot,
    write_snapshot,
)
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore
    from keel.config import KeelConfig
    from keel.metadata import MetadataStore

PROJECT_DIR_ENV = "KEEL_PROJECT_DIR"


class Project:
    """A Keel project rooted at the folder that holds keel.yaml.

    >>> project = Project.discover()          # keel.yaml here or above, else this folder
    >>> project.metadata, project.artifacts   # opened lazily
    """

    def __init__(
        self,
        root: str | Path,
        *,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self._environ = environ
        self._overrides = overrides
        self._fingerprint = fingerprint(self.root, os.environ if environ is None else environ)
        # Settings remembered for exactly these inputs were validated before; anything else is
        # validated now, so a mistake in keel.yaml surfaces here (see keel.config_file).
        self._remembered = None if overrides else read_snapshot(self.keel_dir, self._fingerprint)
        if self._remembered is None:
            _ = self.config

    @cached_property
    def config(self) -> KeelConfig:
        """The validated configuration: keel.yaml < ``KEEL_*`` environment < overrides."""
        from keel.config import load_config

        config = load_config(self.root, environ=self._environ, overrides=self._overrides)
        if not self._overrides and self._remembered is None:  # remembered already: no rewrite
            write_snapshot(self.keel_dir, self._fingerprint, _data_settings(config))
        return config

    @cached_property
    def data_settings(self) -> DataSettings:
        """What the data commands need of the configuration, without loading all of it when
        these inputs were validated before."""
        if self._remembered is not None:
            return self._remembered
        return _data_settings(self.config)

    @classmethod
    def discover(
        cls, start: str | Path | None = None, *, overrides: Mapping[str, Any] | None = None
    ) -> Project:
        """Find the project: $KEEL_PROJECT_DIR, else the nearest folder with keel.yaml from
        ``start`` (default: the working directory) upwards, else ``start`` itself."""
        if start is None and os.environ.get(PROJECT_DIR_ENV):
            return cls(os.environ[PROJECT_DIR_ENV], overrides=overrides)
        here = Path(start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_FILE).is_file():
                return cls(folder, overrides=overrides)
        return cls(here, overrides=overrides)

    @property
    def user(self) -> str:
        if self.config.user:
            return self.config.user
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return "unknown"

    @cached_property
    def metadata(self) -> MetadataStore:
        from keel.metadata import MetadataStore

        return MetadataStore(self.config.metadata.url, root=self.root)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from keel.artifacts import ArtifactStore

        return ArtifactStore(
            self.config.artifacts.url, options=self.config.artifacts.options, root=self.root
        )

    @property
    def keel_dir(self) -> Path:
        return self.root / ".keel"

    def close(self) -> None:
        if "metadata" in self.__dict__:
            self.metadata.dispose()


def init_project(directory: str | Path, *, name: str | None = None, force: bool = False) -> Path:
    """Create keel.yaml (with commented defaults) and .keel/ in ``directory``; returns the file."""
    root = Path(directory).resolve()
    file = root / CONFIG_FILE
    if file.exists() and not force:
        raise ConfigError(f"{file} already exists; edit it, or pass --force to overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    from keel.config import DEFAULT_YAML

    file.write_text(DEFAULT_YAML.format(project=name or root.name or "keel-project"), "utf-8")
    (root / ".keel").mkdir(exist_ok=True)
    ignore = root / ".gitignore"
    lines = ignore.read_text("utf-8").splitlines() if ignore.exists() else []
    if ".keel/" not in lines:
        ignore.write_text("\n".join([*lines, ".keel/"]) + "\n", "utf-8")
    return file


def _data_settings(config: KeelConfig) -> DataSettings:
    data = config.data
    return DataSettings(
        cache=data.cache,
        link=tuple(data.link),
        jobs=data.jobs,
        remote=data.remote,
        remote_names=tuple(data.remotes),
    )

"""``coz://GROUP`` on a tool's Hydra search path: the one shared config group ``conf/shared/GROUP/``.

Each tool's config root ``conf/<tool>/`` holds its primary config and the groups only it composes;
the groups several tools compose (backbone, prompt, logger, zoom, hydra/help) live once in
``conf/shared/``. Putting ``conf/shared/`` itself on a tool's search path would offer every shared
group to every tool (shell completion, overrides), so each tool names the shared groups it composes,
one entry each (``hydra.searchpath: [coz://backbone, coz://prompt, ...]``), and this source shows
Hydra that group of ``conf/shared/`` and nothing else.
"""

from __future__ import annotations

import os

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult


def shared_dir() -> str:
    """``conf/shared``: the groups several tools compose."""
    from coz.cli import config_dir

    return str(config_dir() / "shared")


class SharedGroupSource(FileConfigSource):
    """One group (``backbone``, or a nested one such as ``hydra/help``) of ``conf/shared/``."""

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)
        self.group = self.path.strip("/")  # what follows coz://
        self.path = shared_dir()  # the folder FileConfigSource reads

    @staticmethod
    def scheme() -> str:
        return "coz"

    def _visible(self, config_path: str) -> bool:
        """``config_path`` lies on the way to the group (``""``, ``hydra``) or inside it."""
        parts = [p for p in config_path.split("/") if p]
        group = self.group.split("/")
        common = min(len(parts), len(group))
        return parts[:common] == group[:common]

    def load_config(self, config_path: str) -> ConfigResult:
        if not self._visible(config_path):
            raise ConfigLoadError(
                f"Config not found : {config_path} (coz://{self.group} is {self.group}/ only)"
            )
        return super().load_config(config_path)

    def available(self) -> bool:
        return os.path.isdir(os.path.join(self.path, self.group))

    def is_group(self, config_path: str) -> bool:
        return self._visible(config_path) and super().is_group(config_path)

    def is_config(self, config_path: str) -> bool:
        return self._visible(config_path) and super().is_config(config_path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        # FileConfigSource lists an entry only if is_group or is_config accepts it: the hidden ones drop out
        return super().list(config_path, results_filter) if self.is_group(config_path) else []

    def __repr__(self) -> str:
        return f"provider={self.provider}, path=coz://{self.group} ({self.path}/{self.group})"


def register() -> None:
    """Let Hydra resolve ``coz://`` search-path entries (once per process; Hydra keeps the first)."""
    from hydra._internal.sources_registry import SourcesRegistry

    SourcesRegistry.instance().register(SharedGroupSource)

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
from pathlib import Path

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import OmegaConf


def config_dir() -> Path:
    """The Hydra configs: ``coz/conf`` inside an installed package (the wheel ships the top-level
    ``conf/`` there), else ``conf/`` beside the package in a checkout or an editable install."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "conf"
    return installed if installed.is_dir() else package.parent / "conf"


def shared_dir() -> str:
    """``conf/shared``: the groups several tools compose."""
    return str(config_dir() / "shared")


class SharedGroupSource(ConfigSource):
    """One group of ``conf/shared/`` (``coz://backbone``, or a nested one: ``coz://hydra/help``)."""

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)
        self.path = self.path.strip("/")  # the group: what follows coz:// (Hydra's --info shows it)
        self.root = shared_dir()

    @staticmethod
    def scheme() -> str:
        return "coz"

    def _visible(self, config_path: str) -> bool:
        """``config_path`` lies on the way to the group (``""``, ``hydra``) or inside it."""
        parts = [p for p in config_path.split("/") if p]
        group = self.path.split("/")
        common = min(len(parts), len(group))
        return parts[:common] == group[:common]

    def _file(self, config_path: str) -> str:
        return os.path.join(self.root, self._normalize_file_name(config_path))

    def load_config(self, config_path: str) -> ConfigResult:
        if not self.is_config(config_path):
            raise ConfigLoadError(f"Config not found : {config_path} (in coz://{self.path})")
        with open(self._file(config_path), encoding="utf-8") as f:
            header = ConfigSource._get_header_dict(f.read(512))
            f.seek(0)
            return ConfigResult(
                config=OmegaConf.load(f), path=self.full_path(), provider=self.provider, header=header
            )

    def available(self) -> bool:
        return os.path.isdir(os.path.join(self.root, self.path))

    def is_group(self, config_path: str) -> bool:
        return self._visible(config_path) and os.path.isdir(os.path.join(self.root, config_path))

    def is_config(self, config_path: str) -> bool:
        return self._visible(config_path) and os.path.isfile(self._file(config_path))

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if not self.is_group(config_path):
            return []
        files: list[str] = []
        for name in os.listdir(os.path.join(self.root, config_path)):
            # adds the name if is_group or is_config accepts it: the other shared groups drop out
            self._list_add_result(files, os.path.join(config_path, name), name, results_filter)
        return sorted(set(files))


def register() -> None:
    """Let Hydra resolve ``coz://`` search-path entries: Hydra's public way to add a plugin by hand
    (``Plugins.register``; a ConfigSource lands in its source registry). Registering twice is harmless."""
    from hydra.core.plugins import Plugins

    Plugins.instance().register(SharedGroupSource)

"""Tests compose the same Hydra configs hundreds of times, and Hydra reads and parses every YAML file
again at every compose (``ConfigLoaderImpl`` makes a fresh ``CachingConfigRepository`` each time):
about a third of a compose's CPU. :func:`read_once` has each config source parse a file once per test
session and hand every compose its own deep copy of the result. The key holds the file's whole text,
so an edited file is parsed again (no timestamps to trust)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigResult, ConfigSource

# Where a config_path lies on disk, for each file-backed config source (by its search-path scheme):
# conf/<tool>/ (file://), conf/shared/GROUP (coz://, coz.run.shared_configs), Hydra's own (pkg://).
FILES: dict[str, Callable[[ConfigSource, str], str]] = {
    "file": lambda source, name: os.path.join(source.path, source._normalize_file_name(name)),
    "coz": lambda source, name: source._file(name),
    "pkg": lambda source, name: str(resources.files(source.path).joinpath(source._normalize_file_name(name))),
}


def _cached(load: Callable[[ConfigSource, str], ConfigResult], file_of: Callable[[ConfigSource, str], str]):
    parsed: dict[tuple, ConfigResult] = {}

    def load_config(self: ConfigSource, config_path: str) -> ConfigResult:
        try:
            with open(file_of(self, config_path), encoding="utf-8") as f:
                text = f.read()
        except (OSError, ValueError):  # not a plain file: the source says what is wrong
            return load(self, config_path)
        key = (type(self), self.provider, self.path, config_path, text)
        if key not in parsed:
            parsed[key] = load(self, config_path)
        return copy.deepcopy(parsed[key])

    return load_config


@contextmanager
def read_once() -> Iterator[None]:
    """Within this block, each config source parses a given file's text once."""
    with pytest.MonkeyPatch.context() as patch:
        # the classes Hydra uses: its plugin scan imports its core plugins anew (new class objects)
        for source in Plugins.instance().discover(ConfigSource):
            if source.scheme() in FILES:
                patch.setattr(source, "load_config", _cached(source.load_config, FILES[source.scheme()]))
        yield

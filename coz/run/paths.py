"""Where coz keeps converted weights: the user cache, never the repository."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$COZ_CACHE``, else ``$XDG_CACHE_HOME/coz``, else ``~/.cache/coz``."""
    if env := os.environ.get("COZ_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "coz"

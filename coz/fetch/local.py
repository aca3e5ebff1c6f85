"""Where fetched releases live, and what ``<option>=auto`` finds there.

The weights folder is ``$COZ_WEIGHTS``, else ``$COZ_CACHE/weights`` (``~/.cache/coz/weights``). Inside
it each release keeps the authors' own layout (Chain-of-Zoom's ``ckpt/``: ``SR_LoRA/``, ``SR_VAE/``,
``DAPE/``, ``RAM/``, ``VLM_LoRA/``; then ``OSEDiff/``, ``S3Diff/``), so ``coz-fetch --dir ckpt`` gives the
folder the authors' scripts read too. Base models stay in the Hugging Face cache, found by hub id.
"""

from __future__ import annotations

import os
from pathlib import Path

from coz.errors import CozError
from coz.fetch.registry import AUTO
from coz.run.paths import cache_dir


def weights_root() -> Path:
    if env := os.environ.get("COZ_WEIGHTS"):
        return Path(env).expanduser()
    return cache_dir() / "weights"


def resolve(option: str, value):
    """``value``, or for ``auto`` the fetched file (or folder) that ``option`` takes; one line naming
    the ``coz-fetch`` command when it is not there."""
    if str(value) != "auto" or option not in AUTO:
        return value
    name, relative = AUTO[option]
    path = weights_root() / relative
    if not path.exists():
        raise CozError(
            f"{option}=auto: {path} is not there; fetch it with `coz-fetch {name}` "
            f"(or `python -m coz.fetch {name}`; COZ_WEIGHTS= sets the folder), or give the path"
        )
    return str(path)


def resolve_config(cfg, group: str):
    """A copy of the config group ``cfg`` with every ``auto`` that names a release replaced by its path."""
    keys = [k for k in cfg if str(cfg.get(k)) == "auto" and f"{group}.{k}" in AUTO]
    if not keys:
        return cfg
    cfg = cfg.copy()
    for key in keys:
        cfg[key] = resolve(f"{group}.{key}", "auto")
    return cfg

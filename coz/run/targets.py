"""Components users bring themselves: a backbone, prompt extractor or logger config with
``_target_`` (a class or function path) is built by ``hydra.utils.instantiate``.

Every key of that config goes to the target as a keyword argument, except ``name`` (the label coz
shows and records) and the keys coz reads itself (a prompt extractor's ``clean``, ``check_clip``,
``cache``, ``cache_dir``); coz adds what only the run knows (``device=``, ``run_dir=``). The built-in names
keep their own factories and lazy imports.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError


def has_target(cfg: DictConfig | None) -> bool:
    return cfg is not None and "_target_" in cfg


def instantiate_target(cfg: DictConfig, group: str, coz_keys: tuple[str, ...] = (), **run_args: Any) -> Any:
    """``instantiate(cfg without name, **run_args)``; a failure is one line naming the group and target.
    ``coz_keys``: keys coz itself reads around the component (a prompt's ``clean``, ``cache``...),
    not passed to it."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    node = OmegaConf.to_container(cfg, resolve=True)
    for key in ("name", *coz_keys):
        node.pop(key, None)
    try:
        return instantiate(node, **run_args)
    except InstantiationException as err:
        reason = str(err).strip().splitlines()[-1]
        raise CozError(f"{group}._target_={cfg._target_}: {reason}") from None

"""Prompt extractors, chosen by the ``prompt=`` config group (paper sections 3.2-3.3, Table 1 modes).

``null`` (no text), ``dape`` (RAM tagger + SeeSR's LoRA), ``vlm`` (Qwen2.5-VL, AR-2 when the zoom
mode gives the previous state), ``vlm_ar1`` (Qwen2.5-VL on the current view only), and the
offline random-weight twins ``tiny_vlm`` and ``tiny_dape``. Every extractor except ``null`` is
wrapped in the prompt cache and the text hygiene. Imports are lazy: ``prompt=null`` never
imports transformers.
"""

from __future__ import annotations

import copy
import json

from omegaconf import DictConfig, OmegaConf

from coz.prompts.base import NullPrompt, PromptExtractor, with_user_prompt

__all__ = ["PromptExtractor", "NullPrompt", "build_prompt_extractor", "with_user_prompt", "PROMPTS"]

VLM_NAMES = ("vlm", "vlm_ar1", "tiny_vlm")
DAPE_NAMES = ("dape", "tiny_dape")
PROMPTS = ("null", *VLM_NAMES, *DAPE_NAMES)
# Options that change how results are kept or shown, not what the extractor computes.
_NOT_IDENTITY = ("clean", "check_clip", "cache", "cache_dir", "merge_adapter")
_WRAPPER_KEYS = ("clean", "check_clip", "cache", "cache_dir")  # read by _wrap, for every extractor


def build_prompt_extractor(
    cfg: DictConfig | None, device: str = "cpu", tiles: bool = False
) -> PromptExtractor:
    """A built-in extractor by ``name``, or the user's with ``_target_`` (called with ``device=``;
    wrapped in the cache and the text hygiene as the built-in ones). ``tiles``: it will describe the
    tiles of full-image SR (``zoom=full``), where ``max_new_tokens=auto`` means the full-image
    script's 16."""
    from coz.run.targets import has_target, instantiate_target

    name = "null" if cfg is None else str(cfg.get("name", cfg.get("_target_")))
    if name == "null":
        return NullPrompt()
    if has_target(cfg):
        extractor = instantiate_target(cfg, "prompt", coz_keys=_WRAPPER_KEYS, device=device)
        resolved = {}
        return _wrap(extractor, cfg, {**resolved, "device_type": str(device).split(":")[0]})
    from coz.fetch.local import resolve_config

    cfg = resolve_config(cfg, "prompt")  # prompt.adapter=auto etc.: what coz-fetch laid out
    if name in VLM_NAMES:
        extractor, resolved = _build_vlm(cfg, device, tiles)
    elif name in DAPE_NAMES:
        extractor, resolved = _build_dape(cfg, device)
    else:
        raise ValueError(f"prompt={name}: unknown prompt mode (available: {', '.join(PROMPTS)})")
    return _wrap(extractor, cfg, {**resolved, "device_type": str(device).split(":")[0]})


def check_prompt_files(cfg: DictConfig | None) -> None:
    """What loading ``cfg``'s extractor checks first, without loading anything: the three files DAPE
    needs, the VLM in a folder, in the cache or on a hub that answers. coz.zoom calls it in its
    ``check``, so a missing one is refused before the run folder is made."""
    from coz.run.targets import has_target

    name = "null" if cfg is None else str(cfg.get("name", ""))
    if cfg is None or has_target(cfg) or name not in ("vlm", "vlm_ar1", "dape"):
        return  # null, a user's extractor, the tiny twins (nothing to find)
    from coz.fetch.local import resolve_config

    cfg = resolve_config(cfg, "prompt")
    if name == "dape":
        from coz.prompts.dape import check_files

        check_files(cfg)
    else:
        from coz.prompts.vlm import check_source

        check_source(str(cfg.model), cfg.get("revision"))


def max_new_tokens(value, adapter: bool, tiles: bool) -> int:
    """``prompt.max_new_tokens``; ``auto`` follows the authors' release of the setting
    (docs/fidelity.md "Prompts"): 16 per full-image tile, 32 with the GRPO adapter (the
    later release, the only one that loads it), 128 without (the first release)."""
    if value != "auto":
        return value
    return 16 if tiles else 32 if adapter else 128


def _build_vlm(cfg: DictConfig, device: str, tiles: bool = False) -> tuple[PromptExtractor, dict]:
    import torch

    from coz.prompts.vlm import VLMPrompts, load_qwen_vl
    from coz.run.dtypes import resolve_dtype

    if cfg.name == "tiny_vlm":
        from coz.prompts.tiny import build_twin

        model, processor, shared = build_twin(cfg, device)
        if cfg.adapter and shared:  # the twin is shared within the process: adapt a copy
            model = copy.deepcopy(model)
        dtype = model.dtype
    else:
        dtype = resolve_dtype(cfg.dtype, device, gpu_default=torch.bfloat16, option="prompt.dtype")
        model, processor = load_qwen_vl(cfg.model, cfg.revision, dtype, device, cfg.max_pixels)
    fingerprint = {}
    if cfg.adapter:
        from coz.prompts.lora import load_adapter

        fingerprint = _file_fingerprint(cfg.adapter)
        model = load_adapter(model, cfg.adapter, merge=cfg.merge_adapter)
    tokens = max_new_tokens(cfg.max_new_tokens, bool(cfg.adapter), tiles)
    extractor = VLMPrompts(model, processor, max_new_tokens=tokens, multiscale=cfg.multiscale)
    extractor.name = cfg.name
    return extractor, {"dtype": str(dtype), "adapter_files": fingerprint, "max_new_tokens": tokens}


def _build_dape(cfg: DictConfig, device: str) -> tuple[PromptExtractor, dict]:
    import hashlib

    if cfg.name == "tiny_dape":  # random weights, offline
        from coz.prompts.tiny_dape import build_tiny_dape

        extractor = build_tiny_dape(seed=cfg.seed, threshold=cfg.threshold, device=device)
    else:
        from coz.prompts.dape import build_dape

        extractor = build_dape(cfg, device)
    return extractor, {
        "dtype": str(extractor.dtype),
        "thresholds": hashlib.sha1(extractor.thresholds.cpu().numpy().tobytes()).hexdigest(),
        "files": {
            k: _file_fingerprint(str(cfg[k])) for k in ("ram_weights", "dape_weights", "tags") if cfg.get(k)
        },
    }


def _wrap(extractor: PromptExtractor, cfg: DictConfig, resolved: dict) -> PromptExtractor:
    from coz.prompts.cache import CachedPrompts, PromptCache
    from coz.prompts.hygiene import CleanPrompts

    options = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in _NOT_IDENTITY}
    identity = json.dumps({"options": options, **resolved}, sort_keys=True, default=str)
    extractor.identity = identity
    mode = str(cfg.get("cache", "memory"))
    if mode not in ("none", "memory", "disk"):
        raise ValueError(f"prompt.cache={mode}: use none, memory or disk")
    if mode != "none":
        folder = None
        if mode == "disk":
            from coz.run.paths import cache_dir

            folder = cfg.get("cache_dir") or cache_dir() / "prompts"
        extractor = CachedPrompts(extractor, PromptCache(identity, folder))
    # clean unset (a user's own option): the text verbatim, as every released setting passes it
    return CleanPrompts(
        extractor, clean=bool(cfg.get("clean", False)), check_clip=bool(cfg.get("check_clip", True))
    )


def _file_fingerprint(path: str) -> dict:
    """Size and modification time of a weights file or of every file in an adapter folder."""
    from pathlib import Path

    p = Path(path).expanduser()
    files = sorted(p.iterdir()) if p.is_dir() else [p] if p.exists() else []
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()}

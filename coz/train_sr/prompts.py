"""Prompts during backbone training: tags of the ground-truth crop (docs/fidelity.md, "Training the SR
backbone").

``prompts.mode``: ``ram`` (the authors: plain RAM, Swin-L, no DAPE LoRA; needs ``ram_weights`` and
``tags``), ``dape`` (RAM + SeeSR's DAPE LoRA), ``tiny_dape`` (the random offline twin), ``null``
(empty prompts) or ``fixed`` (``text`` for every image).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from coz.errors import CozError

MODES = ("ram", "dape", "tiny_dape", "null", "fixed")


class TrainingPrompts:
    """HR batch (B, 3, H, W) in [0, 1] -> one prompt per image."""

    def __init__(self, cfg: DictConfig, device: str | torch.device = "cpu") -> None:
        self.mode = cfg.mode or "null"  # prompts.mode=null reads as YAML null
        self.text = cfg.text
        self.tagger = None
        if self.mode in ("ram", "dape", "tiny_dape"):
            self.tagger = _build_tagger(cfg, str(device))

    def to(self, device) -> TrainingPrompts:
        if self.tagger is not None:
            self.tagger.tagger.to(device)
            self.tagger.thresholds = self.tagger.thresholds.to(device)
            self.tagger.device = str(device)
        return self

    @torch.no_grad()
    def __call__(self, hr: torch.Tensor) -> list[str]:
        if self.mode == "null":
            return [""] * hr.shape[0]
        if self.mode == "fixed":
            return [self.text] * hr.shape[0]
        from coz.prompts.dape import IMAGENET_MEAN, IMAGENET_STD

        t = self.tagger
        x = F.interpolate(
            hr.float(), size=(t.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False
        )
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(next(t.tagger.parameters()).device)
        return t.select(t.tagger(x))


def _build_tagger(cfg: DictConfig, device: str):
    from coz.prompts.dape import DAPEPrompts, load_ram_state, load_tags, ram_swin_tagger, resolve_thresholds

    if cfg.mode == "tiny_dape":
        from coz.prompts.tiny_dape import build_tiny_dape

        return build_tiny_dape(seed=cfg.seed, threshold=cfg.threshold, device=device)
    need = ["ram_weights", "tags"] + (["dape_weights"] if cfg.mode == "dape" else [])
    for key in need:
        value = cfg[key]
        if not value:
            raise CozError(
                f"prompts.mode={cfg.mode} needs prompts.{key}=PATH (RAM: ram_swin_large_14m.pth and "
                "ram_tag_list.txt of recognize-anything; DAPE: SeeSR's DAPE.pth), or use prompts.mode=null"
            )
        if not Path(value).expanduser().is_file():
            raise CozError(f"prompts.{key}={value}: no such file")
    tags = load_tags(Path(cfg.tags).expanduser())
    thresholds = resolve_thresholds(cfg.thresholds, cfg.tags, len(tags), option="prompts.thresholds")
    tagger = ram_swin_tagger(len(tags))
    dape = Path(cfg.dape_weights).expanduser() if cfg.mode == "dape" else None
    load_ram_state(tagger, Path(cfg.ram_weights).expanduser(), dape)
    return DAPEPrompts(tagger.requires_grad_(False), tags, thresholds, image_size=384, device=device)

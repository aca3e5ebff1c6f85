"""Prompt extractors, chosen by the ``prompt=`` config group."""

from __future__ import annotations

from omegaconf import DictConfig

from coz.prompts.base import NullPrompt, PromptExtractor, with_user_prompt

__all__ = ["PromptExtractor", "NullPrompt", "build_prompt_extractor", "with_user_prompt"]


def build_prompt_extractor(cfg: DictConfig | None, device: str = "cpu") -> PromptExtractor:
    name = "null" if cfg is None else str(cfg.name)
    if name == "null":
        return NullPrompt()
    raise ValueError(f"prompt={name}: unknown prompt mode (available: null)")

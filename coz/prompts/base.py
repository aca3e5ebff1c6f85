"""The interface every prompt extractor implements: views in, one text per view out."""

from __future__ import annotations

from abc import ABC, abstractmethod

from PIL import Image


class PromptExtractor(ABC):
    """Turns the zoomed view of each image (and, for AR-2, its previous scale-state) into text.

    ``views`` are the bicubic-upsampled crops about to be super-resolved; ``previous`` holds the
    scale-state each view was cropped from, or None where the zoom mode asks for single-view
    (AR-1) prompts.
    """

    name: str = "prompt"

    @abstractmethod
    def extract(self, views: list[Image.Image], previous: list[Image.Image | None]) -> list[str]:
        """One prompt per view."""


class NullPrompt(PromptExtractor):
    """The paper's "null" prompt mode: no extracted text."""

    name = "null"

    def extract(self, views: list[Image.Image], previous: list[Image.Image | None]) -> list[str]:
        return [""] * len(views)


def with_user_prompt(extracted: str, user_prompt: str) -> str:
    """Combine an extracted prompt with the user's, as the official script does: "{text}, {user},"."""
    if not user_prompt:
        return extracted
    if not extracted:
        return user_prompt
    return f"{extracted}, {user_prompt},"

"""The method names of the paper's tables, derived from the zoom and prompt modes."""

from __future__ import annotations

from collections.abc import Mapping

PROMPT_LABELS = {
    "null": "Null",
    "dape": "DAPE",
    "vlm": "VLM",
    "vlm_ar1": "VLM AR-1",
    "tiny_vlm": "tiny VLM",
    "tiny_dape": "tiny DAPE",
}


def method_label(
    zoom_mode: str, prompt: str, explicit: str | None = None, renames: Mapping[str, str] | None = None
) -> str:
    """``nearest`` -> "NN Interpolation", ``onestep`` -> "Direct SR", ``recursive_multiscale`` with
    ``vlm`` -> "CoZ (VLM)"; ``explicit`` wins; ``renames`` maps a label to a table's own name."""
    if explicit:
        label = explicit
    elif zoom_mode == "nearest":
        label = "NN Interpolation"
    elif zoom_mode == "bicubic":
        label = "Bicubic Interpolation"
    elif zoom_mode == "onestep":
        label = "Direct SR"
    else:
        mode = PROMPT_LABELS.get(prompt, prompt)
        label = f"CoZ ({mode})" if zoom_mode == "recursive_multiscale" else f"CoZ AR-1 ({mode})"
    return (renames or {}).get(label, label)

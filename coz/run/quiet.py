"""Quiet by default: third-party lines that tell a coz user nothing are dropped; ``hydra.verbose=true``
shows them. Each entry names where the line comes from, so it can go when that library changes."""

from __future__ import annotations

import logging
import re
import warnings

# (logger name, message pattern): records dropped at that logger.
LOG_LINES = (
    ("pyiqa", r"(Network|Metric|Model) \[.*\] is created"),  # pyiqa, every metric it builds
    ("bitsandbytes.backends.cpu.ops", r"gemm_4bit"),  # bitsandbytes without the optional `kernels`
)
# (category, message pattern): Python warnings ignored.
WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # Lightning's _pytree on torch
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),  # transformers, asked by peft's LoRA
)
# wandb's notes about its retired "anonymous" setting (an old ~/.config/wandb/settings holds it).
WANDB_NOTES = (
    "The anonymous setting has no effect and will be removed in a future version.",
    "Deprecated setting 'anonymous' has no effect and will be removed in a future version of wandb."
    " Please delete it manually or by running `wandb login` to avoid errors.",
)


class _DropMatching(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    for name, pattern in LOG_LINES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))
    for category, pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def mark_wandb_notes_shown() -> None:
    """wandb prints these notes once per process (repeat=False): mark them as already printed.
    Called just before a W&B run starts (:func:`coz.run.wandb_run.wandb_init_args`), not with the
    other filters: importing wandb costs about a second, which a run without W&B need not pay."""
    try:
        from wandb.errors import term
    except ImportError:
        return
    printed = getattr(term, "_printed_messages", None)
    if isinstance(printed, set) and hasattr(term, "WARN_STRING"):
        printed.update(f"{term.WARN_STRING} {note}" for note in WANDB_NOTES)

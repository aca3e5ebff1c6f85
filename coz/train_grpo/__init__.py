"""GRPO preference alignment of the prompt VLM with a critic VLM (paper section 3.3, Algorithm 2).

One concept per file: ``data`` (multi-scale view pairs from a folder of photos), ``rewards`` (critic,
phrase exclusion, repetition penalty), ``critic`` (the critic VLMs), ``policy`` (the LoRA-adapted
prompt VLM: sampling, token log-probabilities, its reference), ``loss`` (group advantages and the
clipped-ratio loss), ``module`` (the Lightning loop), ``logs`` (CSV and W&B). The entry point is
``python -m coz.train_grpo``.
"""


def main() -> None:
    """``python -m coz.train_grpo`` and the console script ``coz-train-grpo``."""
    from coz.run.extras import tool_main

    tool_main("train_grpo")

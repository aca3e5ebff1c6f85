"""``python -m coz.train_grpo``: grpo alignment of the prompt vlm (:mod:`coz.train_grpo.tool`)."""

from coz.train_grpo import main

main()

"""Training OSEDiff-style SR backbones (``python -m coz.train_sr``), one concept per module.

- :mod:`~coz.train_sr.data`: image folders / path lists mixed by probability, random crops
  and flips, bad files skipped and counted; every item is a pure function of (seed, its index).
- :mod:`~coz.train_sr.kernels`: the Real-ESRGAN blur kernels and per-item degradation draws
  (in the data loader, numpy).
- :mod:`~coz.train_sr.jpeg` / :mod:`~coz.train_sr.degradation`: the batched device half of
  the degradation (Real-ESRGAN two-stage, or bicubic 4x).
- :mod:`~coz.train_sr.stages`: the coarse-to-fine schedule.
- :mod:`~coz.train_sr.generators`: the trainable backbones behind one small interface.
- :mod:`~coz.train_sr.regulariser`: the "fake" score LoRA toggled on the generator's own
  denoiser and the distribution-matching (DMD/VSD) and diffusion losses.
- :mod:`~coz.train_sr.losses`: L2 and LPIPS.
- :mod:`~coz.train_sr.module`: the LightningModule (its checkpoints: :mod:`coz.run.checkpoints`,
  shared with train_grpo); :mod:`~coz.train_sr.export`: release-format weights.
"""


def main() -> None:
    """``python -m coz.train_sr`` and the console script ``coz-train-sr``."""
    from coz.run.extras import tool_main

    tool_main("train_sr")

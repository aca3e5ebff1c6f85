"""Training OSEDiff-style SR backbones (``python -m coz.train_sr``), one concept per module.

- :mod:`~coz.sr_training.data`: image folders / path lists mixed by probability, random crops
  and flips, bad files skipped and counted; every item is a pure function of (seed, its index).
- :mod:`~coz.sr_training.kernels`: the Real-ESRGAN blur kernels and per-item degradation draws
  (in the data loader, numpy).
- :mod:`~coz.sr_training.jpeg` / :mod:`~coz.sr_training.degradation`: the batched device half of
  the degradation (Real-ESRGAN two-stage, or bicubic 4x).
- :mod:`~coz.sr_training.stages`: the coarse-to-fine schedule.
- :mod:`~coz.sr_training.generators`: the trainable backbones behind one small interface.
- :mod:`~coz.sr_training.regulariser`: the "fake" score LoRA toggled on the generator's own
  denoiser and the distribution-matching (DMD/VSD) and diffusion losses.
- :mod:`~coz.sr_training.losses`: L2 and LPIPS.
- :mod:`~coz.sr_training.module`: the LightningModule (its checkpoints: :mod:`coz.run.checkpoints`,
  shared with train_grpo); :mod:`~coz.sr_training.export`: release-format weights.
"""

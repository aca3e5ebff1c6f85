"""One fp16 loss-scale update per training step, however many optimisers step.

train_sr steps two or three optimisers per step (generator, fake score, ...). Lightning's mixed-precision
plugin calls ``scaler.update()`` after each optimiser's step: after an overflow in the first, the scale
is halved before the others unscale, so they step with gradients twice too large (after clipping), and
the scale grows several times too fast. PyTorch's recipe for several optimisers is to unscale and step
each, then update the scale once; this is that recipe.
"""

from __future__ import annotations

import torch


def step_with_one_scale(scaler, optimisers: list[torch.optim.Optimizer], max_norm: float = 0.0) -> None:
    """Unscale, clip (to ``max_norm`` on the true gradients; 0: no clipping) and step every optimiser
    (an optimiser whose gradients overflowed skips its step), then update the scale once."""
    for optimiser in optimisers:
        scaler.unscale_(optimiser)
        if max_norm > 0:
            params = [p for group in optimiser.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        scaler.step(optimiser)
        optimiser.zero_grad(set_to_none=True)
    scaler.update()

"""OSEDiff's regulariser: variational score distillation with "real" and "fake" score models that
share the generator's own frozen denoiser (docs/fidelity.md "Training the SR backbone").

One copy of the transformer (SD3) or UNet (SD2.1) plays three roles:

- generator: the base weights plus the generator's LoRA (the backbone's own adapters);
- real score: the base weights alone (generator adapters off; SD2.1's fully trained ``conv_in``
  replaced by a frozen copy of its pretrained weights);
- fake score: the base weights plus a separate LoRA (:class:`FakeLoRA`), added by forward hooks
  on the chosen Linear layers and enabled only inside :meth:`FakeLoRA.active`.

Nothing is wrapped or renamed, so the backbone's module names and its LoRA save/load formats are
untouched; the fake LoRA's tensors live in this module.

Losses, on the generator's clean latent ``z0`` (B, C, h, w) and its text conditioning:

- distribution matching (DMD / VSD): sample t and noise, noise ``z0``, take x0 predictions of the
  fake and the real model (no grad), ``w = mean|z0 - x0_real|`` per image,
  ``grad = (x0_fake - x0_real) / w``, loss ``= MSE(z0, stopgrad(z0 - grad))``. SD2.1 adds
  classifier-free guidance (7.5, negative prompt) in the real branch; the SD3 port drops it.
- the fake model's diffusion loss on ``stopgrad(z0)``: in the model's own target space
  (``loss_space="target"``: epsilon MSE for SD2.1, as OSEDiff) or in x0 space (``"x0"``: MSE between
  the fake model's x0 prediction ``z_t - sigma v`` and ``z0``, a sigma^2-weighted velocity loss, as
  the released SD3 port).

Timesteps: ``timesteps="sample"`` draws one t per image (OSEDiff SD2.1), ``"batch"`` one t for the
whole batch (the released SD3 port). The released SD3 port's fake model is a separate deep copy
of the base transformer with rank-4 LoRA on the 47 AdaLayerNormZero linears: here the same
frozen base is shared through hooks, which computes the same function with one copy in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SD3_FAKE_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)
TIMESTEP_DRAWS = ("sample", "batch")
LOSS_SPACES = ("target", "x0")
SD21_FAKE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")


def _base(module: nn.Module) -> nn.Module:
    """The plain layer inside a generator adapter: PEFT's ``base_layer``, coz's LoRALinear ``linear``."""
    from coz.backbones.diffusion.lora_formats import LoRALinear

    if isinstance(module, LoRALinear):
        return module.linear
    return getattr(module, "base_layer", module)


def _lora_pair(layer: nn.Module, rank: int) -> tuple[nn.Module, nn.Module] | None:
    """(down, up) for a Linear or a Conv2d (conv LoRA: down with the layer's kernel, up 1x1), or None."""
    device = layer.weight.device
    if isinstance(layer, nn.Linear):
        return (
            nn.Linear(layer.in_features, rank, bias=False, device=device),
            nn.Linear(rank, layer.out_features, bias=False, device=device),
        )
    if isinstance(layer, nn.Conv2d):
        down = nn.Conv2d(
            layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, bias=False, device=device
        )
        return down, nn.Conv2d(rank, layer.out_channels, 1, bias=False, device=device)
    return None


class FakeLoRA(nn.Module):
    """A LoRA added to ``denoiser``'s Linear / Conv2d layers named by ``targets`` (suffix match) through
    forward hooks, active only inside :meth:`active`. ``down ~ N(0, 1/r)``, ``up = 0`` (OSEDiff's
    gaussian init), scale ``alpha / rank``."""

    def __init__(
        self,
        denoiser: nn.Module,
        targets: tuple[str, ...],
        rank: int = 4,
        alpha: float | None = None,
        exclude: tuple[str, ...] = (),
    ):
        super().__init__()
        self.rank, self.scale = int(rank), float(alpha if alpha is not None else rank) / int(rank)
        self.down, self.up = nn.ModuleDict(), nn.ModuleDict()
        self.enabled = False
        self.names: list[str] = []
        self._handles = []
        for name, module in denoiser.named_modules():
            if not any(name == t or name.endswith("." + t) for t in targets) or name in exclude:
                continue
            if "lora_" in name or (pair := _lora_pair(_base(module), self.rank)) is None:
                continue
            key = name.replace(".", "__")
            down, up = pair
            nn.init.normal_(down.weight, std=1.0 / self.rank)
            nn.init.zeros_(up.weight)
            self.down[key], self.up[key] = down, up
            self._handles.append(module.register_forward_hook(self._hook(key)))
            self.names.append(name)
        if not self.names:
            raise ValueError(f"no Linear or Conv2d layer matches the regulariser targets {targets}")

    def _hook(self, key: str):
        def hook(module, inputs, output):
            if not self.enabled:
                return None
            x = inputs[0]
            down, up = self.down[key], self.up[key]
            h = down(x.to(down.weight.dtype))  # (..., r); fp16-rounded like the released add_mp_hook
            h = h.half().to(h.dtype) if getattr(module, "fp16_rank", False) else h
            out = output + (up(h) * self.scale).to(output.dtype)
            # the released SD3 port's fake adaLN layer rounds its output to fp16 like the generator's
            return out.half() if getattr(module, "fp16_output", False) else out

        return hook

    @contextmanager
    def active(self) -> Iterator[None]:
        self.enabled = True
        try:
            yield
        finally:
            self.enabled = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@contextmanager
def forward_replaced(module: nn.Module, forward) -> Iterator[None]:
    """Temporarily give one module instance another forward (its hooks still run)."""
    if "forward" in module.__dict__:
        raise RuntimeError(f"{type(module).__name__} already has a replaced forward")
    module.forward = forward
    try:
        yield
    finally:
        del module.forward


@contextmanager
def generator_off(
    denoiser: nn.Module, frozen_conv_in: dict[str, torch.Tensor] | None = None
) -> Iterator[None]:
    """The base denoiser: every generator adapter bypassed for the duration (coz's adaLN LoRALinear
    and PEFT's LoRA layers alike); ``frozen_conv_in`` (weight, bias) stands in for a fully trained
    ``conv_in``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from coz.backbones.diffusion.lora_formats import LoRALinear

    with ExitStack() as stack:
        for name, module in denoiser.named_modules():
            if frozen_conv_in is not None and name == "conv_in":
                conv = getattr(module, "base_layer", module)
                w, b = frozen_conv_in["weight"], frozen_conv_in["bias"]

                def original(x, conv=conv, w=w, b=b):
                    return F.conv2d(x, w.to(x.dtype), b.to(x.dtype), conv.stride, conv.padding)

                stack.enter_context(forward_replaced(module, original))
            elif isinstance(module, LoRALinear):
                stack.enter_context(forward_replaced(module, module.linear.forward))
            elif isinstance(module, BaseTunerLayer) and hasattr(module, "base_layer"):
                stack.enter_context(forward_replaced(module, module.base_layer.forward))
        yield


@contextmanager
def no_checkpointing(denoiser: nn.Module) -> Iterator[None]:
    """Gradient checkpointing off: the fake model's forward must not be recomputed in a backward
    that runs after its adapters were toggled back (the generator's recompute runs as trained)."""
    flags = {m: m.gradient_checkpointing for m in denoiser.modules() if hasattr(m, "gradient_checkpointing")}
    for m in flags:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.gradient_checkpointing = flag


class ScoreFamily:
    """How one kind of denoiser noises a latent and predicts x0 (subclasses: flow, epsilon)."""

    def __init__(self, denoiser: nn.Module, frozen_conv_in=None) -> None:
        self.denoiser, self.frozen_conv_in = denoiser, frozen_conv_in

    def sample_t(
        self, n: int, low: int, high: int, generator: torch.Generator, device, per: str = "sample"
    ) -> torch.Tensor:
        """(n,) integer timesteps in [low, high): one per image (``per="sample"``) or one shared
        by the batch (``"batch"``)."""
        if per == "batch":
            return torch.randint(low, high, (1,), generator=generator, device=device).expand(n)
        return torch.randint(low, high, (n,), generator=generator, device=device)

    def add_noise(self, z0, noise, t):  # -> z_t
        raise NotImplementedError

    def predict(self, z_t, t, cond: dict[str, Any], negative: bool = False):  # raw model output
        raise NotImplementedError

    def x0(self, z_t, t, output):
        raise NotImplementedError

    def diffusion_target(self, z0, noise):
        raise NotImplementedError


class FlowScore(ScoreFamily):
    """SD3 (rectified flow): ``z_t = (1 - s) z0 + s n``, the transformer predicts ``v = n - z0``,
    ``x0 = z_t - s v``; ``s`` of integer t in [0, 1000) on the released port's grid (:meth:`exact_sigma`)."""

    def __init__(self, denoiser: nn.Module, shift: float = 3.0, sigma_fp16: bool = False) -> None:
        super().__init__(denoiser)
        self.shift, self.sigma_fp16 = float(shift), bool(sigma_fp16)

    def _shifted(self, s: torch.Tensor) -> torch.Tensor:
        return self.shift * s / (1 + (self.shift - 1) * s)

    def exact_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, 1) sigma of integer t in [0, 1000): the released port draws from
        ``FlowMatchEulerDiscreteScheduler.set_timesteps(1000)``, which spaces 1000 values evenly
        between the training grid's ends (shifted(1/1000) and 1) and shifts them AGAIN: sigma runs
        from 0.0089 (t = 0) to 1 (t = 999), not the training grid's 0.0030."""
        lowest = float(self._shifted(torch.tensor(1 / 1000, dtype=torch.float64)))
        s = lowest + (1 - lowest) * t.double() / 999
        return self._shifted(s).float().view(-1, 1, 1, 1)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The sigma that noises and denoises: :meth:`exact_sigma`, rounded to float16 with
        ``sigma_fp16`` as the released port (``sigma.half()``)."""
        sigma = self.exact_sigma(t)
        return sigma.half().float() if self.sigma_fp16 else sigma

    def add_noise(self, z0, noise, t):
        s = self.sigma(t).to(z0.dtype)
        return (1 - s) * z0 + s * noise

    def predict(self, z_t, t, cond, negative=False):
        timestep = self.exact_sigma(t).flatten() * 1000.0  # the released port feeds t itself, unrounded
        return self.denoiser(
            hidden_states=z_t.to(cond["dtype"]),
            timestep=timestep,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled"],
            return_dict=False,
        )[0]

    def x0(self, z_t, t, output):
        return z_t - self.sigma(t).to(z_t.dtype) * output.to(z_t.dtype)

    def diffusion_target(self, z0, noise):
        return noise - z0


class EpsilonScore(ScoreFamily):
    """SD2.1 (DDPM, epsilon prediction): ``z_t = sqrt(a) z0 + sqrt(1 - a) n``."""

    def __init__(self, denoiser: nn.Module, alphas_cumprod: torch.Tensor, frozen_conv_in=None) -> None:
        super().__init__(denoiser, frozen_conv_in)
        self.alphas_cumprod = alphas_cumprod.float()

    def _a(self, t, like):
        return self.alphas_cumprod.to(like.device)[t].view(-1, 1, 1, 1).to(like.dtype)

    def add_noise(self, z0, noise, t):
        a = self._a(t, z0)
        return a.sqrt() * z0 + (1 - a).sqrt() * noise

    def predict(self, z_t, t, cond, negative=False):
        embeds = cond["negative_embeds"] if negative else cond["prompt_embeds"]
        return self.denoiser(z_t.to(cond["dtype"]), t, encoder_hidden_states=embeds, return_dict=False)[0]

    def x0(self, z_t, t, output):
        a = self._a(t, z_t)
        return (z_t - (1 - a).sqrt() * output.to(z_t.dtype)) / a.sqrt()

    def diffusion_target(self, z0, noise):
        return noise


def sd3_dead_layers(transformer: nn.Module) -> tuple[str, ...]:
    """Layers whose output SD3 discards: the context query of its last block (``context_pre_only``),
    which would only feed the text stream's output. A LoRA there would never get a gradient."""
    return tuple(
        f"transformer_blocks.{i}.attn.add_q_proj"
        for i, block in enumerate(getattr(transformer, "transformer_blocks", []))
        if getattr(block, "context_pre_only", False)
    )


class Regulariser(nn.Module):
    """The fake LoRA and the two losses of OSEDiff's regulariser for one score family."""

    def __init__(
        self,
        family: ScoreFamily,
        targets: tuple[str, ...],
        rank: int = 4,
        alpha: float | None = None,
        cfg_scale: float = 1.0,
        dmd_t_range: tuple[int, int] = (20, 980),
        diffusion_t_range: tuple[int, int] = (0, 1000),
        exclude: tuple[str, ...] = (),
        timesteps: str = "sample",
        loss_space: str = "target",
    ) -> None:
        super().__init__()
        if timesteps not in TIMESTEP_DRAWS:
            raise ValueError(f"regulariser.timesteps={timesteps!r}: use one of {', '.join(TIMESTEP_DRAWS)}")
        if loss_space not in LOSS_SPACES:
            raise ValueError(f"regulariser.loss_space={loss_space!r}: use one of {', '.join(LOSS_SPACES)}")
        self.family = family
        self.fake = FakeLoRA(family.denoiser, tuple(targets), rank, alpha, exclude)
        self.cfg_scale = float(cfg_scale)
        self.dmd_t_range, self.diffusion_t_range = tuple(dmd_t_range), tuple(diffusion_t_range)
        self.timesteps, self.loss_space = timesteps, loss_space

    def parameters_to_train(self) -> list[nn.Parameter]:
        return list(self.fake.parameters())

    def _real(self, z_t, t, cond):
        out = self.family.predict(z_t, t, cond)
        if self.cfg_scale != 1.0:  # classifier-free guidance against the negative prompt (SD2.1 OSEDiff)
            neg = self.family.predict(z_t, t, cond, negative=True)
            out = neg + self.cfg_scale * (out - neg)
        return self.family.x0(z_t, t, out)

    def dmd_loss(self, z0: torch.Tensor, cond: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """The distribution-matching term on the generator's latent ``z0`` (gradient flows to z0 only)."""
        device = z0.device
        with torch.no_grad():
            t = self.family.sample_t(z0.shape[0], *self.dmd_t_range, generator, device, self.timesteps)
            noise = torch.randn(z0.shape, generator=generator, device=device, dtype=z0.dtype)
            z_t = self.family.add_noise(z0.detach(), noise, t)
            with generator_off(self.family.denoiser, self.family.frozen_conv_in):
                with self.fake.active():
                    x0_fake = self.family.x0(z_t, t, self.family.predict(z_t, t, cond)).float()
                x0_real = self._real(z_t, t, cond).float()
            weight = (z0.detach().float() - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
            grad = torch.nan_to_num((x0_fake - x0_real) / weight)
            target = z0.detach().float() - grad
        return F.mse_loss(z0.float(), target)

    def diffusion_loss(
        self, z0: torch.Tensor, cond: dict[str, Any], generator: torch.Generator
    ) -> torch.Tensor:
        """The fake model's own denoising loss on ``stopgrad(z0)`` (gradient flows to the fake LoRA only)."""
        z0 = z0.detach()
        t = self.family.sample_t(z0.shape[0], *self.diffusion_t_range, generator, z0.device, self.timesteps)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        z_t = self.family.add_noise(z0, noise, t)
        denoiser = self.family.denoiser
        with (
            generator_off(denoiser, self.family.frozen_conv_in),
            no_checkpointing(denoiser),
            self.fake.active(),
        ):
            out = self.family.predict(z_t, t, cond)
        if self.loss_space == "x0":  # the released SD3 port: MSE(x0 prediction, z0)
            return F.mse_loss(self.family.x0(z_t, t, out).float(), z0.float())
        return F.mse_loss(out.float(), self.family.diffusion_target(z0, noise).float())


def step_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from (seed, step, micro-batch, rank...): per-step randomness with no state."""
    value = int(seed) % 2**63
    for p in parts:
        value = (value * 0x9E3779B97F4A7C15 + int(p) + 1) % 2**63
    return value


__all__ = [
    "EpsilonScore",
    "FakeLoRA",
    "FlowScore",
    "Regulariser",
    "SD21_FAKE_TARGETS",
    "SD3_FAKE_TARGETS",
    "generator_off",
    "step_seed",
]

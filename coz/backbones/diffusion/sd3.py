"""OSEDiff on SD3-medium: the paper's one-step diffusion SR backbone (docs/fidelity.md, "OSEDiff-SD3
inference and full-image SR").

One step, on the bicubic 512 view x in [-1, 1]:

    z  = vae.encode(x).sample(generator) * scaling        (B, 16, 64, 64); see ``latent_shift``
    v  = transformer(z, t=1000, prompt_embeds, pooled)    sigma = 1: the flow's noise end
    z' = z - v                                            one Euler step from sigma 1 to 0
    y  = vae.decode(z' / scaling + shift)                 (B, 3, 512, 512)

with a rank-4 LoRA on the transformer's adaLN modulation and a PEFT LoRA on the VAE encoder
(:mod:`coz.backbones.diffusion.lora_formats`). ``latent_shift`` (the shift-factor quirk):
- ``test`` (default; what the released checkpoint was evaluated with): no shift on encode,
  ``+ shift`` on decode;
- ``train``: ``(z - shift) * scaling`` on encode, ``+ shift`` on decode (the training path);
- ``none``: no shift on either side (the later full-image script).

Full-image SR (``zoom=full``, :meth:`OSEDiffSD3.upscale_full`): the same step on latent tiles of
64 (overlap 16), each with its own prompt, between a tiled VAE encode (1024-px tiles) and decode
(128-latent tiles), every stage Gaussian-blended, with ``latent_shift`` ``none`` by default.

Weights: the authors' ``model_20001.pkl`` + ``vae_encoder_20001.pt``, or our LoRA-only
``.safetensors``. Official dtypes: transformer and VAE fp32, text encoders fp16.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from coz.backbones.diffusion.color_fix import color_fix
from coz.backbones.diffusion.lora_formats import (
    LoRALinear,
    inject_adaln_lora,
    inject_vae_encoder_lora,
    load_lora_safetensors,
    load_released_transformer_lora,
    load_released_vae_encoder,
    save_lora_safetensors,
)
from coz.backbones.diffusion.one_step import OneStepDiffusion
from coz.backbones.diffusion.sd3_text import SD3TextEncoders
from coz.backbones.diffusion.vae_tiling import tiled_decode, tiled_encode
from coz.backbones.seeded import seeded
from coz.errors import CozError
from coz.geometry import to_8bit
from coz.run.dtypes import resolve_dtype
from coz.tiling import tile_boxes, tiled_apply

if TYPE_CHECKING:
    from coz.full_image_options import FullImageOptions

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/stable-diffusion-3-medium-diffusers"
LATENT_SHIFTS = ("test", "train", "none")
TIMESTEP = 1000.0  # sigma = 1: FlowMatchEuler's single step (shift 3 leaves sigma 1 at 1)


class OSEDiffSD3(OneStepDiffusion):
    """OSEDiff-SD3 behind the :class:`Backbone` interface (restores the bicubic 512 view).

    Built from components (see :meth:`from_pretrained`, :meth:`tiny`, :meth:`from_config`). With
    ``trainable=True`` exactly the LoRA parameters require grad; otherwise nothing does.
    """

    scale = 4
    takes_upsampled_input = True

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        text: SD3TextEncoders,
        *,
        dtype: str | torch.dtype = "float32",
        latent_shift: str = "test",
        color_fix: str = "none",
        seed: int = 42,
        lora_rank: int = 4,
        vae_lora_rank: int = 4,
        vae_lora_alpha: int = 8,
        trainable: bool = False,
        adaln_fp16: bool = True,
        name: str = "osediff-sd3",
        base_model: str = DEFAULT_MODEL,
    ) -> None:
        if latent_shift not in LATENT_SHIFTS:
            raise CozError(f"latent_shift={latent_shift!r}: use one of {', '.join(LATENT_SHIFTS)}")
        self._begin(name, base_model, color_fix)
        self.latent_shift = latent_shift
        self.lora_rank, self.vae_lora_rank, self.vae_lora_alpha = lora_rank, vae_lora_rank, vae_lora_alpha
        self.dtype = resolve_dtype(dtype)
        with seeded(seed):  # LoRA init is seeded and leaves the caller's RNG alone
            self.lora_names = inject_adaln_lora(transformer, lora_rank)
            self.vae_lora_targets = inject_vae_encoder_lora(vae.encoder, vae_lora_rank, vae_lora_alpha)
        self.transformer, self.vae, self.text = transformer, vae, text
        nn.Module.to(self.transformer, dtype=self.dtype)  # nn.Module's own: diffusers' to() warns on casts
        nn.Module.to(self.vae, dtype=self.dtype)
        for module in self.transformer.modules():  # the adaLN LoRA stays fp32, as in the official code
            if isinstance(module, LoRALinear):
                module.lora_down.float()
                module.lora_up.float()
                # the released layer's output is .half() in the fp32 transformer (no-op below fp32)
                module.fp16_output = bool(adaln_fp16) and self.dtype == torch.float32
        self._finish(seed, trainable)

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def tiny(cls, model_seed: int = 0, **options) -> OSEDiffSD3:
        """The offline random-weight twin (:mod:`coz.backbones.tiny.sd3`; ``model_seed`` seeds its
        base weights, ``seed`` the LoRA init and VAE noise), fp32 text encoders by default."""
        from coz.backbones.tiny.sd3 import JOINT_DIM, tiny_sd3_components

        parts = tiny_sd3_components(model_seed)
        encoders = parts["encoders"]
        if options.pop("drop_t5", False):
            encoders[2] = None
        text = SD3TextEncoders(
            parts["tokenizers"],
            encoders,
            JOINT_DIM,
            dtype=resolve_dtype(options.pop("text_dtype", "float32")),
            offload=options.pop("offload_text_encoders", False),
        )
        options.setdefault("name", "tiny-osediff-sd3")
        return cls(parts["transformer"], parts["vae"], text, base_model="tiny_sd3", **options)

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        text_dtype: str = "float16",
        drop_t5: bool = False,
        offload_text_encoders: bool = False,
        **options,
    ) -> OSEDiffSD3:
        """SD3-medium from a hub id (the user's cache; downloads when online) or a local folder."""
        from coz.backbones.diffusion.sd3_loading import load_sd3_parts

        parts = load_sd3_parts(model, text_dtype=resolve_dtype(text_dtype), drop_t5=drop_t5)
        text = SD3TextEncoders(
            parts["tokenizers"],
            parts["encoders"],
            parts["joint_dim"],
            dtype=resolve_dtype(text_dtype),
            offload=offload_text_encoders,
        )
        return cls(parts["transformer"], parts["vae"], text, base_model=model, **options)

    @classmethod
    def from_config(cls, cfg, device: torch.device | str = "cpu", trainable: bool = False) -> OSEDiffSD3:
        """Build from a ``backbone=sd3`` / ``tiny_sd3`` config node (see conf/shared/backbone/sd3.yaml);
        ``trainable``: as coz.train_sr trains it (LoRA requiring grad, no colour fix, and without
        weights a fresh LoRA on the base model)."""
        weights = _weight_files(cfg, fresh=trainable)  # checked before the (large) base model loads
        options = dict(
            dtype=cfg.dtype,
            latent_shift=cfg.latent_shift,
            color_fix="none" if trainable else cfg.color_fix,
            seed=cfg.seed,
            lora_rank=cfg.lora_rank,
            drop_t5=cfg.drop_t5,
            offload_text_encoders=cfg.offload_text_encoders,
            text_dtype=cfg.text_dtype,
            adaln_fp16=cfg.adaln_fp16,
            trainable=trainable,
        )
        backbone = cls._tiny_or_pretrained(cfg, **options)
        if "weights" in weights:
            backbone.load_lora(weights["weights"])
        elif weights:
            backbone.load_released(weights["transformer_lora"], weights["vae_encoder"])
        if trainable:
            backbone.set_trainable(True)  # after loading: the loaded LoRA trains too
        return backbone.to(device)

    # ---- weights --------------------------------------------------------------------------
    def load_released(self, transformer_lora: str | Path, vae_encoder: str | Path) -> None:
        """The authors' ``model_20001.pkl`` (list format) and ``vae_encoder_20001.pt`` (state dict)."""
        load_released_transformer_lora(self.transformer, transformer_lora)
        load_released_vae_encoder(self.vae.encoder, vae_encoder)

    def load_lora(self, path: str | Path) -> dict[str, str]:
        """Our LoRA-only safetensors (what :meth:`save_lora` and ``coz.train_sr`` write)."""
        return load_lora_safetensors(self.transformer, self.vae.encoder, path, backbone="sd3")

    def save_lora(self, path: str | Path) -> None:
        save_lora_safetensors(
            path,
            self.transformer,
            self.vae.encoder,
            metadata=dict(
                backbone="sd3",
                base_model=self.base_model,
                rank=str(self.lora_rank),
                vae_rank=str(self.vae_lora_rank),
                vae_alpha=str(self.vae_lora_alpha),
                latent_shift=self.latent_shift,
            ),
        )

    def modules(self) -> list[nn.Module]:
        return [self.transformer, self.vae, *self.text.modules()]

    def lora_parameters(self) -> list[nn.Parameter]:
        named = [*self.transformer.named_parameters(), *self.vae.encoder.named_parameters()]
        return [p for n, p in named if "lora_" in n]

    trainable_parameters = lora_parameters  # the adaLN and VAE-encoder LoRA

    # ---- device -----------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> OSEDiffSD3:
        self._device = torch.device(device)
        self.transformer.to(self._device)
        self.vae.to(self._device)
        self.text.to(self._device)
        return self

    @property
    def device(self) -> torch.device:
        return self._device

    # ---- the one step -----------------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompt_embeds (B, 77 + 512, D), pooled (B, P) in the transformer dtype."""
        embeds, pooled = self.text.encode(prompts)
        return embeds.to(self._device, self.dtype), pooled.to(self._device, self.dtype)

    def encode(
        self,
        x: torch.Tensor,
        generators: list[torch.Generator] | None = None,
        latent_shift: str | None = None,
    ) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> z (B, 16, H/8, W/8), the posterior sampled with ``generators``
        (one per image) or else the backbone's seeded running generator. ``latent_shift``
        overrides the backbone's setting (full-image SR uses ``none``)."""
        cfg = self.vae.config
        posterior = self.vae.encode(x.to(self._device, self.dtype)).latent_dist
        z = posterior.sample(generator=generators or self.generator)
        if (latent_shift or self.latent_shift) == "train":
            z = z - (cfg.shift_factor or 0.0)
        return z * cfg.scaling_factor

    def decode(self, z: torch.Tensor, latent_shift: str | None = None) -> torch.Tensor:
        """z (B, 16, h, w) -> (B, 3, 8h, 8w), about [-1, 1]."""
        cfg = self.vae.config
        shift = 0.0 if (latent_shift or self.latent_shift) == "none" else (cfg.shift_factor or 0.0)
        return self.vae.decode(z / cfg.scaling_factor + shift).sample

    def predict_velocity(
        self, z: torch.Tensor, prompt_embeds: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        t = torch.full((z.shape[0],), TIMESTEP, device=z.device, dtype=torch.float32)
        return self.transformer(
            hidden_states=z,
            timestep=t,
            encoder_hidden_states=prompt_embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]

    def restore(
        self, x: torch.Tensor, prompts: list[str], generators: list[torch.Generator] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> (image (B, 3, H, W) about [-1, 1], restored latent z').

        Differentiable in the LoRA parameters (training calls this); the text encoders are not.
        """
        if len(prompts) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {len(prompts)} prompts")
        prompt_embeds, pooled = self.encode_prompt(prompts)
        z = self.encode(x, generators)
        z = z - self.predict_velocity(z, prompt_embeds, pooled)  # Euler step sigma 1 -> 0
        return self.decode(z), z

    # ---- full-image SR (zoom=full; paper Appendix H) ---------------------------------------------
    def full_image_tiles(
        self, height: int, width: int, options: FullImageOptions
    ) -> list[tuple[int, int, int, int]]:
        """Latent tiles of ``options.latent_tile`` (64) overlapping by ``latent_overlap`` (16) on
        the 4x image's latent grid, as output-pixel boxes (512-px tiles overlapping by 128)."""
        boxes = tile_boxes(
            height * self.scale // 8, width * self.scale // 8, options.latent_tile, options.latent_overlap
        )
        return [(t * 8, le * 8, b * 8, r * 8) for t, le, b, r in boxes]

    _encoded_full: tuple[torch.Tensor, torch.Tensor] | None = None  # (up, z) of full_image_views

    def upscale_full(
        self, lr: torch.Tensor, up: torch.Tensor, prompts: list[str], options: FullImageOptions
    ) -> torch.Tensor:
        """The authors' full-image path, one tile on the device at a time (see
        :meth:`Backbone.upscale_full` for the arguments):

        1. tiled VAE encode of ``up`` (``options.vae_tiling``: VAEHook's tiles with GroupNorm
           statistics shared by all tiles, estimated on a shrunk copy (``fast``, as released) or
           gathered exactly (``shared_norm``), the posterior noise from (seed, the image); or
           blended tiles, the noise per tile from (seed, the tile's pixels)), reused from
           :meth:`full_image_views` when it just encoded ``up``;
        2. the one-step update on latent tiles of ``latent_tile``, each with its own prompt;
        3. tiled VAE decode (latent tiles of ``vae_decoder_tile``), the colour fix per decoded
           tile against its crop of ``up``;

        the latent stage blended with Gaussian weights into a host-side accumulator. ``latent_shift``
        comes from ``options`` (the authors' full-image script: ``none``) unless that is None.
        """
        shift = self._full_shift(up, options)
        dev = self._device
        hooked = options.vae_tiling != "blended"  # fast | shared_norm: the released VAEHook's tiles

        def pixels(tile: torch.Tensor) -> torch.Tensor:  # uint8 -> float [0, 1] on the device
            return tile.to(dev).float().div_(255)

        cached, self._encoded_full = self._encoded_full, None
        z = cached[1] if cached is not None and torch.equal(cached[0], up) else self._encode_full(up, options)
        n_tiles = len(tile_boxes(z.shape[-2], z.shape[-1], options.latent_tile, options.latent_overlap))
        if len(prompts) != n_tiles:
            raise ValueError(f"{n_tiles} latent tiles but {len(prompts)} prompts")

        embedded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the last prompt's embedding

        def step_tile(tile: torch.Tensor, index: int) -> torch.Tensor:
            if prompts[index] not in embedded:  # neighbours often share a prompt (always, with null)
                embedded.clear()
                embedded[prompts[index]] = self.encode_prompt([prompts[index]])
            prompt_embeds, pooled = embedded[prompts[index]]
            zt = tile.to(dev, self.dtype)
            return (zt - self.predict_velocity(zt, prompt_embeds, pooled)).float().cpu()

        z = tiled_apply(
            step_tile, z, options.latent_tile, options.latent_overlap, 1, options.tile_variance, "SR tiles"
        )
        decode_boxes = tile_boxes(
            z.shape[-2], z.shape[-1], options.vae_decoder_tile, options.vae_decoder_overlap
        )

        def decode_tile(tile: torch.Tensor, index: int) -> torch.Tensor:
            y = (self.decode(tile.to(dev, self.dtype), latent_shift=shift).float().clamp(-1.0, 1.0) + 1) / 2
            if self.color_fix != "none":
                t, le, b, r = (8 * v for v in decode_boxes[index])
                y = color_fix(self.color_fix, y, pixels(up[..., t:b, le:r]))
            return y.cpu()

        if hooked:
            cfg = self.vae.config
            offset = 0.0 if shift == "none" else (cfg.shift_factor or 0.0)
            with torch.no_grad():
                y = tiled_decode(
                    self.vae,
                    (z / cfg.scaling_factor + offset).to(self.dtype),
                    options.vae_decoder_tile,
                    options.vae_decoder_pad,
                    options.vae_tiling,
                    dev,
                    "VAE decode",
                )
            y = (y.float().clamp_(-1.0, 1.0) + 1) / 2
            if self.color_fix != "none":
                y = color_fix(self.color_fix, y.to(dev), pixels(up)).cpu()
            return y
        return tiled_apply(
            decode_tile,
            z,
            options.vae_decoder_tile,
            options.vae_decoder_overlap,
            8,
            options.tile_variance,
            "VAE decode tiles",
        )

    def _full_shift(self, up: torch.Tensor, options: FullImageOptions) -> str:
        height, width = up.shape[-2:]
        if height % 16 or width % 16:
            raise ValueError(f"full-image SR needs sides that are multiples of 16, got {height}x{width}")
        shift = options.latent_shift or self.latent_shift
        if shift not in LATENT_SHIFTS:
            raise CozError(f"zoom.latent_shift={shift!r}: use one of {', '.join(LATENT_SHIFTS)} or backbone")
        return shift

    def _encode_full(self, up: torch.Tensor, options: FullImageOptions) -> torch.Tensor:
        """(1, 3, H, W) uint8 -> z (1, 16, H/8, W/8) float32 on the host, by the tiled VAE of
        ``options.vae_tiling``."""
        shift = self._full_shift(up, options)
        if options.vae_tiling != "blended":  # the released VAEHook technique (fast or exact statistics)
            return self._hooked_encode(up, options, shift)
        dev = self._device

        def encode_tile(tile: torch.Tensor, _: int) -> torch.Tensor:
            x = tile.to(dev).float().div_(255)
            return self.encode(x * 2 - 1, self.image_generators(x), latent_shift=shift).float().cpu()

        return tiled_apply(
            encode_tile,
            up,
            options.vae_encoder_tile,
            options.vae_encoder_overlap,
            Fraction(1, 8),
            options.tile_variance,
            "VAE encode tiles",
        )

    def full_image_views(self, up: torch.Tensor, tiles: list, options: FullImageOptions) -> list:
        """Each tile's VLM view as the released full-image script makes it: the VAE decode of the
        tile's input latent. The latents are kept for the :meth:`upscale_full` that follows."""
        from PIL import Image

        shift = self._full_shift(up, options)
        z = self._encode_full(up, options)
        self._encoded_full = (up, z)
        views = []
        with torch.no_grad():
            for top, left, bottom, right in tiles:
                zt = z[..., top // 8 : bottom // 8, left // 8 : right // 8].to(self._device, self.dtype)
                y = (self.decode(zt, latent_shift=shift).float().clamp(-1.0, 1.0) + 1) / 2
                pixels = to_8bit(y[0], self.to_8bit).permute(1, 2, 0).cpu().numpy()  # ToPILImage, as released
                views.append(Image.fromarray(pixels))
        return views

    def _hooked_encode(self, up: torch.Tensor, options: FullImageOptions, shift: str) -> torch.Tensor:
        """(1, 3, H, W) uint8 -> z (1, 16, H/8, W/8) float32 on the host: the encoder's moments by
        the VAEHook-style tiled VAE, the posterior sampled with the image's own generator."""
        x = up.float().div_(255)
        generator = self.image_generators(x)[0]
        with torch.no_grad():
            moments = tiled_encode(
                self.vae,
                (x * 2 - 1).to(self.dtype),
                options.vae_encoder_tile,
                options.vae_encoder_pad,
                options.vae_tiling,
                self._device,
                "VAE encode",
            ).float()
        mean, logvar = moments.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        z = mean + std * torch.randn(mean.shape, generator=generator)
        cfg = self.vae.config
        if shift == "train":
            z = z - (cfg.shift_factor or 0.0)
        return z * cfg.scaling_factor


def _weight_files(cfg, fresh: bool = False) -> dict[str, Path]:
    """The checkpoint files a config names, each checked to exist (fast, before any model loads);
    ``fresh``: none is fine (training starts a fresh LoRA on the base model)."""
    from coz.backbones.diffusion.hub import require_file

    name = cfg.name
    if cfg.weights:
        return {"weights": require_file(cfg.weights, "backbone.weights", "a LoRA .safetensors saved by coz")}
    released = {"transformer_lora": cfg.transformer_lora, "vae_encoder": cfg.vae_encoder}
    if not any(released.values()):
        if name.startswith("tiny_") or fresh:
            return {}  # the random twin runs with its fresh LoRA (up = 0)
        raise CozError(
            f"backbone={name} needs OSEDiff weights: set backbone.transformer_lora=.../model_20001.pkl "
            "and backbone.vae_encoder=.../vae_encoder_20001.pt (the Chain-of-Zoom release: "
            "ckpt/SR_LoRA and ckpt/SR_VAE; or `coz-fetch coz-sd3`, then both =auto), or "
            "backbone.weights=<file>.safetensors from coz.train_sr"
        )
    return {
        "transformer_lora": require_file(
            released["transformer_lora"], "backbone.transformer_lora", "the transformer LoRA, model_20001.pkl"
        ),
        "vae_encoder": require_file(
            released["vae_encoder"], "backbone.vae_encoder", "the VAE encoder, vae_encoder_20001.pt"
        ),
    }

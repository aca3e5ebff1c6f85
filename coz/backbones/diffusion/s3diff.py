"""S3Diff: one-step SR on SD-Turbo with degradation-guided LoRA (docs/fidelity.md "Other backbones").

One step, on the bicubic view x in [-1, 1] (B, 3, H, W) and its low-res crop l in [0, 1] (B, 3, H/4, W/4):

    s   = estimator(l)                                   (B, 2) blur, noise scores (de_net.pth)
    Mv, Mu = modulation(s)                               per-sample r x r LoRA matrices per block
    z   = vae.encode(x).sample(generator) * 0.18215      VAE-encoder LoRA modulated by Mv
    e+  = unet(z, t=999, text(prompt))                   UNet LoRA modulated by Mu
    e-  = unet(z, t=999, text(negative_prompt))
    e   = e- + 1.07 (e+ - e-)                            classifier-free guidance
    z0  = (z - sqrt(1 - a) e) / sqrt(a)                  DDPM from t=999 to the end (a = alphas_cumprod[999])
    y   = vae.decode(z0 / 0.18215).clamp(-1, 1)          then the wavelet colour fix towards x

Under Chain-of-Zoom the step's prompt replaces the authors' fixed positive prompt; an empty prompt
(``prompt=null``) falls back to it (``positive_prompt``), which is what S3Diff was trained with.
Inputs whose sides are not multiples of 64 are reflect-padded like the authors' script, then cropped.

Weights: the release ``s3diff.pkl`` (+ ``de_net.pth``), or our ``.safetensors`` (+ ``de_net.pth``);
see :mod:`coz.backbones.diffusion.s3diff_lora`. The authors' DDPM step adds ``1e-10 * noise`` (the clamped
variance of the last step); we leave it out, so only the VAE posterior sample is random, drawn per
image from (seed, its pixels).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from coz.backbones.diffusion.color_fix import color_fix
from coz.backbones.diffusion.degradation_estimator import DegradationEstimator, load_estimator_weights
from coz.backbones.diffusion.one_step import OneStepDiffusion
from coz.backbones.diffusion.s3diff_lora import (
    UNET_ADAPTER,
    UNET_LORA_TARGETS,
    VAE_ADAPTER,
    VAE_LORA_TARGETS,
    DegradationModulation,
    demod_layers,
    inject_demod_lora,
    load_adapter_safetensors,
    load_release,
    modulated,
    read_release,
    save_adapter_safetensors,
    targets_metadata,
    write_release,
)
from coz.backbones.diffusion.sd3_text import CLIP_TOKENS
from coz.backbones.seeded import seeded
from coz.errors import CozError
from coz.run.atomic import write_atomic
from coz.run.dtypes import cast_keeping_fp32, resolve_dtype

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/sd-turbo"
TIMESTEP = 999
GUIDANCE_SCALE = 1.07
# What the model restores: S3Diff's own 4x bilinear of the low-res crop, or the chain's bicubic view
INPUT_RESIZES = ("bilinear", "view")
POSITIVE_PROMPT = (
    "A high-resolution, 8K, ultra-realistic image with sharp focus, vibrant colors, and natural lighting."
)
NEGATIVE_PROMPT = (
    "oil painting, cartoon, blur, dirty, messy, low quality, deformation, low resolution, oversmooth"
)


class S3Diff(OneStepDiffusion):
    """S3Diff behind the :class:`Backbone` interface: restores the bicubic view, guided by the
    degradation scores of the low-res crop (``wants_low_res``).

    Built from components (see :meth:`from_pretrained`, :meth:`tiny`, :meth:`from_config`). With
    ``trainable=True`` exactly the adapter parameters require grad: the UNet and VAE-encoder LoRA,
    the UNet's ``conv_in`` (trained fully by the authors and stored in ``s3diff.pkl``) and the
    degradation-modulation MLPs and block embeddings; otherwise nothing does.
    """

    scale = 4
    takes_upsampled_input = True
    wants_low_res = True

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        estimator: nn.Module,
        scheduler,
        *,
        dtype: str | torch.dtype = "float32",
        lora_rank_unet: int = 32,
        lora_rank_vae: int = 16,
        unet_targets: str | tuple[str, ...] | list[str] = UNET_LORA_TARGETS,
        vae_targets: str | tuple[str, ...] | list[str] = VAE_LORA_TARGETS,
        guidance_scale: float = GUIDANCE_SCALE,
        positive_prompt: str = POSITIVE_PROMPT,
        negative_prompt: str = NEGATIVE_PROMPT,
        color_fix: str = "wavelet",
        input_resize: str = "bilinear",
        seed: int = 42,
        trainable: bool = False,
        name: str = "s3diff",
        base_model: str = DEFAULT_MODEL,
    ) -> None:
        self._begin(name, base_model, color_fix)
        if input_resize not in INPUT_RESIZES:
            raise CozError(f"input_resize={input_resize!r}: use one of {', '.join(INPUT_RESIZES)}")
        self.input_resize = input_resize
        cfg = scheduler.config
        if cfg.get("prediction_type", "epsilon") not in ("epsilon", "v_prediction", "sample"):
            raise CozError(f"scheduler prediction_type={cfg.prediction_type!r} is not supported")
        if cfg.get("thresholding", False):
            raise CozError("scheduler thresholding is not supported by the one-step S3Diff path")
        self.guidance_scale = float(guidance_scale)
        self.positive_prompt, self.negative_prompt = positive_prompt, negative_prompt
        self.unet_targets = unet_targets if isinstance(unet_targets, str) else tuple(unet_targets)
        self.vae_targets = vae_targets if isinstance(vae_targets, str) else tuple(vae_targets)
        self.dtype = resolve_dtype(dtype, option="backbone.dtype")
        self.scheduler, self.tokenizer = scheduler, tokenizer
        self.alpha_bar = float(scheduler.alphas_cumprod[TIMESTEP])
        with seeded(seed):  # adapter init is seeded and leaves the caller's RNG alone
            self.unet_lora_names = inject_demod_lora(
                unet, self.unet_targets, lora_rank_unet, UNET_ADAPTER, "unet"
            )
            self.vae_lora_names = inject_demod_lora(vae, self.vae_targets, lora_rank_vae, VAE_ADAPTER, "vae")
            self.modulation = DegradationModulation(lora_rank_unet, lora_rank_vae)
        self.lora_rank_unet, self.lora_rank_vae = lora_rank_unet, lora_rank_vae
        self.unet, self.vae, self.text_encoder, self.estimator = unet, vae, text_encoder, estimator
        for module in self.modules():
            cast_keeping_fp32(module, self.dtype).eval()  # what from_pretrained keeps fp32 stays so
        self._finish(seed, trainable)
        self.pad_multiple = 2 ** (len(vae.config.block_out_channels) - 1) * 2 ** (
            len(unet.config.block_out_channels) - 1
        )

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def tiny(cls, model_seed: int = 0, **options) -> S3Diff:
        """The offline random-weight twin (:mod:`coz.backbones.tiny.s3diff`; ``model_seed`` seeds its
        base weights and estimator, ``seed`` the adapter init and VAE noise); ranks 8 / 4 by default."""
        from coz.backbones.tiny.s3diff import tiny_s3diff_components

        parts = tiny_s3diff_components(model_seed)
        options.setdefault("name", "tiny-s3diff")
        options.setdefault("lora_rank_unet", 8)
        options.setdefault("lora_rank_vae", 4)
        return cls(**parts, base_model="tiny_s3diff", **options)

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, **options) -> S3Diff:
        """SD-Turbo from a hub id (the user's cache; downloads when online) or a local folder, with a
        DEResNet of the release's size (load ``de_net.pth`` into it with :meth:`load_estimator`)."""
        parts = load_sd_turbo_parts(model)
        return cls(**parts, estimator=DegradationEstimator(), base_model=model, **options)

    @classmethod
    def from_config(cls, cfg, device: torch.device | str = "cpu") -> S3Diff:
        """Build from a ``backbone=s3diff`` / ``tiny_s3diff`` config node (see conf/shared/backbone/s3diff.yaml)."""
        from coz.backbones.diffusion.hub import resolve_model

        files = _weight_files(cfg)  # checked before anything large loads
        if not cfg.name.startswith("tiny_"):  # a missing base model fails before the checkpoints load
            resolve_model(cfg.model, "backbone.model")
        options = dict(
            dtype=cfg.dtype,
            guidance_scale=cfg.guidance_scale,
            positive_prompt=cfg.positive_prompt,
            negative_prompt=cfg.negative_prompt,
            color_fix=cfg.color_fix,
            input_resize=cfg.input_resize,
            seed=cfg.seed,
            lora_rank_unet=cfg.lora_rank_unet,
            lora_rank_vae=cfg.lora_rank_vae,
        )
        release = read_release(files["pretrained_path"]) if "pretrained_path" in files else None
        if release is not None:  # the file's ranks and targets define the adapter, as in the authors' code
            options |= dict(
                lora_rank_unet=release["rank_unet"],
                lora_rank_vae=release["rank_vae"],
                unet_targets=release["unet_lora_target_modules"],
                vae_targets=release["vae_lora_target_modules"],
            )
        backbone = cls._tiny_or_pretrained(cfg, **options)
        if release is not None:
            backbone.load_release_state(files["pretrained_path"], release)
        elif "weights" in files:
            backbone.load_lora(files["weights"])
        if "de_net_path" in files:
            backbone.load_estimator(files["de_net_path"])
        return backbone.to(device)

    # ---- weights --------------------------------------------------------------------------
    def load_released(self, pretrained_path: str | Path, de_net_path: str | Path | None = None) -> None:
        """The release's ``s3diff.pkl`` (and, if given, ``de_net.pth``)."""
        self.load_release_state(pretrained_path, read_release(pretrained_path))
        if de_net_path is not None:
            self.load_estimator(de_net_path)

    def load_release_state(self, path: str | Path, release: dict) -> None:
        load_release(path, release, self.unet, self.vae, self.modulation, self.unet_targets, self.vae_targets)

    def save_released(self, pretrained_path: str | Path, de_net_path: str | Path | None = None) -> None:
        """Write ``s3diff.pkl`` in the authors' layout (and ``de_net.pth``, the estimator's state dict)."""
        write_release(
            pretrained_path, self.unet, self.vae, self.modulation, self.unet_targets, self.vae_targets
        )
        if de_net_path is not None:
            state = {k: v.detach().cpu().clone() for k, v in self.estimator.state_dict().items()}
            write_atomic(de_net_path, lambda tmp: torch.save(state, tmp))

    def load_estimator(self, path: str | Path) -> None:
        """``de_net.pth``: the degradation estimator's state dict."""
        load_estimator_weights(self.estimator, path)

    def load_lora(self, path: str | Path) -> dict[str, str]:
        """Our adapter safetensors (what :meth:`save_lora` and ``coz.train_sr`` write)."""
        return load_adapter_safetensors(path, self.unet, self.vae, self.modulation)

    def save_lora(self, path: str | Path) -> None:
        """Our format: the adapter tensors only (LoRA, ``conv_in``, modulation), no estimator."""
        save_adapter_safetensors(
            path,
            self.unet,
            self.vae,
            self.modulation,
            metadata=dict(
                base_model=self.base_model,
                rank_unet=str(self.lora_rank_unet),
                rank_vae=str(self.lora_rank_vae),
                **targets_metadata(self.unet_targets, self.vae_targets),
            ),
        )

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, self.text_encoder, self.estimator, self.modulation]

    def adapter_parameters(self) -> list[nn.Parameter]:
        """UNet and VAE-encoder LoRA, UNet ``conv_in``, modulation MLPs and block embeddings."""
        params = [
            p for layer in demod_layers(self.unet) + demod_layers(self.vae) for p in _lora_params(layer)
        ]
        return params + list(self.unet.conv_in.parameters()) + list(self.modulation.parameters())

    lora_parameters = trainable_parameters = adapter_parameters  # what trains

    # ---- device -----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._device

    # ---- the one step -----------------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """(B,) prompts -> CLIP last hidden states (B, 77, D); empty prompts use ``positive_prompt``."""
        prompts = [p if p.strip() else self.positive_prompt for p in prompts]
        return self._encode_text(prompts)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            texts, padding="max_length", max_length=CLIP_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids.to(self._device)  # (B, 77)
        with torch.no_grad():
            return self.text_encoder(ids)[0]

    def degradation(self, low_res: torch.Tensor) -> torch.Tensor:
        """Blur and noise scores (B, 2) of the low-res images (B, 3, h, w) in [0, 1] (frozen)."""
        with torch.no_grad():
            return self.estimator(low_res.to(self._device, self.dtype))

    def encode(
        self, x: torch.Tensor, vae_mods: torch.Tensor, generators: list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> z (B, 4, H/8, W/8), the posterior sampled with ``generators``
        (one per image) or else the backbone's seeded running generator."""
        with modulated(self.vae, vae_mods):
            posterior = self.vae.encode(x.to(self._device, self.dtype)).latent_dist
        return posterior.sample(generator=generators or self.generator) * self.vae.config.scaling_factor

    def predict_noise(
        self,
        z: torch.Tensor,
        unet_mods: torch.Tensor,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The UNet's prediction at t=999; with ``negative_embeds``, guided: neg + g (pos - neg)."""
        if negative_embeds is not None and self.guidance_scale != 1.0:
            z2, mods2 = torch.cat([z, z]), torch.cat([unet_mods, unet_mods])
            pos, neg = self.predict_noise(z2, mods2, torch.cat([prompt_embeds, negative_embeds])).chunk(2)
            return neg + self.guidance_scale * (pos - neg)
        t = torch.full((z.shape[0],), TIMESTEP, device=z.device, dtype=torch.long)
        with modulated(self.unet, unet_mods):
            return self.unet(z, t, encoder_hidden_states=prompt_embeds.to(z.dtype)).sample

    def denoise(self, z: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """The scheduler's step from t=999 to the end (alphas_cumprod_prev = 1): the predicted z0."""
        cfg = self.scheduler.config
        a = torch.tensor(self.alpha_bar, dtype=torch.float32, device=z.device)
        zf, pf = z.float(), prediction.float()
        kind = cfg.get("prediction_type", "epsilon")
        if kind == "epsilon":
            z0 = (zf - (1 - a).sqrt() * pf) / a.sqrt()
        elif kind == "v_prediction":
            z0 = a.sqrt() * zf - (1 - a).sqrt() * pf
        else:
            z0 = pf
        if cfg.get("clip_sample", False):
            bound = float(cfg.get("clip_sample_range", 1.0))
            z0 = z0.clamp(-bound, bound)
        return z0.to(z.dtype)

    def restore(
        self,
        x: torch.Tensor,
        prompts: list[str],
        low_res: torch.Tensor,
        generators: list[torch.Generator] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] + low-res (B, 3, h, w) in [0, 1] -> (image (B, 3, H, W) in [-1, 1],
        restored latent z0). Sides must be multiples of :attr:`pad_multiple` (``upscale`` pads).

        Differentiable in the adapter parameters (training calls this); the estimator and the text
        encoder are not. The output is clamped, as in the authors' forward.
        """
        if len(prompts) != x.shape[0] or low_res.shape[0] != x.shape[0]:
            raise ValueError(
                f"{x.shape[0]} images, {low_res.shape[0]} low-res images, {len(prompts)} prompts"
            )
        vae_mods, unet_mods = self.modulation(self.degradation(low_res))
        z = self.encode(x, vae_mods, generators)
        prompt_embeds = self.encode_prompt(list(prompts))
        negative = None
        if self.guidance_scale != 1.0:
            negative = self._encode_text([self.negative_prompt]).expand(len(prompts), -1, -1)
        z0 = self.denoise(z, self.predict_noise(z, unet_mods, prompt_embeds, negative))
        image = self.vae.decode(z0 / self.vae.config.scaling_factor).sample
        return image.clamp(-1.0, 1.0), z0

    def upscale(
        self, images: torch.Tensor, prompts: list[str], low_res: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """(B, 3, H, W) bicubic view in [0, 1] -> restored (B, 3, H, W) in [0, 1].

        ``low_res`` (B, 3, H/4, W/4) in [0, 1] is what the degradation estimator scores (the chain
        passes the crop the view was upsampled from). Without it the view is downsampled 4x here
        with antialiased bicubic interpolation, an approximation of the true low-res input.
        With ``input_resize="bilinear"`` and ``low_res`` given, the model restores S3Diff's own input
        instead of the view: ``low_res`` upsampled 4x bilinearly (``align_corners=False``), as its
        inference script does and as it was trained; the colour fix then refers to that input too.
        """
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected a float (B, 3, H, W) batch, got {tuple(images.shape)} {images.dtype}")
        seeds = images  # the posterior noise follows the view, whichever input is restored
        if low_res is not None and self.input_resize == "bilinear":
            if low_res.dim() != 4 or low_res.shape[:2] != images.shape[:2]:
                raise ValueError(f"low_res must be (B, 3, h, w) like the images, got {tuple(low_res.shape)}")
            images = F.interpolate(
                low_res.float(), size=images.shape[-2:], mode="bilinear", align_corners=False
            ).to(images.dtype)
        if low_res is None:
            low_res = F.interpolate(
                images.float(), scale_factor=1 / self.scale, mode="bicubic", antialias=True
            ).clamp(0.0, 1.0)
        elif low_res.dim() != 4 or low_res.shape[:2] != images.shape[:2]:
            raise ValueError(f"low_res must be (B, 3, h, w) like the images, got {tuple(low_res.shape)}")
        height, width = images.shape[-2:]
        with torch.no_grad():
            x = (images.to(self._device, torch.float32) * 2 - 1).clamp(-1.0, 1.0)
            m = self.pad_multiple
            pad_h, pad_w = -height % m, -width % m
            if pad_h or pad_w:  # the authors' script: reflect-pad bottom/right to a multiple of 64
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            out, _ = self.restore(x, list(prompts), low_res.float(), self.image_generators(seeds))
            out = (out[..., :height, :width].float() + 1) / 2  # (B, 3, H, W) in [0, 1]
            out = color_fix(self.color_fix, out, images.to(out.device, torch.float32))
        return out.to(device=images.device, dtype=images.dtype)


def _lora_params(layer) -> list[nn.Parameter]:
    return [*layer.lora_A.parameters(), *layer.lora_B.parameters()]


def load_sd_turbo_parts(model: str) -> dict:
    """``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` of SD-Turbo (fp32)."""
    from coz.backbones.diffusion.hub import resolve_model

    where, local = resolve_model(model, "backbone.model")  # fails fast when missing
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    kw = dict(local_files_only=local)
    try:
        return dict(
            unet=UNet2DConditionModel.from_pretrained(
                where, subfolder="unet", torch_dtype=torch.float32, **kw
            ),
            vae=AutoencoderKL.from_pretrained(where, subfolder="vae", torch_dtype=torch.float32, **kw),
            text_encoder=CLIPTextModel.from_pretrained(
                where, subfolder="text_encoder", dtype=torch.float32, **kw
            ),
            tokenizer=AutoTokenizer.from_pretrained(where, subfolder="tokenizer", **kw),
            # the authors build a DDPMScheduler from SD-Turbo's scheduler config
            scheduler=DDPMScheduler.from_pretrained(where, subfolder="scheduler", **kw),
        )
    except (OSError, ValueError) as e:
        raise CozError(
            f"backbone.model={model}: could not load SD-Turbo from it ({str(e).splitlines()[0][:300]}); "
            "give a complete diffusers copy of stabilityai/sd-turbo"
        ) from None


def _weight_files(cfg) -> dict[str, Path]:
    """The checkpoint files a config names, each checked to exist (fast, before any model loads)."""
    from coz.backbones.diffusion.hub import require_file

    name = cfg.name
    files = {}
    if cfg.pretrained_path:
        files["pretrained_path"] = require_file(
            cfg.pretrained_path, "backbone.pretrained_path", "the S3Diff weights, s3diff.pkl"
        )
    if cfg.weights:
        if "pretrained_path" in files:
            raise CozError("backbone.pretrained_path and backbone.weights are both set: give one of them")
        files["weights"] = require_file(
            cfg.weights, "backbone.weights", "an S3Diff .safetensors saved by coz"
        )
    if cfg.de_net_path:
        files["de_net_path"] = require_file(
            cfg.de_net_path, "backbone.de_net_path", "the degradation estimator, de_net.pth"
        )
    if name.startswith("tiny_"):
        return files  # the random twin runs with its fresh adapter and random estimator
    if not ({"pretrained_path", "weights"} & set(files)) or "de_net_path" not in files:
        raise CozError(
            f"backbone={name} needs S3Diff weights: set backbone.pretrained_path=.../s3diff.pkl "
            "(`hf download zhangap/S3Diff s3diff.pkl`) or backbone.weights=<file>.safetensors from "
            "coz.train_sr, and backbone.de_net_path=.../de_net.pth (assets/mm-realsr/de_net.pth "
            "in github.com/ArcticHare105/S3Diff); or `coz-fetch s3diff`, then both =auto"
        )
    return files

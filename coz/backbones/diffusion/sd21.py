"""OSEDiff on Stable Diffusion 2.1-base: the original one-step diffusion SR (docs/fidelity.md,
"Other backbones").

One step, on the bicubic 512 view x in [-1, 1]:

    z   = vae.encode(x).sample(generator) * 0.18215       (B, 4, 64, 64)
    eps = unet(z, t=999, clip(prompt))                     epsilon prediction
    z0  = (z - sqrt(1 - a) * eps) / sqrt(a)                a = alphas_cumprod[999]: DDPMScheduler.step
                                                           from t=999 in one step (its noise term is
                                                           sqrt(1e-20) * randn, left out)
    y   = vae.decode(z0 / 0.18215)                         (B, 3, 512, 512), clamped to [-1, 1]

then a colour fix towards x (default AdaIN, the authors' default). The prompt embedding is the
CLIP text encoder's last hidden state over 77 tokens (OpenCLIP-H, as SD2.1 ships it), no
attention mask, no negative prompt. LoRA: three PEFT adapters on the UNet, one on the VAE encoder
and ``quant_conv``, ``conv_in`` trained in full (:mod:`coz.backbones.diffusion.osediff_pkl`).

Weights: the authors' ``osediff.pkl``, or our LoRA-only ``.safetensors`` (``unet.*`` / ``vae.*``:
the same entries as the release's two state dicts, ``conv_in`` included).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from coz.backbones.diffusion.lora_formats import read_lora_file, write_lora_file
from coz.backbones.diffusion.one_step import OneStepDiffusion
from coz.backbones.diffusion.osediff_pkl import (
    OSEDiffRelease,
    inject_osediff_lora,
    load_osediff_release,
    read_osediff_pkl,
    save_osediff_pkl,
    unet_release_state,
    vae_release_state,
)
from coz.backbones.seeded import seeded
from coz.errors import CozError
from coz.prompts.base import with_user_prompt
from coz.run.dtypes import cast_keeping_fp32, resolve_dtype

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-base"
TIMESTEP = 999  # the one DDPM step, from the noise end
CLIP_TOKENS = 77  # SD2.1's tokenizer.model_max_length
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
PROMPT_FORMATS = ("osediff", "coz")


class OSEDiffSD21(OneStepDiffusion):
    """OSEDiff (SD2.1-base) behind the :class:`Backbone` interface (restores the bicubic 512 view).

    Built from components (see :meth:`from_pretrained`, :meth:`tiny`, :meth:`from_config`). With
    ``trainable=True`` exactly the LoRA parameters and the UNet's ``conv_in`` require grad;
    otherwise nothing does.
    """

    scale = 4
    takes_upsampled_input = True

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        scheduler,
        *,
        dtype: str | torch.dtype = "float32",
        text_dtype: str | torch.dtype | None = None,
        color_fix: str = "adain",
        prompt_format: str = "osediff",
        seed: int = 42,
        lora_rank: int = 4,
        vae_lora_rank: int = 4,
        trainable: bool = False,
        name: str = "osediff-sd21",
        base_model: str = DEFAULT_MODEL,
    ) -> None:
        self._begin(name, base_model, color_fix)
        if prompt_format not in PROMPT_FORMATS:
            raise CozError(f"prompt_format={prompt_format!r}: use one of {', '.join(PROMPT_FORMATS)}")
        self.prompt_format = prompt_format
        prediction = str(scheduler.config.prediction_type)
        if prediction not in PREDICTION_TYPES:
            raise CozError(f"{base_model}: scheduler prediction_type={prediction!r} is not supported")
        self.prediction_type = prediction
        self.lora_rank, self.vae_lora_rank = int(lora_rank), int(vae_lora_rank)
        self.dtype = resolve_dtype(dtype)
        self.text_dtype = self.dtype if text_dtype in (None, "", "null") else resolve_dtype(text_dtype)
        alpha = float(scheduler.alphas_cumprod[TIMESTEP])
        self.sqrt_alpha, self.sqrt_one_minus_alpha = math.sqrt(alpha), math.sqrt(1.0 - alpha)
        with seeded(seed):  # LoRA init is seeded and leaves the caller's RNG alone
            self.unet_targets, self.vae_targets = inject_osediff_lora(
                unet, vae, self.lora_rank, self.vae_lora_rank
            )
        self.unet, self.vae, self.scheduler = unet, vae, scheduler
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        nn.Module.to(self.unet, dtype=self.dtype)  # nn.Module's own: diffusers' to() warns on casts
        nn.Module.to(self.vae, dtype=self.dtype)
        cast_keeping_fp32(self.text_encoder, self.text_dtype).eval()
        self._finish(seed, trainable)

    def format_prompt(self, extracted: str, user_prompt: str) -> str:
        """``prompt_format=osediff``: OSEDiff's test script always writes "{tags}, {user}," (so
        "tags, ," without a user prompt); an empty extracted prompt keeps the coz rule (no text)."""
        if self.prompt_format == "osediff" and extracted:
            return f"{extracted}, {user_prompt},"
        return with_user_prompt(extracted, user_prompt)

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def tiny(cls, model_seed: int = 0, **options) -> OSEDiffSD21:
        """The offline random-weight twin (:mod:`coz.backbones.tiny.sd21`; ``model_seed`` seeds its
        base weights, ``seed`` the LoRA init and VAE noise)."""
        from coz.backbones.tiny.sd21 import tiny_sd21_components

        parts = tiny_sd21_components(model_seed)
        options.setdefault("name", "tiny-osediff-sd21")
        return cls(**parts, base_model="tiny_sd21", **options)

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, **options) -> OSEDiffSD21:
        """SD2.1-base from a hub id (the user's cache; downloads when online) or a local folder."""
        text_dtype = options.get("text_dtype") or options.get("dtype", "float32")
        parts = load_sd21_parts(model, text_dtype=resolve_dtype(text_dtype))
        return cls(**parts, base_model=model, **options)

    @classmethod
    def from_config(cls, cfg, device: torch.device | str = "cpu", trainable: bool = False) -> OSEDiffSD21:
        """Build from a ``backbone=sd21`` / ``tiny_sd21`` config node (see conf/shared/backbone/sd21.yaml);
        ``trainable``: as coz.train_sr trains it (LoRA and ``conv_in`` requiring grad, no colour
        fix, and without weights a fresh LoRA on the base model)."""
        weights = _weight_files(cfg, fresh=trainable)  # checked before the (large) base model loads
        release = read_osediff_pkl(weights["osediff_pkl"]) if "osediff_pkl" in weights else None
        options = dict(
            dtype=resolve_dtype(cfg.dtype, device, gpu_default=torch.float16),
            text_dtype=cfg.text_dtype,
            color_fix="none" if trainable else cfg.color_fix,
            prompt_format=cfg.prompt_format,
            seed=cfg.seed,
            # a release brings its own ranks (the model must be built with them)
            lora_rank=release.rank_unet if release else cfg.lora_rank,
            vae_lora_rank=release.rank_vae if release else cfg.vae_lora_rank,
            trainable=trainable,
        )
        backbone = cls._tiny_or_pretrained(cfg, **options)
        if release is not None:
            backbone.load_released(release)
        elif "weights" in weights:
            backbone.load_lora(weights["weights"])
        if trainable:
            backbone.set_trainable(True)  # after loading: the loaded LoRA trains too
        return backbone.to(device)

    # ---- weights --------------------------------------------------------------------------
    def load_released(self, release: str | Path | OSEDiffRelease) -> None:
        """The authors' ``osediff.pkl`` (a path, or what :func:`read_osediff_pkl` read from one)."""
        if not isinstance(release, OSEDiffRelease):
            release = read_osediff_pkl(release)
        if (release.rank_unet, release.rank_vae) != (self.lora_rank, self.vae_lora_rank):
            raise CozError(
                f"OSEDiff checkpoint {release.path}: ranks unet {release.rank_unet} / vae "
                f"{release.rank_vae}, but this backbone was built with {self.lora_rank} / "
                f"{self.vae_lora_rank} (set backbone.lora_rank / backbone.vae_lora_rank)"
            )
        load_osediff_release(release, self.unet, self.vae, self.unet_targets, self.vae_targets)

    def save_released(self, path: str | Path) -> None:
        """Write the authors' ``osediff.pkl`` format (loads in their ``test_osediff.py`` too)."""
        save_osediff_pkl(
            path, self.unet, self.vae, self.unet_targets, self.vae_targets, self.lora_rank, self.vae_lora_rank
        )

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """Our format's tensors: the release's two state dicts under ``unet.`` / ``vae.``."""
        return {
            **{f"unet.{k}": v for k, v in unet_release_state(self.unet).items()},
            **{f"vae.{k}": v for k, v in vae_release_state(self.vae).items()},
        }

    def load_lora(self, path: str | Path) -> dict[str, str]:
        """Our LoRA-only safetensors (what :meth:`save_lora` and ``coz.train_sr`` write)."""
        tensors, metadata = read_lora_file(path, "sd21", self.lora_state_dict())
        with torch.no_grad():
            for prefix, model in (("unet.", self.unet), ("vae.", self.vae)):
                params = dict(model.named_parameters())
                for key, value in tensors.items():
                    if key.startswith(prefix):
                        params[key.removeprefix(prefix)].copy_(value)
        return metadata

    def save_lora(self, path: str | Path) -> None:
        write_lora_file(
            path,
            self.lora_state_dict(),
            metadata=dict(
                backbone="sd21",
                base_model=self.base_model,
                rank=str(self.lora_rank),
                vae_rank=str(self.vae_lora_rank),
            ),
        )

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, self.text_encoder]

    def lora_parameters(self) -> list[nn.Parameter]:
        named = [*self.unet.named_parameters(), *self.vae.named_parameters()]
        return [p for n, p in named if "lora_" in n]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates: the LoRA parameters, then conv_in's (weight and bias)."""
        conv_in = [
            p for n, p in self.unet.named_parameters() if n.startswith("conv_in.") and "lora_" not in n
        ]
        return [*self.lora_parameters(), *conv_in]

    # the same posterior-noise rules as OSEDiff-SD3: a running generator for training, one
    # generator per image, seeded from (seed, pixels), for inference

    # ---- device -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    # ---- the one step -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """(B,) prompts -> the CLIP text encoder's last hidden state (B, 77, D) in the UNet dtype."""
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=CLIP_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids  # (B, 77)
        hidden = self.text_encoder(ids.to(self._device))[0]  # (B, 77, D)
        return hidden.to(self._device, self.dtype)

    def encode(self, x: torch.Tensor, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> z (B, 4, H/8, W/8), the posterior sampled with ``generators``
        (one per image) or else the backbone's seeded running generator, times the scaling factor."""
        posterior = self.vae.encode(x.to(self._device, self.dtype)).latent_dist
        return posterior.sample(generator=generators or self.generator) * self.vae.config.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, 4, h, w) -> (B, 3, 8h, 8w), about [-1, 1]."""
        return self.vae.decode(z.to(self.dtype) / self.vae.config.scaling_factor).sample

    def predict(self, z: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """The UNet's output at t=999 (epsilon for SD2.1-base)."""
        t = torch.full((z.shape[0],), TIMESTEP, device=z.device, dtype=torch.long)
        return self.unet(z, t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]

    def denoise(self, z: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """One DDPM step from t=999 to x0 (DDPMScheduler.step's pred_original_sample), in float32."""
        z, prediction = z.float(), prediction.float()
        if self.prediction_type == "epsilon":
            return (z - self.sqrt_one_minus_alpha * prediction) / self.sqrt_alpha
        if self.prediction_type == "v_prediction":
            return self.sqrt_alpha * z - self.sqrt_one_minus_alpha * prediction
        return prediction

    def restore(
        self, x: torch.Tensor, prompts: list[str], generators: list[torch.Generator] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> (image (B, 3, H, W) about [-1, 1], restored latent z0).

        Differentiable in the LoRA parameters and conv_in (training calls this); the text encoder is not.
        """
        if len(prompts) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {len(prompts)} prompts")
        prompt_embeds = self.encode_prompt(prompts)
        z = self.encode(x, generators)
        z0 = self.denoise(z, self.predict(z, prompt_embeds))
        return self.decode(z0), z0


def load_sd21_parts(model: str, text_dtype: torch.dtype = torch.float32) -> dict:
    """``unet``, ``vae`` (fp32; the backbone casts them), ``text_encoder`` (``text_dtype``),
    ``tokenizer``, ``scheduler`` of SD2.1-base from a hub id or a diffusers folder."""
    from coz.backbones.diffusion.hub import resolve_model

    where, local = resolve_model(model, "backbone.model")  # fails fast when missing
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    kw = dict(local_files_only=local)
    try:
        unet = UNet2DConditionModel.from_pretrained(where, subfolder="unet", torch_dtype=torch.float32, **kw)
        vae = AutoencoderKL.from_pretrained(where, subfolder="vae", torch_dtype=torch.float32, **kw)
        text_encoder = CLIPTextModel.from_pretrained(where, subfolder="text_encoder", dtype=text_dtype, **kw)
        tokenizer = AutoTokenizer.from_pretrained(where, subfolder="tokenizer", **kw)
        scheduler = DDPMScheduler.from_pretrained(where, subfolder="scheduler", **kw)
    except (OSError, ValueError) as e:
        raise CozError(
            f"backbone.model={model}: could not load SD2.1 from it ({str(e).splitlines()[0][:300]}); "
            "give a complete diffusers copy of stable-diffusion-2-1-base"
        ) from None
    if (
        unet.config.in_channels != vae.config.latent_channels
        or unet.config.cross_attention_dim != text_encoder.config.hidden_size
    ):
        raise CozError(
            f"backbone.model={model}: not an SD2.1-style model (UNet in_channels "
            f"{unet.config.in_channels}, VAE latents {vae.config.latent_channels}, cross-attention "
            f"{unet.config.cross_attention_dim}, text width {text_encoder.config.hidden_size})"
        )
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def _weight_files(cfg, fresh: bool = False) -> dict[str, Path]:
    """The checkpoint files a config names, each checked to exist (fast, before any model loads);
    ``fresh``: none is fine (training starts a fresh LoRA on the base model)."""
    from coz.backbones.diffusion.hub import require_file

    name = cfg.name
    if cfg.weights:
        return {"weights": require_file(cfg.weights, "backbone.weights", "a LoRA .safetensors saved by coz")}
    if cfg.osediff_pkl:
        return {"osediff_pkl": require_file(cfg.osediff_pkl, "backbone.osediff_pkl", "OSEDiff's osediff.pkl")}
    if name.startswith("tiny_") or fresh:
        return {}  # the random twin runs with its fresh LoRA (B = 0)
    raise CozError(
        f"backbone={name} needs OSEDiff weights: set backbone.osediff_pkl=.../osediff.pkl (the OSEDiff "
        "release, preset/models/osediff.pkl in its README; or `coz-fetch osediff-sd21`, then "
        "backbone.osediff_pkl=auto), or backbone.weights=<file>.safetensors from coz.train_sr"
    )

"""The trainable backbones behind one small interface: what the training loop optimises.

A :class:`Generator` restores a degraded batch, names its optimiser groups, exposes the modules
Lightning must own (so DDP syncs their gradients) and writes its weights in the formats
``coz.zoom`` loads. Three of them:

- ``sd3`` / ``tiny_sd3``: OSEDiff-SD3 (:class:`coz.backbones.diffusion.sd3.OSEDiffSD3`): the transformer's
  adaLN LoRA and the VAE-encoder LoRA, two optimisers (the authors' SD3 port); regulariser: the
  flow-matching family.
- ``sd21`` / ``tiny_sd21``: OSEDiff-SD2.1 (:class:`coz.backbones.diffusion.sd21.OSEDiffSD21`): the UNet's
  three LoRA adapters plus the fully trained ``conv_in``, and the VAE LoRA, in ONE optimiser (as
  OSEDiff); regulariser: DDPM epsilon with CFG 7.5 and a negative prompt in the real branch, the
  fake LoRA on the layers of OSEDiff's one active fake adapter (OSEDiff's defaults).
- ``realesrgan`` / ``tiny_realesrgan``: RRDBNet (spandrel's ESRGAN) trained in full (the CPU recipe);
  no regulariser. Checkpoints and exports name its weights as BasicSR does, as ``backbone=realesrgan`` loads them.
- ``span`` / ``tiny_span``: SPAN (spandrel's, training-time branches of every re-parameterisable
  conv) trained in full, the same recipe; exported with its input normalisation for ``backbone=span``.

Images are in [-1, 1] on both sides, as OSEDiff computes its losses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from coz.backbones.seeded import seeded
from coz.errors import CozError
from coz.run.weights import mismatch, shapes

DIFFUSION = ("sd3", "tiny_sd3", "sd21", "tiny_sd21")
CNN = ("realesrgan", "tiny_realesrgan", "span", "tiny_span")
GENERATORS = (*DIFFUSION, *CNN)


class Generator:
    name: str
    takes_upsampled_input: bool = True
    backbone: Any = None

    def modules(self) -> dict[str, nn.Module]:
        """The nn.Modules holding trainable weights (registered in the LightningModule)."""
        raise NotImplementedError

    def optimiser_groups(self) -> dict[str, list[nn.Parameter]]:
        """One AdamW per entry, in this order."""
        raise NotImplementedError

    def _named_trainable(self) -> dict[str, nn.Parameter]:
        """Every trained parameter by a stable name."""
        raise NotImplementedError

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trained tensor by its stable name (what checkpoints hold)."""
        return {k: p.detach() for k, p in self._named_trainable().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = self._named_trainable()
        if problem := mismatch(shapes(params), state):  # e.g. a resume with another backbone.lora_rank
            raise CozError(
                f"checkpoint does not match backbone={self.name}: {problem} (written with another "
                "backbone or backbone.lora_rank / vae_lora_rank?)"
            )
        with torch.no_grad():
            for key, value in state.items():
                params[key].copy_(value.to(params[key].device, params[key].dtype))

    def _named_trainable(self) -> dict[str, nn.Parameter]:
        raise NotImplementedError

    def restore(self, x: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """x (B, 3, H, W) in [0, 1] -> (output in about [-1, 1], clean latent z0 or None, text cond)."""
        raise NotImplementedError

    def regulariser(self, cfg: DictConfig):
        return None

    def to(self, device: torch.device) -> Generator:
        self.backbone.to(device)
        return self

    def reseed(self, seed: int) -> None:
        if hasattr(self.backbone, "reseed"):
            self.backbone.reseed(seed)

    def set_gradient_checkpointing(self, on: bool) -> None:
        pass

    def export(self, folder: Path) -> dict[str, Path]:
        """Write the final weights in every format coz.zoom loads; returns {format: file}."""
        raise NotImplementedError


class SD3Generator(Generator):
    def __init__(self, backbone) -> None:
        from coz.backbones.diffusion.lora_formats import LoRALinear

        self.backbone, self.name = backbone, backbone.name
        # the released training script's add_mp_hook: the adaLN LoRA's rank-4 activation in fp16
        # (with the layer's fp16 output, i.e. backbone.adaln_fp16 in an fp32 transformer)
        for module in backbone.transformer.modules():
            if isinstance(module, LoRALinear):
                module.fp16_rank = module.fp16_output

    def modules(self):
        return {"transformer": self.backbone.transformer, "vae": self.backbone.vae}

    def _named_trainable(self):
        named = {
            f"transformer.{n}": p for n, p in self.backbone.transformer.named_parameters() if "lora_" in n
        }
        named.update({f"vae.{n}": p for n, p in self.backbone.vae.named_parameters() if "lora_" in n})
        return named

    def optimiser_groups(self):
        named = self._named_trainable()
        return {
            "transformer_lora": [p for k, p in named.items() if k.startswith("transformer.")],
            "vae_lora": [p for k, p in named.items() if k.startswith("vae.")],
        }

    def restore(self, x, prompts):
        b = self.backbone
        prompt_embeds, pooled = b.encode_prompt(prompts)
        z = b.encode(x * 2 - 1)  # the running generator: reseeded per step by the training loop
        z0 = z - b.predict_velocity(z, prompt_embeds, pooled)
        cond = {"prompt_embeds": prompt_embeds, "pooled": pooled, "dtype": b.dtype}
        return b.decode(z0), z0, cond

    def regulariser(self, cfg):
        from coz.backbones.diffusion.lora_formats import LoRALinear
        from coz.train_sr.regulariser import FlowScore, Regulariser, sd3_dead_layers

        transformer = self.backbone.transformer
        # the released SD3 port: rank-4 LoRA on the 47 AdaLayerNormZero linears (where the generator's is)
        adaln = tuple(n for n, m in transformer.named_modules() if isinstance(m, LoRALinear))
        return Regulariser(
            FlowScore(transformer, cfg.shift, sigma_fp16=cfg.sigma_fp16),
            tuple(cfg.targets or adaln),
            rank=cfg.rank,
            alpha=cfg.alpha,
            cfg_scale=cfg.cfg_scale or 1.0,
            dmd_t_range=tuple(cfg.dmd_t_range or (0, 1000)),
            diffusion_t_range=tuple(cfg.diffusion_t_range or (0, 1000)),
            exclude=sd3_dead_layers(transformer),
            timesteps=cfg.timesteps or "batch",
            loss_space=cfg.loss_space or "x0",
        )

    def set_gradient_checkpointing(self, on):
        for module in (self.backbone.transformer, self.backbone.vae):
            if on:
                module.enable_gradient_checkpointing()
            else:
                module.disable_gradient_checkpointing()

    def export(self, folder):
        from coz.backbones.diffusion.lora_formats import save_released_transformer_lora

        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "coz_lora": folder / "lora.safetensors",
            "transformer_lora": folder / "model.pkl",
            "vae_encoder": folder / "vae_encoder.pt",
        }
        self.backbone.save_lora(files["coz_lora"])
        save_released_transformer_lora(self.backbone.transformer, files["transformer_lora"])
        # the authors' vae_encoder_*.pt: the whole encoder state dict (LoRA keys included) in fp16
        state = {k: v.detach().cpu().half() for k, v in self.backbone.vae.encoder.state_dict().items()}
        torch.save(state, files["vae_encoder"])
        return files


class SD21Generator(Generator):
    def __init__(self, backbone, negative_prompt: str = "") -> None:
        self.backbone, self.name = backbone, backbone.name
        self.negative_prompt = negative_prompt
        conv = getattr(backbone.unet.conv_in, "base_layer", backbone.unet.conv_in)
        # the pretrained conv_in, for the real and fake score models (the generator trains its own)
        self.frozen_conv_in = {"weight": conv.weight.detach().clone(), "bias": conv.bias.detach().clone()}

    def modules(self):
        return {"unet": self.backbone.unet, "vae": self.backbone.vae}

    def _named_trainable(self):
        b = self.backbone
        unet = {n: p for n, p in b.unet.named_parameters() if "lora_" in n or n.startswith("conv_in.")}
        named = {f"unet.{n}": p for n, p in unet.items()}
        named.update({f"vae.{n}": p for n, p in b.vae.named_parameters() if "lora_" in n})
        return named

    def optimiser_groups(self):
        # OSEDiff: ONE AdamW over the UNet LoRA, conv_in and the VAE LoRA, so one joint gradient clip
        return {"generator": list(self._named_trainable().values())}

    def restore(self, x, prompts):
        b = self.backbone
        embeds = b.encode_prompt(prompts)
        z = b.encode(x * 2 - 1)
        z0 = b.denoise(z, b.predict(z, embeds)).to(b.dtype)
        cond = {"prompt_embeds": embeds, "dtype": b.dtype}
        if self.negative_prompt is not None:
            cond["negative_embeds"] = b.encode_prompt([self.negative_prompt] * len(prompts))
        return b.decode(z0), z0, cond

    def regulariser(self, cfg):
        from coz.train_sr.regulariser import EpsilonScore, Regulariser

        conv_in = {k: v.to(self.backbone.device) for k, v in self.frozen_conv_in.items()}
        family = EpsilonScore(self.backbone.unet, self.backbone.scheduler.alphas_cumprod, conv_in)
        return Regulariser(
            family,
            tuple(cfg.targets or self.fake_targets(cfg.fake_adapters)),
            rank=cfg.rank,
            alpha=cfg.alpha,
            cfg_scale=cfg.cfg_scale or 7.5,
            dmd_t_range=tuple(cfg.dmd_t_range or (20, 980)),
            diffusion_t_range=tuple(cfg.diffusion_t_range or (0, 1000)),
            timesteps=cfg.timesteps or "sample",
            loss_space=cfg.loss_space or "target",
        )

    def fake_targets(self, adapters: str) -> list[str]:
        """The fake UNet's LoRA layers. OSEDiff gives its fake UNet the generator's three adapter lists
        with ``unet.add_adapter`` and never calls ``set_adapter``: diffusers activates only the adapter
        added last, so only ``default_others`` (the mid block and the rest outside the down/up blocks)
        computes and trains (``others``, the default). ``all``: the three lists, as its generator."""
        lists = self.backbone.unet_targets
        if adapters == "others":
            return list(lists["default_others"])
        if adapters == "all":
            return [n for names in lists.values() for n in names]
        raise CozError(f"regulariser.fake_adapters={adapters!r}: use others (as released) or all")

    def to(self, device):
        self.backbone.to(device)
        self.frozen_conv_in = {k: v.to(device) for k, v in self.frozen_conv_in.items()}
        return self

    def set_gradient_checkpointing(self, on):
        for module in (self.backbone.unet, self.backbone.vae):
            if on:
                module.enable_gradient_checkpointing()
            else:
                module.disable_gradient_checkpointing()

    def export(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        files = {"coz_lora": folder / "lora.safetensors", "osediff_pkl": folder / "osediff.pkl"}
        self.backbone.save_lora(files["coz_lora"])
        self.backbone.save_released(files["osediff_pkl"])
        return files


class CNNGenerator(Generator):
    """A CNN (RRDBNet, SPAN) trained in full on the LR batch itself (no resize back).

    ``export_file`` / ``metadata``: the exported safetensors' name and metadata (SPAN's input
    normalisation, which its state dict does not hold). ``file_name``: a parameter's name in
    checkpoints and the export, from its name in ``net`` (RRDBNet: BasicSR's, not spandrel's)."""

    takes_upsampled_input = False

    def __init__(
        self,
        net: nn.Module,
        name: str,
        export_file: str = "realesrgan.safetensors",
        metadata: dict[str, str] | None = None,
        file_name: Callable[[str], str] = str,
    ) -> None:
        self.net, self.name = net.train().requires_grad_(True), name
        self.export_file, self.metadata = export_file, dict(metadata or {})
        self.file_name = file_name
        self._device = torch.device("cpu")

    def modules(self):
        return {"net": self.net}

    def _named_trainable(self):
        return {self.file_name(k): p for k, p in self.net.named_parameters()}

    def optimiser_groups(self):
        return {"net": list(self.net.parameters())}

    def restore(self, x, prompts):
        # Every weight trains, so the net runs in train mode even though the LightningModule puts
        # its models in eval mode (for the diffusion recipes' frozen bases): SPAN's eval forward
        # fuses its convs from detached copies, and would not train at all.
        self.net.train()
        return self.net(x) * 2 - 1, None, {}

    def to(self, device):
        self.net.to(device)
        return self

    def export(self, folder):
        from safetensors.torch import save_file

        from coz.run.atomic import write_atomic

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.export_file
        state = {
            self.file_name(k): v.detach().cpu().float().contiguous() for k, v in self.net.state_dict().items()
        }
        metadata = {"source": f"coz.train_sr ({self.name})", **self.metadata}
        write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))  # and mode 0644
        return {"weights": path}


def build_generator(cfg: DictConfig, train: DictConfig) -> Generator:
    """The trainable backbone for ``backbone=<name>`` (conf/shared/backbone/<name>.yaml, or conf/train_sr/train_sr.yaml's
    ``tiny_realesrgan``), initialised from the weights the config names (none: a fresh LoRA)."""
    name = cfg.name
    if name in ("sd3", "tiny_sd3"):
        from coz.backbones.diffusion.sd3 import OSEDiffSD3

        opts = dict(
            dtype=cfg.dtype,
            latent_shift=train.latent_shift or cfg.latent_shift,
            color_fix="none",
            seed=cfg.seed,
            lora_rank=cfg.lora_rank,
            drop_t5=cfg.drop_t5,
            offload_text_encoders=cfg.offload_text_encoders,
            text_dtype=cfg.text_dtype,
            trainable=True,
        )
        if name == "tiny_sd3":
            backbone = OSEDiffSD3.tiny(model_seed=cfg.model_seed, **opts)
        else:
            backbone = OSEDiffSD3.from_pretrained(cfg.model, **opts)
        _init_sd3(backbone, cfg)
        backbone.set_trainable(True)
        gen = SD3Generator(backbone)
        gen.name = name
        return gen
    if name in ("sd21", "tiny_sd21"):
        from coz.backbones.diffusion.sd21 import OSEDiffSD21

        opts = dict(
            dtype=cfg.dtype if cfg.dtype != "auto" else "float32",
            color_fix="none",
            seed=cfg.seed,
            lora_rank=cfg.lora_rank,
            vae_lora_rank=cfg.vae_lora_rank,
            trainable=True,
        )
        if name == "tiny_sd21":
            backbone = OSEDiffSD21.tiny(model_seed=cfg.model_seed, **opts)
        else:
            backbone = OSEDiffSD21.from_pretrained(cfg.model, **opts)
        if cfg.osediff_pkl:
            backbone.load_released(_file(cfg.osediff_pkl, "backbone.osediff_pkl"))
        elif cfg.weights:
            backbone.load_lora(_file(cfg.weights, "backbone.weights"))
        backbone.set_trainable(True)
        gen = SD21Generator(backbone, negative_prompt=train.negative_prompt)
        gen.name = name
        return gen
    if name in ("span", "tiny_span"):
        return _span_generator(cfg, name)
    if name in CNN:
        from coz.backbones.cnn.rrdbnet import GROWTH, basicsr_name, rrdbnet

        if name == "tiny_realesrgan":
            if int(cfg.get("num_grow_ch", GROWTH)) != GROWTH:
                raise CozError(
                    f"backbone.num_grow_ch={cfg.num_grow_ch}: spandrel's RRDBNet grows by {GROWTH}"
                )
            with seeded(cfg.get("model_seed", 0)):
                net = rrdbnet(num_feat=int(cfg.num_feat), num_block=int(cfg.num_block))
        else:
            from coz.backbones.cnn.realesrgan import ensure_cached_weights, load_weights
            from coz.run.weights import read_weights

            weights = cfg.weights
            path = ensure_cached_weights() if weights == "auto" else _file(weights, "backbone.weights")
            # another network's weights (wrong keys or shapes) fail here in one line, as in coz.zoom
            net = read_weights("backbone.weights", path, lambda: rrdbnet(load_weights(path)))
        return CNNGenerator(net, name, file_name=basicsr_name)
    raise CozError(f"backbone={name}: coz.train_sr trains {', '.join(GENERATORS)}")


def _span_generator(cfg: DictConfig, name: str) -> CNNGenerator:
    """SPAN from the config's model or weights (``tiny_span``: random, ``num_feat`` channels)."""
    from coz.backbones.cnn.span import build_span, ensure_cached_weights, load_weights
    from coz.backbones.cnn.span_weights import SPANDREL_MEAN, norm_to_metadata

    if name == "tiny_span":
        from spandrel.architectures.SPAN import SPAN

        with seeded(cfg.get("model_seed", 0)):
            net = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=int(cfg.get("num_feat", 8)))
        norm = {"rgb_mean": SPANDREL_MEAN, "img_range": 255.0}
    else:
        weights, model = cfg.weights, cfg.model
        path = ensure_cached_weights(model) if weights == "auto" else _file(weights, "backbone.weights")
        state, norm = load_weights(path)
        net = build_span(state, norm)
    return CNNGenerator(net, name, export_file="span.safetensors", metadata=norm_to_metadata(norm))


def _init_sd3(backbone, cfg) -> None:
    """Start from the config's weights where it names some (fine-tuning a release), else fresh LoRA."""
    if cfg.weights:
        backbone.load_lora(_file(cfg.weights, "backbone.weights"))
    elif cfg.transformer_lora or cfg.vae_encoder:
        if not (cfg.transformer_lora and cfg.vae_encoder):
            raise CozError("give both backbone.transformer_lora and backbone.vae_encoder (or neither)")
        backbone.load_released(
            _file(cfg.transformer_lora, "backbone.transformer_lora"),
            _file(cfg.vae_encoder, "backbone.vae_encoder"),
        )


def _file(path, option: str) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise CozError(f"{option}={path}: no such file")
    return p

"""The trainable backbones behind one small interface: what the training loop optimises.

A :class:`Generator` restores a degraded batch, names its optimiser groups, exposes the modules
Lightning must own (so DDP syncs their gradients) and writes its weights in the formats
``coz.zoom`` loads. The backbone inside is built as ``coz.zoom`` builds it
(:func:`coz.backbones.build_backbone` with ``trainable=True``); a generator adds only what training
needs. Four of them:

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
from omegaconf import DictConfig, open_dict
from torch import nn

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

    # one AdamW per entry, in this order: its name and the prefixes of the trained names it owns
    optimisers: dict[str, tuple[str, ...]] = {}

    def trains(self, module: str, parameter: str) -> bool:
        """Whether ``parameter`` of ``modules()[module]`` trains."""
        raise NotImplementedError

    def _named_trainable(self) -> dict[str, nn.Parameter]:
        """Every trained parameter by a stable name, ``<module>.<parameter>``."""
        return {
            f"{m}.{n}": p
            for m, module in self.modules().items()
            for n, p in module.named_parameters()
            if self.trains(m, n)
        }

    def optimiser_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters of each optimiser (:attr:`optimisers`), in the order of :meth:`_named_trainable`."""
        named = self._named_trainable()
        return {
            group: [p for k, p in named.items() if k.startswith(prefixes)]
            for group, prefixes in self.optimisers.items()
        }

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
        """Recompute the networks' activations in the backward (the diffusers networks can)."""
        for module in self.modules().values():
            if on:
                module.enable_gradient_checkpointing()
            else:
                module.disable_gradient_checkpointing()

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

    # the authors' SD3 port: one AdamW for the transformer's adaLN LoRA, one for the VAE encoder's
    optimisers = {"transformer_lora": ("transformer.",), "vae_lora": ("vae.",)}

    def modules(self):
        return {"transformer": self.backbone.transformer, "vae": self.backbone.vae}

    def trains(self, module, parameter):
        return "lora_" in parameter

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

    # OSEDiff: ONE AdamW over the UNet LoRA, conv_in and the VAE LoRA, so one joint gradient clip
    optimisers = {"generator": ("",)}

    def modules(self):
        return {"unet": self.backbone.unet, "vae": self.backbone.vae}

    def trains(self, module, parameter):
        return "lora_" in parameter or (module == "unet" and parameter.startswith("conv_in."))

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

    optimisers = {"net": ("",)}

    def modules(self):
        return {"net": self.net}

    def _named_trainable(self):  # every weight, by its name in files (not prefixed with "net.")
        return {self.file_name(k): p for k, p in self.net.named_parameters()}

    def set_gradient_checkpointing(self, on):
        pass  # small CNNs: nothing worth recomputing

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
    """The trainable backbone for ``backbone=<name>`` (conf/shared/backbone/<name>.yaml, or a
    ``tiny_realesrgan`` / ``tiny_span`` node), built by :func:`coz.backbones.build_backbone` as
    ``coz.zoom`` builds it, with ``trainable=True``, on the CPU; initialised from the weights the
    config names (none: a fresh LoRA). ``train``: the ``model`` section (SD3's training latent
    shift, SD2.1's negative prompt)."""
    from coz.backbones import build_backbone
    from coz.backbones.cnn.rrdbnet import basicsr_name
    from coz.backbones.cnn.span_weights import norm_to_metadata

    name = cfg.name
    if name not in GENERATORS:
        raise CozError(f"backbone={name}: coz.train_sr trains {', '.join(GENERATORS)}")
    if "latent_shift" in cfg and train.get("latent_shift"):  # SD3 trains with its own shift
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.latent_shift = train.latent_shift
    backbone = build_backbone(cfg, "cpu", trainable=True)
    if name in ("sd3", "tiny_sd3"):
        gen: Generator = SD3Generator(backbone)
    elif name in ("sd21", "tiny_sd21"):
        gen = SD21Generator(backbone, negative_prompt=train.negative_prompt)
    elif name in ("span", "tiny_span"):  # its input normalisation goes with the export
        metadata = norm_to_metadata(backbone.norm)
        gen = CNNGenerator(backbone.model, name, export_file="span.safetensors", metadata=metadata)
    else:  # RRDBNet: files name its weights as BasicSR does
        gen = CNNGenerator(backbone.model, name, file_name=basicsr_name)
    gen.name = name
    return gen

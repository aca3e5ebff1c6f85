"""S3Diff's degradation-guided LoRA and the checkpoint formats that hold it (docs/fidelity.md,
"Other backbones").

A degradation-guided LoRA layer computes, for an input x of sample b,

    y = base(x) + B( A(x) . M_b ) * alpha / r

where A (in -> r) and B (r -> out) are an ordinary LoRA pair and ``M_b`` is an r x r matrix built
per sample from that sample's degradation scores (for a conv: ``A(x)`` is (B, r, h, w) and the product
mixes its r channels at every pixel; for a linear: ``A(x)`` is (B, L, r)). The matrices come from
:class:`DegradationModulation`:

    scores (B, 2) in (0, 1)                         blur, noise (coz.backbones.diffusion.degradation_estimator)
    f = [sin(2 pi s W), cos(2 pi s W)] per score    W: 64 fixed random frequencies -> (B, 256)
    d = ReLU(Linear(256, 256)(f))                   one "de" MLP for the UNet, one for the VAE
    e = ReLU(Linear(64, 64)(block_embedding))       10 UNet blocks, 6 VAE-encoder blocks -> (n, 64)
    M = Linear(320, r*r)([d, e]) -> (B, n, r, r)    one matrix per sample and block

Blocks: UNet ``down_blocks.i`` -> i, ``mid_block`` -> 4, ``up_blocks.i`` -> 5 + i, the rest
(``conv_out``) -> the last; VAE ``encoder.down_blocks.i`` -> i, ``encoder.mid_block`` -> the
second to last, the rest (``encoder.conv_in``/``conv_out``) -> the last.

LoRA placement is the authors' PEFT configuration (default alpha 8, so scale 8/r; gaussian init:
A ~ N(0, 1/r), B = 0): on the UNet every Linear/Conv2d whose name is or ends with one of
:data:`UNET_LORA_TARGETS` (adapter ``default``, rank 32), on the VAE every module whose full name
matches the regex :data:`VAE_LORA_TARGETS` (encoder only; adapter ``vae_skip``, rank 16). Module
and parameter names copy PEFT's (``<module>.base_layer.weight``, ``<module>.lora_A.<adapter>.weight``),
so state dict keys equal those of the authors' PEFT-wrapped models.

Formats:
- the release ``s3diff.pkl``: a ``torch.save``d dict (:data:`RELEASE_KEYS`): the target lists,
  ``rank_unet``/``rank_vae``, ``state_dict_unet`` (every UNet key containing ``lora`` or ``conv_in``:
  the authors train ``conv_in`` fully), ``state_dict_vae`` (keys containing ``lora``),
  ``state_dict_{vae,unet}_{de,block,fuse}_mlp``, ``w`` (the frequencies, an ``nn.Parameter``) and
  ``state_embeddings`` = {``state_dict_vae_block``, ``state_dict_unet_block``}.
- ours: one ``.safetensors`` with the same tensors under ``unet.``/``vae.``/``de_mod.`` prefixes and
  metadata ``{"format": "coz-lora", "backbone": "s3diff", ...}``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from coz.backbones.diffusion.lora_formats import load_torch_file, read_lora_file, write_lora_file
from coz.errors import CozError
from coz.run.atomic import write_atomic
from coz.run.weights import mismatch, shapes

UNET_ADAPTER = "default"
VAE_ADAPTER = "vae_skip"
LORA_ALPHA = 8  # PEFT's default, which the authors kept
UNET_LORA_TARGETS = (
    "to_k",
    "to_q",
    "to_v",
    "to_out.0",
    "conv",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv_out",
    "proj_in",
    "proj_out",
    "ff.net.2",
    "ff.net.0.proj",
)
VAE_LORA_TARGETS = r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"
UNET_BLOCKS = 10  # 4 down, mid, 4 up, the rest
VAE_BLOCKS = 6  # 4 down, mid, the rest
NUM_FREQUENCIES = 64
BLOCK_EMBED_DIM = 64
RELEASE_KEYS = (
    "unet_lora_target_modules",
    "vae_lora_target_modules",
    "rank_unet",
    "rank_vae",
    "state_dict_unet",
    "state_dict_vae",
    "state_dict_vae_de_mlp",
    "state_dict_unet_de_mlp",
    "state_dict_vae_block_mlp",
    "state_dict_unet_block_mlp",
    "state_dict_vae_fuse_mlp",
    "state_dict_unet_fuse_mlp",
    "w",
    "state_embeddings",
)
MLPS = ("vae_de_mlp", "unet_de_mlp", "vae_block_mlp", "unet_block_mlp", "vae_fuse_mlp", "unet_fuse_mlp")
EMBEDDINGS = {
    "state_dict_vae_block": "vae_block_embeddings",
    "state_dict_unet_block": "unet_block_embeddings",
}


class DeModLoRA(nn.Module):
    """A Linear or Conv2d plus a LoRA whose rank space is mixed by a per-sample r x r matrix.

    Set ``de_mod`` (B, r, r) before calling (see :func:`modulated`); the batch of the input must be B.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, adapter: str, block: int) -> None:
        super().__init__()
        self.base_layer = base
        self.adapter, self.rank, self.scaling, self.block = adapter, rank, alpha / rank, block
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        if isinstance(base, nn.Conv2d):
            a = nn.Conv2d(
                base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False, **kw
            )
            b = nn.Conv2d(rank, base.out_channels, 1, 1, bias=False, **kw)
        elif isinstance(base, nn.Linear):
            a = nn.Linear(base.in_features, rank, bias=False, **kw)
            b = nn.Linear(rank, base.out_features, bias=False, **kw)
        else:
            raise TypeError(f"degradation-guided LoRA supports Linear and Conv2d, not {type(base).__name__}")
        nn.init.normal_(a.weight, std=1.0 / rank)
        nn.init.zeros_(b.weight)
        self.lora_A = nn.ModuleDict({adapter: a})
        self.lora_B = nn.ModuleDict({adapter: b})
        self.de_mod: torch.Tensor | None = None  # (B, r, r), not a parameter: set per forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.de_mod is None:
            raise RuntimeError("DeModLoRA.de_mod is not set: run the layer inside modulated(...)")
        a, b = self.lora_A[self.adapter], self.lora_B[self.adapter]
        h = a(x.to(a.weight.dtype))  # (B, r, h, w) | (B, L, r) | (B, r)
        m = self.de_mod.to(h.dtype)  # (B, r, r)
        if h.shape[0] != m.shape[0]:
            raise RuntimeError(f"LoRA input batch {h.shape[0]} but de_mod batch {m.shape[0]}")
        if h.dim() == 4:
            h = torch.einsum("bkhw,bkr->brhw", h, m)
        elif h.dim() == 3:
            h = torch.bmm(h, m)
        else:
            h = torch.einsum("bk,bkr->br", h, m)
        return (result + b(h) * self.scaling).to(result.dtype)


def _matches(name: str, targets: str | list[str] | tuple[str, ...]) -> bool:
    """PEFT's rule: a regex string must fullmatch the name; a list entry must equal it or end it."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def unet_block(name: str) -> int:
    parts = name.split(".")
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "mid_block":
        return 4
    if parts[0] == "up_blocks":
        return int(parts[1]) + 5
    return -1


def vae_block(name: str) -> int:
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "down_blocks":
        return int(parts[2])
    if len(parts) > 1 and parts[1] == "mid_block":
        return -2
    return -1


def inject_demod_lora(
    model: nn.Module, targets: str | list[str] | tuple[str, ...], rank: int, adapter: str, kind: str
) -> list[str]:
    """Wrap every matching Linear/Conv2d of ``model`` in a :class:`DeModLoRA`; returns their names.

    ``kind`` (``unet`` | ``vae``) picks the block numbering; names are relative to ``model``.
    """
    block_of = unet_block if kind == "unet" else vae_block
    names = []
    for name, module in list(model.named_modules()):
        if not name or not isinstance(module, (nn.Linear, nn.Conv2d)) or not _matches(name, targets):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, DeModLoRA(module, rank, LORA_ALPHA, adapter, block_of(name)))
        names.append(name)
    if not names:
        raise ValueError(f"no module of the {kind} matches the LoRA targets {targets!r}")
    return names


def demod_layers(model: nn.Module) -> list[DeModLoRA]:
    return [m for m in model.modules() if isinstance(m, DeModLoRA)]


@contextlib.contextmanager
def modulated(model: nn.Module, mods: torch.Tensor) -> Iterator[None]:
    """Give every DeModLoRA of ``model`` its block's matrices ``mods[:, block]`` (mods (B, n, r, r))."""
    layers = demod_layers(model)
    for layer in layers:
        layer.de_mod = mods[:, layer.block]
    try:
        yield
    finally:
        for layer in layers:
            layer.de_mod = None


class DegradationModulation(nn.Module):
    """Degradation scores (B, 2) -> per-block LoRA matrices for the VAE encoder and the UNet.

    Parameter names are the release's (``vae_de_mlp.0.weight``, ``unet_fuse_mlp.bias``,
    ``vae_block_embeddings.weight``...); ``W`` (the Fourier frequencies) is a fixed buffer.
    """

    def __init__(
        self,
        unet_rank: int,
        vae_rank: int,
        num_degradation: int = 2,
        num_frequencies: int = NUM_FREQUENCIES,
        block_dim: int = BLOCK_EMBED_DIM,
    ) -> None:
        super().__init__()
        self.unet_rank, self.vae_rank = unet_rank, vae_rank
        self.register_buffer("W", torch.randn(num_frequencies))
        fourier = 2 * num_frequencies * num_degradation
        self.vae_de_mlp = nn.Sequential(nn.Linear(fourier, 256), nn.ReLU())
        self.unet_de_mlp = nn.Sequential(nn.Linear(fourier, 256), nn.ReLU())
        self.vae_block_mlp = nn.Sequential(nn.Linear(block_dim, 64), nn.ReLU())
        self.unet_block_mlp = nn.Sequential(nn.Linear(block_dim, 64), nn.ReLU())
        self.vae_fuse_mlp = nn.Linear(256 + 64, vae_rank**2)
        self.unet_fuse_mlp = nn.Linear(256 + 64, unet_rank**2)
        for m in self.modules():  # the authors' init: near-zero matrices at the start of training
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data.mul_(1e-5)
                nn.init.zeros_(m.bias)
        self.vae_block_embeddings = nn.Embedding(VAE_BLOCKS, block_dim)
        self.unet_block_embeddings = nn.Embedding(UNET_BLOCKS, block_dim)

    def forward(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """scores (B, D) -> (VAE matrices (B, 6, rv, rv), UNet matrices (B, 10, ru, ru))."""
        proj = scores[..., None] * self.W * (2 * math.pi)  # (B, D, F)
        fourier = torch.cat([proj.sin(), proj.cos()], dim=-1).flatten(1)  # (B, D * 2F): score by score
        vae = self._fuse(
            fourier, self.vae_de_mlp, self.vae_block_mlp, self.vae_block_embeddings, self.vae_fuse_mlp
        )
        unet = self._fuse(
            fourier, self.unet_de_mlp, self.unet_block_mlp, self.unet_block_embeddings, self.unet_fuse_mlp
        )
        return vae.unflatten(-1, (self.vae_rank, self.vae_rank)), unet.unflatten(-1, (self.unet_rank,) * 2)

    @staticmethod
    def _fuse(fourier, de_mlp, block_mlp, embeddings, fuse_mlp) -> torch.Tensor:
        de = de_mlp(fourier)  # (B, 256)
        blocks = block_mlp(embeddings.weight)  # (n, 64)
        b, n = de.shape[0], blocks.shape[0]
        joint = torch.cat([de[:, None].expand(b, n, -1), blocks[None].expand(b, n, -1)], dim=-1)
        return fuse_mlp(joint)  # (B, n, r * r)


# ---- the release format (s3diff.pkl) ----------------------------------------------------------
def unet_release_state(unet: nn.Module) -> dict[str, torch.Tensor]:
    """What the release keeps of the UNet: LoRA tensors and the fully trained ``conv_in``."""
    return {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k}


def vae_release_state(vae: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vae.state_dict().items() if "lora" in k or "skip_conv" in k}


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def write_release(
    path: str | Path,
    unet: nn.Module,
    vae: nn.Module,
    modulation: DegradationModulation,
    unet_targets,
    vae_targets,
) -> None:
    """Write ``s3diff.pkl`` exactly as the authors' ``save_model`` lays it out."""
    sd = {
        "unet_lora_target_modules": list(unet_targets) if not isinstance(unet_targets, str) else unet_targets,
        "vae_lora_target_modules": vae_targets if isinstance(vae_targets, str) else list(vae_targets),
        "rank_unet": modulation.unet_rank,
        "rank_vae": modulation.vae_rank,
        "state_dict_unet": _cpu(unet_release_state(unet)),
        "state_dict_vae": _cpu(vae_release_state(vae)),
    }
    for mlp in MLPS:
        sd[f"state_dict_{mlp}"] = _cpu(getattr(modulation, mlp).state_dict())
    sd["w"] = nn.Parameter(modulation.W.detach().cpu().clone(), requires_grad=False)
    sd["state_embeddings"] = {key: getattr(modulation, attr).state_dict() for key, attr in EMBEDDINGS.items()}
    sd["state_embeddings"] = {k: _cpu(v) for k, v in sd["state_embeddings"].items()}
    write_atomic(path, lambda tmp: torch.save(sd, tmp))


def _is_state(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())


def read_release(path: str | Path) -> dict:
    """``s3diff.pkl`` loaded (``weights_only``) and checked for the release's structure."""
    path = Path(path)
    sd = load_torch_file(path, "S3Diff weights")
    if not isinstance(sd, dict):
        raise CozError(
            f"S3Diff weights {path}: expected a dict (the release's s3diff.pkl), got {type(sd).__name__}"
        )
    missing = [k for k in RELEASE_KEYS if k not in sd]
    if missing:
        raise CozError(f"S3Diff weights {path}: not an s3diff.pkl: missing {', '.join(missing)}")
    for key in ("rank_unet", "rank_vae"):
        if not isinstance(sd[key], int) or sd[key] < 1:
            raise CozError(f"S3Diff weights {path}: {key} is {sd[key]!r}, expected a positive int")
    for key in ("state_dict_unet", "state_dict_vae", *(f"state_dict_{m}" for m in MLPS)):
        if not _is_state(sd[key]):
            raise CozError(f"S3Diff weights {path}: {key} is not a dict of tensors")
    if not isinstance(sd["w"], torch.Tensor) or sd["w"].dim() != 1:
        raise CozError(f"S3Diff weights {path}: w is not a 1-D tensor of Fourier frequencies")
    emb = sd["state_embeddings"]
    if not isinstance(emb, dict) or not all(k in emb and _is_state(emb[k]) for k in EMBEDDINGS):
        raise CozError(f"S3Diff weights {path}: state_embeddings lacks {' or '.join(EMBEDDINGS)}")
    return sd


def _same_targets(a, b) -> bool:
    return (list(a) if not isinstance(a, str) else a) == (list(b) if not isinstance(b, str) else b)


def _check_state(path: Path, what: str, own: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> None:
    if problem := mismatch(shapes(own), given):
        raise CozError(
            f"S3Diff weights {path}: {what} does not match this model: {problem} "
            "(truncated, or saved for another base model or LoRA rank?)"
        )


def load_release(
    path: str | Path,
    sd: dict,
    unet: nn.Module,
    vae: nn.Module,
    modulation: DegradationModulation,
    unet_targets,
    vae_targets,
) -> None:
    """Copy a :func:`read_release` dict into the injected model; every tensor must fit exactly."""
    path = Path(path)
    if (sd["rank_unet"], sd["rank_vae"]) != (modulation.unet_rank, modulation.vae_rank):
        raise CozError(
            f"S3Diff weights {path}: ranks unet {sd['rank_unet']} / vae {sd['rank_vae']}, but the model "
            f"was built with {modulation.unet_rank} / {modulation.vae_rank}"
        )
    for key, own in (("unet_lora_target_modules", unet_targets), ("vae_lora_target_modules", vae_targets)):
        if not _same_targets(sd[key], own):
            raise CozError(f"S3Diff weights {path}: {key} is {sd[key]!r}, the model was built with {own!r}")
    parts = [
        ("state_dict_unet", unet, unet_release_state(unet)),
        ("state_dict_vae", vae, vae_release_state(vae)),
    ]
    parts += [(f"state_dict_{m}", getattr(modulation, m), getattr(modulation, m).state_dict()) for m in MLPS]
    parts += [
        (f"state_embeddings[{k}]", getattr(modulation, attr), getattr(modulation, attr).state_dict())
        for k, attr in EMBEDDINGS.items()
    ]
    given = {key: sd[key] for key in sd if key.startswith("state_dict_")}
    given |= {f"state_embeddings[{k}]": sd["state_embeddings"][k] for k in EMBEDDINGS}
    for key, _, own in parts:
        _check_state(path, key, own, given[key])
    if sd["w"].shape != modulation.W.shape:
        raise CozError(
            f"S3Diff weights {path}: w has shape {tuple(sd['w'].shape)}, expected {tuple(modulation.W.shape)}"
        )
    with torch.no_grad():
        for key, module, _ in parts:
            module.load_state_dict(given[key], strict=False)  # only the given keys (checked above)
        modulation.W.copy_(sd["w"])


# ---- our format (.safetensors) --------------------------------------------------------------
def adapter_state(
    unet: nn.Module, vae: nn.Module, modulation: DegradationModulation
) -> dict[str, torch.Tensor]:
    out = {f"unet.{k}": v for k, v in unet_release_state(unet).items()}
    out |= {f"vae.{k}": v for k, v in vae_release_state(vae).items()}
    out |= {f"de_mod.{k}": v for k, v in modulation.state_dict().items()}
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def save_adapter_safetensors(
    path: str | Path,
    unet: nn.Module,
    vae: nn.Module,
    modulation: DegradationModulation,
    metadata: dict[str, str],
) -> None:
    write_lora_file(path, adapter_state(unet, vae, modulation), {"backbone": "s3diff", **metadata})


def load_adapter_safetensors(
    path: str | Path, unet: nn.Module, vae: nn.Module, modulation: DegradationModulation
) -> dict[str, str]:
    """Load our safetensors into the injected model (strict: every tensor, every shape)."""
    tensors, metadata = read_lora_file(path, "s3diff", adapter_state(unet, vae, modulation))
    with torch.no_grad():
        for prefix, module in (("unet.", unet), ("vae.", vae), ("de_mod.", modulation)):
            part = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(part, strict=False)
    return metadata


def targets_metadata(unet_targets, vae_targets) -> dict[str, str]:
    return {"unet_targets": json.dumps(unet_targets), "vae_targets": json.dumps(vae_targets)}

"""OSEDiff-SD2.1's LoRA layout and its released checkpoint, ``osediff.pkl`` (docs/fidelity.md,
"Other backbones").

LoRA placement (the authors' ``initialize_unet`` / ``initialize_vae``, reproduced name for name):
- UNet: every weight (not bias, not a norm) whose name contains one of ``UNET_LORA_PATTERNS``
  gets a PEFT LoRA, in three adapters by where it sits: ``default_encoder`` (down blocks and
  ``conv_in``), ``default_decoder`` (up blocks and ``conv_out``), ``default_others`` (the rest:
  mid block). ``conv_in`` is also trained in full.
- VAE: the encoder's conv/attention layers (``VAE_LORA_PATTERNS``) and ``quant_conv``, adapter
  ``default_encoder``. The authors' list repeats a name once per pattern it contains
  (``quant_conv`` ten times); we keep those repeats when writing, and read lists as sets.
- Rank 4 (the release), ``lora_alpha`` 8 (PEFT's default, which the authors kept: scale 8/r),
  gaussian init (A ~ N(0, 1/r), B = 0), all three UNet adapters active at inference.

``osediff.pkl`` is a ``torch.save``d dict::

    vae_lora_encoder_modules   list[str]   the VAE targets above
    unet_lora_encoder_modules  list[str]   \\
    unet_lora_decoder_modules  list[str]    } the three UNet target lists
    unet_lora_others_modules   list[str]   /
    rank_unet, rank_vae        int
    state_dict_unet            {name: tensor} every UNet state-dict entry whose name contains
                                              "lora" or "conv_in" (so conv_in.base_layer.* too)
    state_dict_vae             {name: tensor} every VAE state-dict entry whose name contains "lora"

Names are the PEFT-wrapped ones, e.g. ``down_blocks.0.resnets.0.conv1.lora_A.default_encoder.weight``
and ``quant_conv.lora_B.default_encoder.weight``. It holds only lists, ints, strings and tensors, so
it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from coz.backbones.diffusion.lora_formats import VAE_ADAPTER, VAE_LORA_PATTERNS, load_torch_file
from coz.errors import CozError
from coz.run.atomic import write_atomic
from coz.run.weights import mismatch, shapes

UNET_LORA_PATTERNS = (
    "to_k",
    "to_q",
    "to_v",
    "to_out.0",
    "conv",
    "conv1",
    "conv2",
    "conv_in",
    "conv_shortcut",
    "conv_out",
    "proj_out",
    "proj_in",
    "ff.net.2",
    "ff.net.0.proj",
)
UNET_ADAPTERS = ("default_encoder", "default_decoder", "default_others")
LORA_ALPHA = 8  # PEFT's default lora_alpha; the authors never set it, so the scale is 8 / rank
LIST_KEYS = {  # the pkl's list keys, by adapter
    "default_encoder": "unet_lora_encoder_modules",
    "default_decoder": "unet_lora_decoder_modules",
    "default_others": "unet_lora_others_modules",
}
VAE_LIST_KEY = "vae_lora_encoder_modules"
RELEASE_KEYS = (
    VAE_LIST_KEY,
    *LIST_KEYS.values(),
    "rank_unet",
    "rank_vae",
    "state_dict_unet",
    "state_dict_vae",
)


# ---- where the LoRA goes ----------------------------------------------------------------------
def osediff_unet_targets(unet: nn.Module) -> dict[str, list[str]]:
    """{adapter: module names} as the authors' ``initialize_unet`` lists them (parameter order)."""
    targets: dict[str, list[str]] = {a: [] for a in UNET_ADAPTERS}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        if any(p in name for p in UNET_LORA_PATTERNS):  # the first matching pattern decides: any
            module = name.replace(".weight", "")
            if "down_blocks" in name or "conv_in" in name:
                targets["default_encoder"].append(module)
            elif "up_blocks" in name or "conv_out" in name:
                targets["default_decoder"].append(module)
            else:
                targets["default_others"].append(module)
    return targets


def osediff_vae_targets(vae: nn.Module) -> list[str]:
    """VAE module names as the authors' ``initialize_vae`` lists them, repeats included."""
    targets = []
    for name, _ in vae.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        for pattern in VAE_LORA_PATTERNS:
            if pattern in name and "encoder" in name:
                targets.append(name.replace(".weight", ""))
            elif "quant_conv" in name and "post_quant_conv" not in name:
                targets.append(name.replace(".weight", ""))
    return targets


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def inject_osediff_lora(
    unet: nn.Module,
    vae: nn.Module,
    rank_unet: int = 4,
    rank_vae: int = 4,
) -> tuple[dict[str, list[str]], list[str]]:
    """Add the three UNet adapters and the VAE adapter (gaussian init, drawn from torch's RNG);
    every adapter is left active. Returns (unet targets by adapter, vae targets)."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet_targets, vae_targets = osediff_unet_targets(unet), osediff_vae_targets(vae)
    if not unet_targets["default_encoder"] or not vae_targets:
        raise ValueError("no LoRA targets found: not an SD2-style UNet and VAE?")
    for adapter, names in unet_targets.items():
        if names:
            config = LoraConfig(
                r=rank_unet,
                lora_alpha=LORA_ALPHA,
                init_lora_weights="gaussian",
                target_modules=_unique(names),
            )
            with warnings.catch_warnings():  # "multiple adapters in the model": that is the layout
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                inject_adapter_in_model(config, unet, adapter_name=adapter)
    config = LoraConfig(
        r=rank_vae, lora_alpha=LORA_ALPHA, init_lora_weights="gaussian", target_modules=_unique(vae_targets)
    )
    inject_adapter_in_model(config, vae, adapter_name=VAE_ADAPTER)
    # PEFT activates only the adapter injected last; the release runs with all three at once
    # (the authors' set_adapter([...]) in OSEDiff_test.load_ckpt).
    for module in unet.modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(list(UNET_ADAPTERS))
    return unet_targets, vae_targets


def unet_release_state(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The UNet entries the release stores: LoRA tensors and the fully trained ``conv_in``."""
    return {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k}


def vae_release_state(vae: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vae.state_dict().items() if "lora" in k}


# ---- the file -------------------------------------------------------------------------------------
@dataclass
class OSEDiffRelease:
    """The contents of an ``osediff.pkl``, checked for structure (not yet against a model)."""

    path: Path
    unet_targets: dict[str, list[str]]
    vae_targets: list[str]
    rank_unet: int
    rank_vae: int
    state_unet: dict[str, torch.Tensor]
    state_vae: dict[str, torch.Tensor]


def save_osediff_pkl(
    path: str | Path,
    unet: nn.Module,
    vae: nn.Module,
    unet_targets: dict[str, list[str]],
    vae_targets: list[str],
    rank_unet: int,
    rank_vae: int,
) -> None:
    """Write the authors' ``osediff.pkl`` layout (tensors on the CPU, in their current dtype)."""
    cpu = lambda state: {k: v.detach().cpu().clone() for k, v in state.items()}  # noqa: E731
    release = {
        VAE_LIST_KEY: list(vae_targets),
        **{LIST_KEYS[a]: list(unet_targets[a]) for a in UNET_ADAPTERS},
        "rank_unet": int(rank_unet),
        "rank_vae": int(rank_vae),
        "state_dict_unet": cpu(unet_release_state(unet)),
        "state_dict_vae": cpu(vae_release_state(vae)),
    }
    write_atomic(path, lambda tmp: torch.save(release, tmp))


def read_osediff_pkl(path: str | Path) -> OSEDiffRelease:
    """Read and check an ``osediff.pkl``; anything wrong is one CozError naming the file."""
    path = Path(path)
    data = load_torch_file(path, "OSEDiff checkpoint")
    what = f"OSEDiff checkpoint {path}"
    if not isinstance(data, dict):
        raise CozError(
            f"{what}: expected a dict with {', '.join(RELEASE_KEYS)} (the OSEDiff release "
            f"osediff.pkl), got {type(data).__name__}"
        )
    missing = [k for k in RELEASE_KEYS if k not in data]
    if missing:
        raise CozError(
            f"{what}: lacks {', '.join(missing)}; not an OSEDiff-SD2.1 osediff.pkl "
            f"(it holds {', '.join(map(str, list(data)[:8])) or 'nothing'})"
        )
    for key in (VAE_LIST_KEY, *LIST_KEYS.values()):
        names = data[key]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise CozError(f"{what}: {key} should be a list of module names, got {type(names).__name__}")
    for key in ("rank_unet", "rank_vae"):
        rank = data[key]
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise CozError(f"{what}: {key} should be a positive int, got {rank!r}")
    for key in ("state_dict_unet", "state_dict_vae"):
        state = data[key]
        if (
            not isinstance(state, dict)
            or not state
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
        ):
            raise CozError(f"{what}: {key} should be a non-empty dict of tensors")
    return OSEDiffRelease(
        path=path,
        unet_targets={a: list(data[LIST_KEYS[a]]) for a in UNET_ADAPTERS},
        vae_targets=list(data[VAE_LIST_KEY]),
        rank_unet=int(data["rank_unet"]),
        rank_vae=int(data["rank_vae"]),
        state_unet=dict(data["state_dict_unet"]),
        state_vae=dict(data["state_dict_vae"]),
    )


def load_osediff_release(
    release: OSEDiffRelease,
    unet: nn.Module,
    vae: nn.Module,
    unet_targets: dict[str, list[str]],
    vae_targets: list[str],
) -> None:
    """Copy a checked release into a UNet and VAE that carry the LoRA (:func:`inject_osediff_lora`)
    with ``unet_targets`` / ``vae_targets``; the module lists, key sets and shapes must all match."""
    what = f"OSEDiff checkpoint {release.path}"
    for adapter in UNET_ADAPTERS:
        _same_modules(what, LIST_KEYS[adapter], release.unet_targets[adapter], unet_targets[adapter])
    _same_modules(what, VAE_LIST_KEY, release.vae_targets, vae_targets)
    for key, saved, model in (
        ("state_dict_unet", release.state_unet, unet),
        ("state_dict_vae", release.state_vae, vae),
    ):
        own = unet_release_state(model) if model is unet else vae_release_state(model)
        if problem := mismatch(shapes(own), saved):
            raise CozError(
                f"{what}: {key} does not match this model: {problem} (truncated, another model or LoRA rank?)"
            )
    with torch.no_grad():
        for model, saved in ((unet, release.state_unet), (vae, release.state_vae)):
            params = dict(model.named_parameters())
            for key, value in saved.items():
                params[key].copy_(value)


def _same_modules(what: str, key: str, saved: list[str], own: list[str]) -> None:
    extra, lacking = sorted(set(saved) - set(own)), sorted(set(own) - set(saved))
    if extra or lacking:
        raise CozError(
            f"{what}: {key} names other modules than this model has LoRA on: {len(extra)} unknown "
            f"(e.g. {extra[:2]}), {len(lacking)} absent (e.g. {lacking[:2]}); a checkpoint of another model?"
        )

"""LoRA layers of OSEDiff-SD3 and the checkpoint formats that hold them (docs/fidelity.md,
"OSEDiff-SD3 inference and full-image SR").

Two adapters:
- Transformer: a rank-4 LoRA on every ``nn.Linear`` inside an ``AdaLayerNormZero`` module (the
  adaLN modulation; SD3-medium has 47 of them, 1536 -> 9216). ``down ~ N(0, 1/r)``, ``up = 0``,
  scale 1. Released as ``model_20001.pkl``: a ``torch.save``d flat list
  ``[up0, down0, up1, down1, ...]`` in module traversal order; that order is the format.
- VAE encoder: PEFT LoRA, rank 4, alpha 8 (PEFT's default, which the authors kept), gaussian init,
  adapter name ``default_encoder``, on the encoder's conv/attention layers. Released as
  ``vae_encoder_20001.pt``: the whole encoder state dict in fp16, base weights and LoRA included.

Our own format (what ``coz.train_sr`` saves) is one ``.safetensors`` file with only LoRA tensors:
``transformer.<module>.lora_{down,up}.weight`` and ``vae_encoder.<module>.lora_{A,B}.default_encoder.weight``,
plus metadata ``{"format": "coz-lora", "backbone": ..., "rank": ..., ...}``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from coz.errors import CozError
from coz.run.weights import mismatch, shapes

ADALN_CLASS = "AdaLayerNormZero"
VAE_ADAPTER = "default_encoder"
# The authors' substrings selecting VAE-encoder layers (conv1/conv2/conv_in/conv_shortcut/conv/
# conv_out/to_q/to_k/to_v/to_out.0), matched against "encoder.<module>.weight"; norms excluded.
VAE_LORA_PATTERNS = (
    "conv1",
    "conv2",
    "conv_in",
    "conv_shortcut",
    "conv",
    "conv_out",
    "to_k",
    "to_q",
    "to_v",
    "to_out.0",
)
FORMAT = "coz-lora"


class LoRALinear(nn.Module):
    """``linear(x) + up(down(x)) * scale``; the LoRA branch runs in its own dtype (fp32 by default).

    ``fp16_output``: return the sum cast to float16, as the released ``LoraInjectedLinear`` does
    (``.half()``) even inside the fp32 transformer; the adaLN modulation then runs on those rounded
    values (``1 + scale`` itself in float16), as there. ``fp16_rank``: round the rank-r activation
    ``down(x)`` to float16 before ``up``, as the released training script's ``add_mp_hook`` does
    (training only: its inference code has no such hook)."""

    fp16_output = False
    fp16_rank = False

    def __init__(
        self, linear: nn.Linear, rank: int = 4, scale: float = 1.0, lora_dtype=torch.float32
    ) -> None:
        super().__init__()
        self.linear = linear
        self.rank, self.scale = rank, scale
        device = linear.weight.device
        self.lora_down = nn.Linear(linear.in_features, rank, bias=False, device=device, dtype=lora_dtype)
        self.lora_up = nn.Linear(rank, linear.out_features, bias=False, device=device, dtype=lora_dtype)
        nn.init.normal_(self.lora_down.weight, std=1.0 / rank)
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lora_down(x.to(self.lora_down.weight.dtype))  # (..., r)
        lora = self.lora_up(h.half().to(h.dtype) if self.fp16_rank else h)
        out = self.linear(x) + lora.to(x.dtype) * self.scale
        return out.half() if self.fp16_output else out


def inject_adaln_lora(transformer: nn.Module, rank: int = 4) -> list[str]:
    """Wrap every Linear inside each AdaLayerNormZero with :class:`LoRALinear`, in traversal order.

    Returns the wrapped modules' names, in the order of the released list format.
    """
    names = []
    for ancestor_name, ancestor in list(transformer.named_modules()):
        if type(ancestor).__name__ != ADALN_CLASS:
            continue
        for child_name, child in list(ancestor.named_modules()):
            if not isinstance(child, nn.Linear):
                continue
            parent_name, _, attr = child_name.rpartition(".")
            parent = ancestor.get_submodule(parent_name) if parent_name else ancestor
            setattr(parent, attr, LoRALinear(child, rank))
            names.append(f"{ancestor_name}.{child_name}")
    if not names:
        raise ValueError(f"no Linear inside any {ADALN_CLASS} module: not an SD3 transformer?")
    return names


def adaln_lora_modules(transformer: nn.Module) -> list[tuple[str, LoRALinear]]:
    """(name, module) of every LoRALinear, in traversal order (= the released list order)."""
    return [(n, m) for n, m in transformer.named_modules() if isinstance(m, LoRALinear)]


def load_torch_file(path: Path, what: str):
    """``what``'s file read safely (:func:`coz.run.weights.safe_load`); any problem, NaN/Inf
    included, is one CozError naming it."""
    from coz.run.weights import refuse_nonfinite, safe_load

    loaded = safe_load(f"{what} {path}", path)
    refuse_nonfinite(f"{what} {path}", loaded)
    return loaded


def load_released_transformer_lora(transformer: nn.Module, path: str | Path) -> None:
    """Load ``model_20001.pkl`` (flat list [up0, down0, up1, down1, ...]) into the injected LoRA."""
    path = Path(path)
    loras = load_torch_file(path, "transformer LoRA")
    modules = adaln_lora_modules(transformer)
    if not isinstance(loras, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in loras):
        raise CozError(
            f"transformer LoRA {path}: expected a list of tensors [up0, down0, up1, down1, ...] "
            f"(the authors' model_20001.pkl format), got {type(loras).__name__}"
        )
    if len(loras) != 2 * len(modules):
        raise CozError(
            f"transformer LoRA {path}: holds {len(loras)} tensors, expected {2 * len(modules)} "
            f"(up and down for each of the {len(modules)} AdaLayerNormZero linears); "
            "truncated, or saved for another model size or rank?"
        )
    for i, (name, module) in enumerate(modules):
        up, down = loras[2 * i], loras[2 * i + 1]
        for kind, tensor, param in (
            ("up", up, module.lora_up.weight),
            ("down", down, module.lora_down.weight),
        ):
            if tensor.shape != param.shape:
                raise CozError(
                    f"transformer LoRA {path}: tensor {2 * i + (kind == 'down')} ({kind} of "
                    f"{name}) has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}; "
                    "wrong order, rank or model?"
                )
    with torch.no_grad():
        for i, (_, module) in enumerate(modules):
            module.lora_up.weight.copy_(loras[2 * i])
            module.lora_down.weight.copy_(loras[2 * i + 1])


def save_released_transformer_lora(transformer: nn.Module, path: str | Path) -> None:
    """Write the LoRA in the authors' list format (for tests and for use with their scripts)."""
    flat = []
    for _, module in adaln_lora_modules(transformer):
        flat += [module.lora_up.weight.detach().cpu().clone(), module.lora_down.weight.detach().cpu().clone()]
    from coz.run.atomic import write_atomic

    write_atomic(path, lambda tmp: torch.save(flat, tmp))


def vae_lora_targets(encoder: nn.Module) -> list[str]:
    """Names (relative to ``encoder``) of the layers the authors give a LoRA."""
    targets = []
    for name, module in encoder.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or "norm" in name:
            continue
        full = f"encoder.{name}.weight"
        if any(p in full for p in VAE_LORA_PATTERNS):
            targets.append(name)
    return targets


def inject_vae_encoder_lora(encoder: nn.Module, rank: int = 4, alpha: int = 8) -> list[str]:
    """Add the PEFT LoRA (adapter ``default_encoder``) to the VAE encoder; returns the targets."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = vae_lora_targets(encoder)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)
    inject_adapter_in_model(config, encoder, adapter_name=VAE_ADAPTER)
    return targets


_ADAPTER_KEY = re.compile(r"\.lora_([AB])\.[^.]+\.weight$")


def normalize_vae_key(key: str) -> str:
    """A saved encoder key -> our name: drop PEFT/VAE prefixes, rename the adapter to ``default_encoder``."""
    for prefix in ("base_model.model.", "vae.", "encoder."):
        key = key.removeprefix(prefix)
    return _ADAPTER_KEY.sub(rf".lora_\1.{VAE_ADAPTER}.weight", key)


def load_released_vae_encoder(encoder: nn.Module, path: str | Path) -> None:
    """Load ``vae_encoder_20001.pt`` (the whole encoder state dict, fp16, PEFT LoRA keys) strictly."""
    path = Path(path)
    state = load_torch_file(path, "VAE encoder")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CozError(
            f"VAE encoder {path}: expected a state dict (the authors' vae_encoder_20001.pt), "
            f"got {type(state).__name__}"
        )
    own = encoder.state_dict()
    mapped = {}
    for key, value in state.items():
        name = normalize_vae_key(key)
        if name not in own:  # saved without the LoRA wrapper: conv_in.weight -> conv_in.base_layer.weight
            stem, _, leaf = name.rpartition(".")
            name = f"{stem}.base_layer.{leaf}" if f"{stem}.base_layer.{leaf}" in own else name
        mapped[name] = value
    if problem := mismatch(shapes(own), mapped, show=3):
        raise CozError(
            f"VAE encoder {path}: keys do not match this VAE's encoder with its LoRA: {problem} "
            "(another model or LoRA rank?)"
        )
    encoder.load_state_dict(mapped, strict=True)


def lora_state_dict(transformer: nn.Module, encoder: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors, under our format's key names."""
    out = {}
    for name, module in adaln_lora_modules(transformer):
        out[f"transformer.{name}.lora_down.weight"] = module.lora_down.weight
        out[f"transformer.{name}.lora_up.weight"] = module.lora_up.weight
    for key, value in encoder.state_dict().items():
        if ".lora_A." in key or ".lora_B." in key:
            out[f"vae_encoder.{key}"] = value
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def save_lora_safetensors(
    path: str | Path, transformer: nn.Module, encoder: nn.Module, metadata: dict[str, str]
) -> None:
    """Our format: LoRA tensors only, plus string metadata (backbone, ranks, base model...)."""
    write_lora_file(path, lora_state_dict(transformer, encoder), metadata)


def write_lora_file(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Our safetensors format for any backbone: ``tensors`` plus ``{"format": "coz-lora", **metadata}``."""
    from safetensors.torch import save_file

    from coz.run.atomic import write_atomic

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT, **metadata}))


def read_lora_file(
    path: str | Path, backbone: str, expected: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of our format, checked: written for ``backbone``, and holding exactly the
    keys of ``expected`` with the same shapes. Any problem is one CozError naming the file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CozError(f"backbone.weights={path}: not a readable safetensors file ({e})") from None
    if metadata.get("format") != FORMAT or metadata.get("backbone") != backbone:
        raise CozError(
            f"backbone.weights={path}: metadata says format={metadata.get('format')!r}, "
            f"backbone={metadata.get('backbone')!r}; expected {FORMAT!r} for {backbone!r}"
        )
    if problem := mismatch(shapes(expected), tensors):
        raise CozError(f"backbone.weights={path}: {problem}")
    from coz.run.weights import refuse_nonfinite

    refuse_nonfinite(f"backbone.weights={path}", tensors)
    return tensors, metadata


def load_lora_safetensors(
    transformer: nn.Module, encoder: nn.Module, path: str | Path, backbone: str
) -> dict[str, str]:
    """Load our safetensors format into the injected LoRA; returns its metadata."""
    tensors, metadata = read_lora_file(path, backbone, lora_state_dict(transformer, encoder))
    with torch.no_grad():
        params = dict(transformer.named_parameters())
        for key, value in tensors.items():
            if key.startswith("transformer."):
                params[key.removeprefix("transformer.")].copy_(value)
        encoder.load_state_dict(
            {k.removeprefix("vae_encoder."): v for k, v in tensors.items() if k.startswith("vae_encoder.")},
            strict=False,
        )
    return metadata

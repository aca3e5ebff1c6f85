"""DAPE prompts: the RAM tagger with SeeSR's LoRA (paper section 4.1; docs/fidelity.md "Prompts").

RAM scores every tag of its list with a Query2Label-style head: each tag's label embedding is a
query that cross-attends to the image tokens (BERT layers without self-attention), then
``fc`` gives one logit per tag. Tags whose sigmoid passes their per-class threshold are joined
with ", ". The thresholds come from RAM's ``ram_tag_list_threshold.txt`` (one per tag; most 0.65,
about 1,100 higher, 10 disabled at 1.0), which RAM's tagger always reads: its 0.68 constructor
default never takes effect. ``uniform:0.68`` is the explicit opt-out. DAPE adds rank-8 LoRA on the Swin ``qkv``
(q and v; loralib ``MergedLinear``) and on the head's ``query``/``key`` (loralib ``Linear``,
alpha 1), loaded non-strictly from ``DAPE.pth`` on top of ``ram_swin_large_14m.pth``. As RAM's own loader,
legacy ``vision_multi.*`` keys are read as ``tagging_head.*`` and keys the tagger does not have are
ignored (counted in one log line); a file that matches no parameter at all is refused.

Parameter names follow RAM's checkpoints: ``label_embed``, ``wordvec_proj``, ``image_proj``,
``fc``, ``tagging_head.encoder.layer.N.crossattention.self.query|key|value``,
``...crossattention.output.dense|LayerNorm``, ``...intermediate.dense``, ``...output.dense|LayerNorm``,
``visual_encoder.*``. Input: the view resized to 384x384 (bilinear), ImageNet normalisation.

Status: implemented. The Swin-L encoder (``coz/prompts/ram_swin.py``, RAM's module names) reads
``visual_encoder.*`` of ``ram_swin_large_14m.pth``; key names and shapes are tested against RAM's
layout on a meta-device build, the forward with a tiny config of the same class (and against timm's
independent Swin). Not yet compared with the released weights' tags (no weights offline).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from coz.errors import CozError
from coz.prompts.base import PromptExtractor
from coz.prompts.lora_linear import LoRALinear

log = logging.getLogger("coz.prompts")

THRESHOLD_FILE = "ram_tag_list_threshold.txt"  # RAM's per-class thresholds, beside ram_tag_list.txt
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WHERE = {
    "ram_weights": "ram_swin_large_14m.pth from the Recognize Anything release (xinyu1205/recognize-anything; "
    "`coz-fetch ram`, then prompt.ram_weights=auto)",
    "dape_weights": "DAPE.pth from SeeSR's release (cswry/SeeSR, preset/models; `coz-fetch dape`, then "
    "prompt.dape_weights=auto)",
    "tags": "ram/data/ram_tag_list.txt (4,585 lines) from the recognize-anything or SeeSR code "
    "(`coz-fetch dape`, then prompt.tags=auto)",
    "thresholds": "ram/data/ram_tag_list_threshold.txt from the recognize-anything or SeeSR code",
}


class CrossAttentionLayer(nn.Module):
    """One layer of RAM's tagging head: BERT cross-attention + feed-forward, no self-attention."""

    def __init__(self, hidden: int, heads: int, encoder_width: int, intermediate: int, lora_r: int) -> None:
        super().__init__()
        self.heads = heads
        att = nn.Module()
        att.self = nn.Module()
        att.self.query = LoRALinear(hidden, hidden, r=lora_r)
        att.self.key = LoRALinear(encoder_width, hidden, r=lora_r)
        att.self.value = nn.Linear(encoder_width, hidden)
        att.output = nn.Module()
        att.output.dense, att.output.LayerNorm = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=1e-12)
        self.crossattention = att
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, intermediate)
        self.output = nn.Module()
        self.output.dense, self.output.LayerNorm = (
            nn.Linear(intermediate, hidden),
            nn.LayerNorm(hidden, eps=1e-12),
        )

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        a = self.crossattention
        b, n, h = queries.shape

        def split(x):  # (B, L, H) -> (B, heads, L, H / heads)
            return x.view(b, -1, self.heads, h // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(
            split(a.self.query(queries)), split(a.self.key(image)), split(a.self.value(image))
        )
        x = a.output.LayerNorm(a.output.dense(ctx.transpose(1, 2).reshape(b, n, h)) + queries)
        return self.output.LayerNorm(self.output.dense(F.gelu(self.intermediate.dense(x))) + x)


class RAMTagger(nn.Module):
    """``visual_encoder`` (any module: images (B, 3, S, S) -> tokens (B, 1 + L, vision_width)) and
    RAM's tagging head over ``num_tags`` tags."""

    def __init__(
        self,
        visual_encoder: nn.Module,
        vision_width: int,
        num_tags: int,
        hidden: int = 768,
        layers: int = 2,
        heads: int = 4,
        intermediate: int = 3072,
        lora_r: int = 8,
    ) -> None:
        super().__init__()
        self.visual_encoder = visual_encoder
        self.image_proj = nn.Linear(vision_width, 512)
        self.label_embed = nn.Parameter(torch.zeros(num_tags, 512))
        self.wordvec_proj = nn.Linear(512, hidden) if hidden != 512 else nn.Identity()
        self.tagging_head = nn.Module()
        self.tagging_head.encoder = nn.Module()
        self.tagging_head.encoder.layer = nn.ModuleList(
            [CrossAttentionLayer(hidden, heads, 512, intermediate, lora_r) for _ in range(layers)]
        )
        self.fc = nn.Linear(hidden, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tag logits (B, num_tags) of normalised images."""
        image = self.image_proj(self.visual_encoder(images))  # (B, 1 + L, 512)
        queries = F.relu(self.wordvec_proj(self.label_embed)).unsqueeze(0).expand(len(images), -1, -1)
        for layer in self.tagging_head.encoder.layer:
            queries = layer(queries, image)
        return self.fc(queries).squeeze(-1)


def load_tags(path: str | Path) -> list[str]:
    tags = Path(path).read_text(encoding="utf-8").splitlines()
    if not tags:
        raise CozError(f"prompt.tags={path}: empty tag list")
    return tags


def load_thresholds(path: str | Path, num_tags: int, option: str = "prompt.thresholds") -> torch.Tensor:
    """RAM's per-class threshold file: one float per line, exactly one per tag of the list."""
    lines = [(i, s.strip()) for i, s in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)]
    values = []
    for number, text in lines:
        if not text:
            continue
        try:
            values.append(float(text))
        except ValueError:
            raise CozError(f"{option}={path}: line {number} ({text[:20]!r}) is not a number") from None
    if len(values) != num_tags:
        raise CozError(f"{option}={path}: {len(values)} thresholds for {num_tags} tags")
    return torch.tensor(values)


def resolve_thresholds(
    spec: str | None, tags_path: str | Path, num_tags: int, option: str = "prompt.thresholds"
) -> torch.Tensor:
    """The per-class thresholds a ``thresholds`` option names.

    ``null``: RAM's ``ram_tag_list_threshold.txt`` beside the tag list (what RAM always applies);
    a path: that file; ``uniform:X``: X for every tag (the opt-out; ``uniform:0.68`` is RAM's
    constructor default). A missing file is one CozError naming it."""
    spec = "" if spec is None else str(spec).strip()
    if spec.startswith("uniform:"):
        try:
            value = float(spec[len("uniform:") :])
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise CozError(f"{option}={spec}: uniform:X needs a number X in [0, 1], e.g. uniform:0.68")
        return torch.full((num_tags,), value)
    path = Path(spec).expanduser() if spec else Path(tags_path).expanduser().parent / THRESHOLD_FILE
    if not path.is_file():
        where = "" if spec else " (looked for beside the tag list)"
        raise CozError(
            f"{option}={spec or 'null'}: no such file {path}{where}: get {WHERE['thresholds']}, "
            f"or set {option}=uniform:0.68 for one threshold for every tag"
        )
    return load_thresholds(path, num_tags, option)


LEGACY_PREFIXES = {"vision_multi": "tagging_head"}  # RAM's loader renames these old checkpoint names


def renamed_legacy(state: dict) -> dict:
    """``vision_multi.*`` -> ``tagging_head.*`` as RAM's ``load_checkpoint_swinlarge`` does."""
    out = {}
    for key, value in state.items():
        for old, new in LEGACY_PREFIXES.items():
            key = key.replace(old, new)
        out[key] = value
    return out


def load_ram_state(tagger: RAMTagger, ram_path: str | Path | None, dape_path: str | Path | None) -> None:
    """RAM's weights (every non-LoRA parameter must be there), then DAPE's on top, as SeeSR does.
    Keys the tagger lacks are ignored as RAM's non-strict load ignores them (one log line with
    their count); wrong shapes and a file matching nothing are refused by name."""
    for path, strict in ((ram_path, True), (dape_path, False)):
        if not path:
            continue
        from coz.run.weights import torch_file

        state = torch_file("prompt.ram_weights" if strict else "prompt.dape_weights", path)
        if not isinstance(state, dict):
            raise CozError(f"{path}: not a state dict of RAM/DAPE weights")
        state = renamed_legacy(state.get("model", state))
        tagger.load_state_dict(checked_state(tagger, state, strict, str(path)), strict=False)


def checked_state(tagger: nn.Module, state: dict, strict: bool, source: str) -> dict:
    """The entries of ``state`` the tagger takes; CozError on shape mismatches, on a file that
    matches no parameter and (``strict``) on missing non-LoRA parameters. Other unknown keys are
    logged once, counted, and skipped (RAM and SeeSR load with ``strict=False``)."""
    own = tagger.state_dict()
    if not any(k in own for k in state):
        raise CozError(
            f"{source}: none of its {len(state)} key(s) matches a parameter of the tagger "
            f"(e.g. {', '.join(sorted(state)[:3]) or 'no keys at all'}): not a RAM or DAPE checkpoint"
        )
    unknown = sorted(k for k in state if k not in own and not _ignored(k))
    if unknown:
        log.info(
            "%s: %d key(s) match no parameter of the tagger and are ignored, as RAM's non-strict load "
            "ignores them (e.g. %s)",
            source,
            len(unknown),
            ", ".join(unknown[:3]),
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(state)
        if k in own and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if wrong:
        raise CozError(
            f"{source}: {len(wrong)} shape mismatch(es) (file vs model), e.g. {', '.join(wrong[:3])}"
        )
    missing = sorted(k for k in own if k not in state and "lora_" not in k)
    if strict and missing:
        raise CozError(f"{source}: {len(missing)} parameter(s) missing, e.g. {', '.join(missing[:3])}")
    return {k: v for k, v in state.items() if k in own}


# Parts of RAM's checkpoint the tagger does not use (captioning branches, the head's unused
# embeddings) and the Swin's window-geometry buffers, which ram_swin recomputes (RAM's own loader
# deletes them from the checkpoint as well).
_IGNORED = ("tag_encoder.", "text_decoder.", "tagging_head.embeddings.", "class_threshold")
_IGNORED_SUFFIXES = (".relative_position_index", ".attn_mask")


def _ignored(key: str) -> bool:
    return key.startswith(_IGNORED) or key.endswith(_IGNORED_SUFFIXES)


class DAPEPrompts(PromptExtractor):
    """Tags of the current view only (DAPE sees no previous state)."""

    name = "dape"
    multiscale = False

    def __init__(
        self,
        tagger: RAMTagger,
        tags: list[str],
        thresholds: torch.Tensor,
        image_size: int = 384,
        device: str = "cpu",
    ) -> None:
        if len(tags) != tagger.label_embed.shape[0]:
            raise CozError(f"tag list has {len(tags)} tags, the tagger {tagger.label_embed.shape[0]}")
        self.tagger, self.tags, self.thresholds = tagger.eval().to(device), tags, thresholds.to(device)
        self.image_size, self.device = image_size, device
        self.dtype = next(tagger.parameters()).dtype  # float16 on GPUs, as the official scripts run it

    def preprocess(self, views) -> torch.Tensor:
        from coz.geometry import to_tensor

        x = to_tensor(views).to(self.device)  # (B, 3, H, W) in [0, 1]
        x = F.interpolate(
            x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
        )
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    def select(self, logits: torch.Tensor) -> list[str]:
        """Tags whose score passes their threshold, in tag-list order, joined with ", "."""
        keep = torch.sigmoid(logits.float()) > self.thresholds
        return [", ".join(self.tags[i] for i in row.nonzero().flatten().tolist()) for row in keep]

    def extract(self, views, previous) -> list[str]:
        if not views:
            return []
        with torch.inference_mode():
            return self.select(self.tagger(self.preprocess(views)))


def build_dape(cfg, device: str = "cpu") -> DAPEPrompts:
    """``prompt=dape``: the files named in the config, checked before anything loads."""
    check_files(cfg)
    return load_dape(cfg, device)


def check_files(cfg) -> None:
    """The three files ``prompt=dape`` needs are named and on disk (no model loads)."""
    for key in ("ram_weights", "dape_weights", "tags"):  # the tag list ships with RAM's code, not coz
        if not cfg[key]:
            raise CozError(f"prompt=dape needs prompt.{key}=PATH: {WHERE[key]}")
    from coz.run.weights import refuse_placeholder

    for key in ("ram_weights", "dape_weights", "tags"):
        value = cfg[key]
        if not Path(value).expanduser().is_file():
            raise CozError(f"prompt.{key}={value}: no such file (get {WHERE[key]})")
        refuse_placeholder(f"prompt.{key}", Path(value).expanduser())


def ram_swin_tagger(num_tags: int) -> RAMTagger:
    """RAM's tagger as in ``ram_swin_large_14m.pth``: Swin-L 384 (width 1536) and the tagging head."""
    from coz.prompts.ram_swin import swin_large_384

    return RAMTagger(swin_large_384(), vision_width=1536, num_tags=num_tags)


def load_dape(cfg, device: str = "cpu") -> DAPEPrompts:
    """RAM (strict) + DAPE's LoRA (non-strict) on the Swin-L tagger, the tag list and thresholds."""
    if cfg.image_size != 384:
        raise CozError(f"prompt.image_size={cfg.image_size}: RAM's Swin-L is built for 384 px")
    tags = load_tags(Path(cfg.tags).expanduser())
    thresholds = resolve_thresholds(cfg.thresholds, cfg.tags, len(tags))  # before the big build
    tagger = ram_swin_tagger(len(tags))
    load_ram_state(tagger, Path(cfg.ram_weights).expanduser(), Path(cfg.dape_weights).expanduser())
    from coz.run.dtypes import resolve_dtype

    dtype = resolve_dtype(cfg.dtype, device, gpu_default=torch.float16, option="prompt.dtype")
    return DAPEPrompts(tagger.to(dtype), tags, thresholds, image_size=384, device=device)

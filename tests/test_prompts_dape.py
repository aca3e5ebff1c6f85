"""DAPE: thresholds, LoRA layout, RAM/DAPE checkpoint keys (synthetic), RAM's Swin-L encoder (key layout on
the meta device, a tiny config end to end, timm's Swin as an independent reference), the tiny twin, clear
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from coz.errors import CozError
from coz.prompts.dape import (
    DAPEPrompts,
    LoRALinear,
    RAMTagger,
    checked_state,
    load_ram_state,
    load_thresholds,
    ram_swin_tagger,
)
from coz.prompts.ram_swin import SwinTransformer
from coz.prompts.tiny_dape import TINY_TAGS, build_tiny_dape, tiny_tagger


def views(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(n)]


def test_merged_qkv_lora_updates_q_and_v_only():
    torch.manual_seed(0)
    layer = LoRALinear(6, 18, r=2, lora_groups=(True, False, True))
    assert layer.lora_A.shape == (4, 6) and layer.lora_B.shape == (12, 2)  # loralib MergedLinear shapes
    layer.lora_B.data.normal_()
    delta = layer.delta_weight()
    torch.testing.assert_close(delta[:6], layer.lora_B[:6] @ layer.lora_A[:2] / 2)
    assert torch.all(delta[6:12] == 0)
    torch.testing.assert_close(delta[12:], layer.lora_B[6:] @ layer.lora_A[2:] / 2)


def test_thresholds_are_per_class(tmp_path):
    (tmp_path / "t.txt").write_text("0.9\n0.5\n0.68\n0.68\n")
    thresholds = load_thresholds(tmp_path / "t.txt", 4)
    assert thresholds.tolist() == pytest.approx([0.9, 0.5, 0.68, 0.68])
    prompts = DAPEPrompts(tiny_tagger(num_tags=4), ["sky", "tree", "fur", "rock"], thresholds, image_size=64)
    scores = torch.tensor([[0.95, 0.5, 0.69, 0.1], [0.85, 0.51, 0.68, 0.99]])
    assert prompts.select(torch.logit(scores)) == ["sky, fur", "tree, rock"]  # strictly above
    with pytest.raises(CozError, match="3 thresholds for 2 tags"):
        (tmp_path / "u.txt").write_text("0.1\n0.2\n0.3\n")
        load_thresholds(tmp_path / "u.txt", 2)


def test_tiny_dape_tags_views_at_its_resolution():
    prompts = build_tiny_dape()
    texts = prompts.extract(views(), [None] * 3)
    assert len(texts) == 3
    for text in texts:
        tags = text.split(", ")
        assert set(tags) <= set(TINY_TAGS) and tags == sorted(tags, key=TINY_TAGS.index)
    x = prompts.preprocess(views(1))
    assert x.shape == (1, 3, 64, 64) and -2.2 < x.min() and x.max() < 2.7  # ImageNet-normalised


def test_ram_and_dape_key_layout_round_trip(tmp_path):
    source = tiny_tagger(seed=1)
    state = source.state_dict()
    for key in (
        "label_embed",
        "fc.weight",
        "image_proj.weight",
        "wordvec_proj.weight",
        "tagging_head.encoder.layer.0.crossattention.self.query.lora_A",
        "tagging_head.encoder.layer.0.crossattention.self.key.lora_B",
        "tagging_head.encoder.layer.0.crossattention.self.value.weight",
        "tagging_head.encoder.layer.0.crossattention.output.LayerNorm.weight",
        "tagging_head.encoder.layer.0.intermediate.dense.weight",
        "tagging_head.encoder.layer.0.output.dense.weight",
    ):
        assert key in state, key
    ram = {k: v for k, v in state.items() if "lora_" not in k}
    ram["tag_encoder.encoder.layer.0.attention.self.query.weight"] = torch.zeros(2, 2)  # captioning: ignored
    dape = {k: v for k, v in state.items() if "lora_" in k}
    torch.save({"model": ram}, tmp_path / "ram.pth")
    torch.save(dape, tmp_path / "dape.pth")
    target = tiny_tagger(seed=2)
    load_ram_state(target, tmp_path / "ram.pth", tmp_path / "dape.pth")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))

    torch.save({"visual_encoder.head.lora_A": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(
        CozError, match=r"bad.pth: none of its 1 key\(s\) matches.*visual_encoder.head.lora_A"
    ):
        load_ram_state(target, None, tmp_path / "bad.pth")
    torch.save({k: v for k, v in ram.items() if k != "fc.weight"}, tmp_path / "partial.pth")
    with pytest.raises(CozError, match="missing, e.g. fc.weight"):
        load_ram_state(target, tmp_path / "partial.pth", None)


def test_missing_dape_files_fail_clearly(compose_zoom, tmp_path):
    from coz.prompts import build_prompt_extractor

    cfg = compose_zoom(["prompt=dape", "input=x.png"]).prompt
    with pytest.raises(CozError, match="prompt.ram_weights=PATH: ram_swin_large_14m.pth"):
        build_prompt_extractor(cfg)
    cfg.ram_weights, cfg.dape_weights = str(tmp_path / "ram_swin_large_14m.pth"), str(tmp_path / "DAPE.pth")
    with pytest.raises(CozError, match="prompt.tags=PATH: .*ram_tag_list.txt"):
        build_prompt_extractor(cfg)
    cfg.tags = str(tmp_path / "tags.txt")
    with pytest.raises(CozError, match="ram_swin_large_14m.pth: no such file"):
        build_prompt_extractor(cfg)


# --- RAM's Swin-L encoder -------------------------------------------------------------------------


def ram_layout(num_tags: int = 4585) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``ram_swin_large_14m.pth``'s ``model`` entries the tagger uses, written out from
    RAM's code (Swin-L 384: embed 192, depths 2-2-18-2, heads 6-12-24-48, window 12; q2l head: 2 layers,
    hidden 768, intermediate 3072, encoder width 512), including the window buffers RAM stores."""
    keys: dict[str, tuple[int, ...]] = {
        "visual_encoder.patch_embed.proj.weight": (192, 3, 4, 4),
        "visual_encoder.patch_embed.proj.bias": (192,),
        "visual_encoder.patch_embed.norm.weight": (192,),
        "visual_encoder.patch_embed.norm.bias": (192,),
        "visual_encoder.norm.weight": (1536,),
        "visual_encoder.norm.bias": (1536,),
    }
    resolution = 96
    for stage, (depth, heads) in enumerate(zip((2, 2, 18, 2), (6, 12, 24, 48), strict=True)):
        dim = 192 * 2**stage
        window = min(12, resolution)
        for block in range(depth):
            pre = f"visual_encoder.layers.{stage}.blocks.{block}."
            keys |= {
                pre + "norm1.weight": (dim,),
                pre + "norm1.bias": (dim,),
                pre + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, heads),
                pre + "attn.relative_position_index": (window**2, window**2),
                pre + "attn.qkv.weight": (3 * dim, dim),
                pre + "attn.qkv.bias": (3 * dim,),
                pre + "attn.proj.weight": (dim, dim),
                pre + "attn.proj.bias": (dim,),
                pre + "norm2.weight": (dim,),
                pre + "norm2.bias": (dim,),
                pre + "mlp.fc1.weight": (4 * dim, dim),
                pre + "mlp.fc1.bias": (4 * dim,),
                pre + "mlp.fc2.weight": (dim, 4 * dim),
                pre + "mlp.fc2.bias": (dim,),
            }
            if block % 2 and resolution > window:  # shifted blocks
                keys[pre + "attn_mask"] = ((resolution // window) ** 2, window**2, window**2)
        if stage < 3:
            pre = f"visual_encoder.layers.{stage}.downsample."
            keys |= {pre + "norm.weight": (4 * dim,), pre + "norm.bias": (4 * dim,)}
            keys[pre + "reduction.weight"] = (2 * dim, 4 * dim)
            resolution //= 2
    keys |= {
        "image_proj.weight": (512, 1536),
        "image_proj.bias": (512,),
        "label_embed": (num_tags, 512),
        "wordvec_proj.weight": (768, 512),
        "wordvec_proj.bias": (768,),
        "fc.weight": (1, 768),
        "fc.bias": (1,),
    }
    for layer in range(2):
        pre = f"tagging_head.encoder.layer.{layer}."
        for name, shape in {
            "crossattention.self.query.weight": (768, 768),
            "crossattention.self.query.bias": (768,),
            "crossattention.self.key.weight": (768, 512),
            "crossattention.self.key.bias": (768,),
            "crossattention.self.value.weight": (768, 512),
            "crossattention.self.value.bias": (768,),
            "crossattention.output.dense.weight": (768, 768),
            "crossattention.output.dense.bias": (768,),
            "crossattention.output.LayerNorm.weight": (768,),
            "crossattention.output.LayerNorm.bias": (768,),
            "intermediate.dense.weight": (3072, 768),
            "intermediate.dense.bias": (3072,),
            "output.dense.weight": (768, 3072),
            "output.dense.bias": (768,),
            "output.LayerNorm.weight": (768,),
            "output.LayerNorm.bias": (768,),
        }.items():
            keys[pre + name] = shape
    return keys


@pytest.fixture(scope="module")
def swin_l_meta() -> RAMTagger:
    with torch.device("meta"):
        return ram_swin_tagger(4585)


def test_swin_l_keys_and_shapes_match_rams_layout(swin_l_meta):
    layout = ram_layout()
    buffers = {k for k in layout if k.endswith((".relative_position_index", ".attn_mask"))}
    own = {k: tuple(v.shape) for k, v in swin_l_meta.state_dict().items() if "lora_" not in k}
    assert own == {k: v for k, v in layout.items() if k not in buffers}
    # representative shapes, computed by hand (stage 2: dim 768, 24 heads, 24x24 tokens, 4 windows)
    assert own["visual_encoder.layers.2.blocks.17.attn.qkv.weight"] == (2304, 768)
    assert own["visual_encoder.layers.2.blocks.17.attn.relative_position_bias_table"] == (529, 24)
    assert own["visual_encoder.layers.2.downsample.reduction.weight"] == (1536, 3072)
    assert own["visual_encoder.layers.3.blocks.1.attn.qkv.weight"] == (4608, 1536)
    assert "visual_encoder.layers.3.downsample.reduction.weight" not in own
    assert layout["visual_encoder.layers.0.blocks.1.attn_mask"] == (64, 144, 144)
    assert "visual_encoder.layers.3.blocks.1.attn_mask" not in layout  # 12x12 tokens: one window, no shift
    # the recomputed buffers have the stored shapes
    stages = swin_l_meta.visual_encoder.layers
    assert tuple(stages[0].blocks[1].attn_mask.shape) == (64, 144, 144)
    assert tuple(stages[2].blocks[17].attn_mask.shape) == (4, 144, 144)
    assert stages[3].blocks[1].attn_mask is None and stages[3].blocks[1].shift == 0
    assert tuple(stages[1].blocks[0].attn.relative_position_index.shape) == (144, 144)
    # DAPE's LoRA slots (loralib MergedLinear, r 8, q and v) and the head's (loralib Linear, r 8)
    lora = {k: tuple(v.shape) for k, v in swin_l_meta.state_dict().items() if "lora_" in k}
    assert lora["visual_encoder.layers.2.blocks.17.attn.qkv.lora_A"] == (16, 768)
    assert lora["visual_encoder.layers.2.blocks.17.attn.qkv.lora_B"] == (1536, 8)
    assert lora["tagging_head.encoder.layer.1.crossattention.self.key.lora_A"] == (8, 512)
    assert lora["tagging_head.encoder.layer.1.crossattention.self.query.lora_B"] == (768, 8)
    assert len(lora) == 2 * 24 + 2 * 2 * 2
    # a synthetic checkpoint in RAM's layout (plus captioning keys) passes the loader's checks
    ckpt = {k: torch.empty(v, device="meta") for k, v in layout.items()}
    ckpt["tag_encoder.encoder.layer.0.crossattention.self.query.weight"] = torch.empty(
        768, 768, device="meta"
    )
    ckpt["tagging_head.embeddings.word_embeddings.weight"] = torch.empty(30524, 768, device="meta")
    kept = checked_state(swin_l_meta, ckpt, strict=True, source="ram.pth")
    assert set(kept) == set(own)
    ckpt["visual_encoder.layers.2.blocks.17.attn.qkv.weight"] = torch.empty(1728, 576, device="meta")
    with pytest.raises(CozError, match=r"layers.2.blocks.17.attn.qkv.weight \(1728, 576\) vs \(2304, 768\)"):
        checked_state(swin_l_meta, ckpt, strict=True, source="ram.pth")


def test_swin_l_forward_shapes_on_meta(swin_l_meta):
    x = torch.empty(2, 3, 384, 384, device="meta")
    assert tuple(swin_l_meta.visual_encoder(x).shape) == (2, 145, 1536)  # pooled token + 12x12
    assert tuple(swin_l_meta(x).shape) == (2, 4585)


def tiny_swin(seed: int = 0) -> SwinTransformer:
    """Swin-L's geometry at 384 px (4 stages, window 12, shifted masks in stages 0-2), tiny widths."""
    torch.manual_seed(seed)
    swin = SwinTransformer(img_size=384, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), lora_r=2)
    with torch.no_grad():
        for name, p in swin.named_parameters():
            if "relative_position_bias_table" in name or "lora_B" in name or name.endswith("norm1.weight"):
                p.normal_(0, 0.5)
    return swin.eval()


def tiny_swin_tagger(seed: int = 0, num_tags: int = 6) -> RAMTagger:
    visual = tiny_swin(seed)
    torch.manual_seed(seed + 100)
    tagger = RAMTagger(visual, 64, num_tags, hidden=16, layers=2, heads=2, intermediate=32, lora_r=2)
    with torch.no_grad():
        tagger.label_embed.normal_(0, 1)
    return tagger.eval()


def test_swin_matches_timms_independent_swin():
    from timm.models import swin_transformer as timm_swin

    ours = tiny_swin(seed=3)
    state = ours.state_dict()
    for name, module in ours.named_modules():  # timm has no LoRA: merge it into qkv
        if isinstance(module, LoRALinear):
            state[f"{name}.weight"] = module.weight + module.delta_weight()
    state = {k: v for k, v in state.items() if "lora_" not in k}
    theirs = timm_swin.SwinTransformer(
        img_size=384, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=12, num_classes=0
    ).eval()
    theirs.load_state_dict(timm_swin.checkpoint_filter_fn(state, theirs))
    x = torch.randn(2, 3, 384, 384)
    with torch.no_grad():
        tokens, reference = ours(x), theirs.forward_features(x).flatten(1, 2)  # (B, 144, 64)
    torch.testing.assert_close(tokens[:, 1:], reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tokens[:, 0], reference.mean(1), atol=1e-4, rtol=1e-4)


def test_tiny_swin_tagger_tags_384_views_per_class_threshold():
    tagger = tiny_swin_tagger()
    tags = ["sky", "tree", "fur", "rock", "sand", "wall"]
    thresholds = torch.tensor([0.1, 0.9, 0.5, 0.68, 0.3, 0.99])
    prompts = DAPEPrompts(tagger, tags, thresholds, image_size=384)
    images = views(2)
    x = prompts.preprocess(images)
    assert x.shape == (2, 3, 384, 384)
    with torch.no_grad():
        scores = torch.sigmoid(tagger(x))
    expected = [
        ", ".join(t for t, s, th in zip(tags, row, thresholds, strict=True) if s > th) for row in scores
    ]
    assert prompts.extract(images, [None, None]) == expected
    assert any(expected) and all(set(e.split(", ")) <= set(tags) for e in expected if e)


def test_dape_lora_checkpoint_on_swin_changes_tags_and_loads(tmp_path):
    source, target = tiny_swin_tagger(seed=1), tiny_swin_tagger(seed=2)
    for model in (source, target):  # as built for loading: LoRA B zero, no update before DAPE
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.zero_()
    state = source.state_dict()
    ram = {k: v for k, v in state.items() if "lora_" not in k}
    # what RAM stores besides: window buffers and the captioning branches (ignored by the loader)
    ram["visual_encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(64, 144, 144)
    ram["visual_encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(
        144, 144, dtype=torch.long
    )
    ram["text_decoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(3, 3)
    torch.save({"model": ram}, tmp_path / "ram.pth")
    generator = torch.Generator().manual_seed(7)
    dape = {k: torch.randn(v.shape, generator=generator) * 0.5 for k, v in state.items() if "lora_" in k}
    assert "visual_encoder.layers.1.blocks.0.attn.qkv.lora_A" in dape
    assert "tagging_head.encoder.layer.0.crossattention.self.query.lora_B" in dape
    torch.save(dape, tmp_path / "dape.pth")

    load_ram_state(target, tmp_path / "ram.pth", None)
    x = torch.randn(2, 3, 384, 384)
    with torch.no_grad():
        base = source(x)
        torch.testing.assert_close(target(x), base)
        load_ram_state(target, tmp_path / "ram.pth", tmp_path / "dape.pth")
        adapted = target(x)
        source.load_state_dict(dape, strict=False)
        torch.testing.assert_close(adapted, source(x))
    assert (adapted - base).abs().max() > 1e-3  # the LoRA changes the tag scores
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in dape.items())

    torch.save({"visual_encoder.layers.0.blocks.0.attn.qkv.lora_A": torch.zeros(16, 8)}, tmp_path / "bad.pth")
    with pytest.raises(CozError, match=r"shape mismatch.*qkv.lora_A \(16, 8\) vs \(4, 8\)"):
        load_ram_state(target, None, tmp_path / "bad.pth")


def test_prompt_dape_builds_from_files(compose_zoom, tmp_path, monkeypatch):
    """The ``prompt=dape`` path end to end, with the Swin-L swapped for the tiny config of its class."""
    import coz.prompts.dape as dape_module
    from coz.prompts import build_prompt_extractor

    tags = ["sky", "tree", "fur", "rock", "sand", "wall"]
    source = tiny_swin_tagger(seed=4)
    torch.save(
        {"model": {k: v for k, v in source.state_dict().items() if "lora_" not in k}}, tmp_path / "r.pth"
    )
    torch.save({k: v for k, v in source.state_dict().items() if "lora_" in k}, tmp_path / "d.pth")
    (tmp_path / "tags.txt").write_text("\n".join(tags) + "\n")
    (tmp_path / "th.txt").write_text("0.2\n0.2\n0.68\n0.68\n0.68\n0.68\n")
    monkeypatch.setattr(dape_module, "ram_swin_tagger", lambda n: tiny_swin_tagger(seed=5, num_tags=n))
    cfg = compose_zoom(["prompt=dape", "input=x.png"]).prompt
    cfg.ram_weights, cfg.dape_weights = str(tmp_path / "r.pth"), str(tmp_path / "d.pth")
    cfg.tags, cfg.thresholds, cfg.cache = str(tmp_path / "tags.txt"), str(tmp_path / "th.txt"), "none"
    prompts = build_prompt_extractor(cfg)
    reference = DAPEPrompts(source, tags, load_thresholds(tmp_path / "th.txt", 6), image_size=384)
    images = views(2)
    assert prompts.extract(images, [None, None]) == reference.extract(images, [None, None])

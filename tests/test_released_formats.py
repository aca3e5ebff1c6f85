"""The released checkpoint formats, written out here literally (key names, list orders), so that a
renamed key or a reordered list in the code is caught: the tests must not import the lists they
check from the code that writes them.

OSEDiff-SD2.1 ``osediff.pkl``: the authors' ``OSEDiff_gen.save_model`` keys; the module lists are
their ``initialize_unet`` / ``initialize_vae`` loops over ``named_parameters()`` (so parameter
order, with a VAE name repeated once per pattern it contains), here for the tiny UNet and VAE.
S3Diff ``s3diff.pkl``: the keys of ``S3Diff.save_model`` and the target lists of ``S3Diff.__init__``;
``de_net.pth``: ``DEResNet``'s state dict (two degradations: blur and noise).
"""

from __future__ import annotations

import pytest
import torch

OSEDIFF_KEYS = [
    "vae_lora_encoder_modules",
    "unet_lora_encoder_modules",
    "unet_lora_decoder_modules",
    "unet_lora_others_modules",
    "rank_unet",
    "rank_vae",
    "state_dict_unet",
    "state_dict_vae",
]

_ATTN = [
    "proj_in",
    "transformer_blocks.0.attn1.to_q",
    "transformer_blocks.0.attn1.to_k",
    "transformer_blocks.0.attn1.to_v",
    "transformer_blocks.0.attn1.to_out.0",
    "transformer_blocks.0.attn2.to_q",
    "transformer_blocks.0.attn2.to_k",
    "transformer_blocks.0.attn2.to_v",
    "transformer_blocks.0.attn2.to_out.0",
    "transformer_blocks.0.ff.net.0.proj",
    "transformer_blocks.0.ff.net.2",
    "proj_out",
]
TINY_UNET_ENCODER = [
    "conv_in",
    *(f"down_blocks.0.attentions.0.{n}" for n in _ATTN),
    "down_blocks.0.resnets.0.conv1",
    "down_blocks.0.resnets.0.conv2",
    "down_blocks.0.downsamplers.0.conv",
    "down_blocks.1.resnets.0.conv1",
    "down_blocks.1.resnets.0.conv2",
    "down_blocks.1.resnets.0.conv_shortcut",
]
TINY_UNET_DECODER = [
    *(f"up_blocks.0.resnets.{i}.{c}" for i in (0, 1) for c in ("conv1", "conv2", "conv_shortcut")),
    "up_blocks.0.upsamplers.0.conv",
    *(f"up_blocks.1.attentions.0.{n}" for n in _ATTN),
    *(f"up_blocks.1.attentions.1.{n}" for n in _ATTN),
    *(f"up_blocks.1.resnets.{i}.{c}" for i in (0, 1) for c in ("conv1", "conv2", "conv_shortcut")),
    "conv_out",
]
TINY_UNET_OTHERS = [
    *(f"mid_block.attentions.0.{n}" for n in _ATTN),
    "mid_block.resnets.0.conv1",
    "mid_block.resnets.0.conv2",
    "mid_block.resnets.1.conv1",
    "mid_block.resnets.1.conv2",
]
_TWICE = lambda name: [name, name]  # noqa: E731  "conv" and "conv1"/"conv_in"/... both match
TINY_VAE = [
    *_TWICE("encoder.conv_in"),
    *_TWICE("encoder.down_blocks.0.resnets.0.conv1"),
    *_TWICE("encoder.down_blocks.0.resnets.0.conv2"),
    "encoder.down_blocks.0.downsamplers.0.conv",
    *_TWICE("encoder.down_blocks.1.resnets.0.conv1"),
    *_TWICE("encoder.down_blocks.1.resnets.0.conv2"),
    *_TWICE("encoder.down_blocks.1.resnets.0.conv_shortcut"),
    "encoder.down_blocks.1.downsamplers.0.conv",
    *_TWICE("encoder.down_blocks.2.resnets.0.conv1"),
    *_TWICE("encoder.down_blocks.2.resnets.0.conv2"),
    "encoder.down_blocks.2.downsamplers.0.conv",
    *_TWICE("encoder.down_blocks.3.resnets.0.conv1"),
    *_TWICE("encoder.down_blocks.3.resnets.0.conv2"),
    "encoder.mid_block.attentions.0.to_q",
    "encoder.mid_block.attentions.0.to_k",
    "encoder.mid_block.attentions.0.to_v",
    "encoder.mid_block.attentions.0.to_out.0",
    *_TWICE("encoder.mid_block.resnets.0.conv1"),
    *_TWICE("encoder.mid_block.resnets.0.conv2"),
    *_TWICE("encoder.mid_block.resnets.1.conv1"),
    *_TWICE("encoder.mid_block.resnets.1.conv2"),
    *_TWICE("encoder.conv_out"),
    *["quant_conv"] * 10,  # the authors' elif fires once per pattern of their list of ten
]

S3DIFF_KEYS = [
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
]
S3DIFF_UNET_TARGETS = [
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
]
S3DIFF_VAE_TARGETS = (
    r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"
)
DE_NET_KEYS = {
    *(f"conv_first.{d}.{p}" for d in (0, 1) for p in ("weight", "bias")),
    *(
        f"body.{d}.{b}.conv{c}.{p}"
        for d in (0, 1)
        for b in (0, 1, 2, 4)
        for c in (1, 2)
        for p in ("weight", "bias")
    ),
    *(f"body.{d}.3.{p}" for d in (0, 1) for p in ("weight", "bias")),
    *(f"fc_degree.{d}.{i}.{p}" for d in (0, 1) for i in (0, 2) for p in ("weight", "bias")),
}


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_osediff_pkl_has_the_authors_keys_and_module_lists(tmp_path, one_thread):
    from coz.backbones.diffusion.sd21 import OSEDiffSD21

    OSEDiffSD21.tiny(seed=1).save_released(tmp_path / "osediff.pkl")
    raw = torch.load(tmp_path / "osediff.pkl", map_location="cpu", weights_only=True)
    assert list(raw) == OSEDIFF_KEYS
    assert (raw["rank_unet"], raw["rank_vae"]) == (4, 4)
    assert raw["unet_lora_encoder_modules"] == TINY_UNET_ENCODER
    assert raw["unet_lora_decoder_modules"] == TINY_UNET_DECODER
    assert raw["unet_lora_others_modules"] == TINY_UNET_OTHERS
    assert raw["vae_lora_encoder_modules"] == TINY_VAE
    # state dicts: PEFT's names for every listed module and adapter, plus conv_in trained in full
    lists = {
        "default_encoder": TINY_UNET_ENCODER,
        "default_decoder": TINY_UNET_DECODER,
        "default_others": TINY_UNET_OTHERS,
    }
    expected_unet = {"conv_in.base_layer.weight", "conv_in.base_layer.bias"}
    for adapter, modules in lists.items():
        expected_unet |= {f"{m}.lora_{ab}.{adapter}.weight" for m in modules for ab in "AB"}
    assert set(raw["state_dict_unet"]) == expected_unet
    expected_vae = {f"{m}.lora_{ab}.default_encoder.weight" for m in TINY_VAE for ab in "AB"}
    assert set(raw["state_dict_vae"]) == expected_vae
    assert raw["state_dict_unet"]["down_blocks.0.resnets.0.conv1.lora_A.default_encoder.weight"].shape[0] == 4


def test_s3diff_release_has_the_authors_keys_and_targets(tmp_path, one_thread):
    from coz.backbones.diffusion.s3diff import S3Diff

    S3Diff.tiny(seed=1).save_released(tmp_path / "s3diff.pkl", tmp_path / "de_net.pth")
    sd = torch.load(tmp_path / "s3diff.pkl", map_location="cpu", weights_only=True)
    assert list(sd) == S3DIFF_KEYS
    assert sd["unet_lora_target_modules"] == S3DIFF_UNET_TARGETS
    assert sd["vae_lora_target_modules"] == S3DIFF_VAE_TARGETS
    assert (sd["rank_unet"], sd["rank_vae"]) == (8, 4)
    for key in ("de_mlp", "block_mlp"):
        for part in ("unet", "vae"):
            assert set(sd[f"state_dict_{part}_{key}"]) == {"0.weight", "0.bias"}
    assert set(sd["state_dict_unet_fuse_mlp"]) == set(sd["state_dict_vae_fuse_mlp"]) == {"weight", "bias"}
    assert set(sd["state_embeddings"]) == {"state_dict_vae_block", "state_dict_unet_block"}
    assert all(set(v) == {"weight"} for v in sd["state_embeddings"].values())
    unet_keys, vae_keys = set(sd["state_dict_unet"]), set(sd["state_dict_vae"])
    assert {"conv_in.weight", "conv_in.bias"} <= unet_keys  # conv_in trained in full, no base_layer
    assert "down_blocks.0.attentions.0.proj_in.lora_A.default.weight" in unet_keys
    assert "down_blocks.0.resnets.0.conv1.lora_B.default.weight" in unet_keys
    assert {"encoder.conv_in.lora_A.vae_skip.weight", "encoder.conv_in.lora_B.vae_skip.weight"} <= vae_keys
    assert not any(".lora_" in k and ".default." not in k for k in unet_keys)
    assert all(k.startswith("encoder.") and ".vae_skip." in k for k in vae_keys)
    de_net = torch.load(tmp_path / "de_net.pth", map_location="cpu", weights_only=True)
    assert set(de_net) == DE_NET_KEYS

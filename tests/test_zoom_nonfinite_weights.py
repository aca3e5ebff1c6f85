"""``coz.zoom`` refuses weights holding NaN or Inf (issue 27): a training run that diverged exports
them, and they zoom every photo to black without a word. One line naming the option and the file,
exit 2, for ``backbone.weights`` of every backbone kind and for ``prompt.adapter``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inprocess_cli import run_cli
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "p.png"
    Image.new("RGB", (32, 32), (120, 90, 60)).save(path)
    return path


def poison(path: Path) -> Path:
    """The same file with one value of its first floating tensor set to NaN (its metadata kept)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].reshape(-1)[0] = float("nan")
    save_file(tensors, str(path), metadata=metadata)
    return path


def zoom_refuses(args: list[str], option: str, tmp_path: Path, monkeypatch, capsys) -> None:
    from coz.zoom.tool import main

    status = run_cli(main, [*args, "zoom.steps=1", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(lines) == 1, err[-2000:]
    assert lines[0].startswith(f"error: {option}:") and "NaN" in lines[0], lines[0]
    assert not list((tmp_path / "run").glob("**/*.png"))  # nothing zoomed


def tiny_diffusion_lora(kind: str, path: Path) -> Path:
    if kind == "tiny_sd3":
        from coz.backbones.diffusion.sd3 import OSEDiffSD3

        OSEDiffSD3.tiny().save_lora(path)
    elif kind == "tiny_sd21":
        from coz.backbones.diffusion.sd21 import OSEDiffSD21

        OSEDiffSD21.tiny().save_lora(path)
    else:
        from coz.backbones.diffusion.s3diff import S3Diff

        S3Diff.tiny().save_lora(path)
    return path


@pytest.mark.parametrize("kind", ["tiny_sd3", "tiny_sd21", "tiny_s3diff"])
def test_a_diffusion_lora_with_nan_is_refused(kind, photo, tmp_path, monkeypatch, capsys):
    path = poison(tiny_diffusion_lora(kind, tmp_path / "lora.safetensors"))
    args = [f"input={photo}", f"backbone={kind}", f"backbone.weights={path}"]
    zoom_refuses(args, f"backbone.weights={path}", tmp_path, monkeypatch, capsys)


def test_realesrgan_weights_with_inf_are_refused(photo, tmp_path, monkeypatch, capsys):
    from coz.backbones.cnn.rrdbnet import basicsr_name, rrdbnet

    state = {basicsr_name(k): torch.zeros_like(v) for k, v in rrdbnet().state_dict().items()}
    state["conv_first.weight"][0, 0, 0, 0] = float("inf")
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": state}, path)
    args = [f"input={photo}", "backbone=realesrgan", f"backbone.weights={path}", "backbone.runtime=torch"]
    zoom_refuses(args, f"backbone.weights={path}", tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("kind", ["span", "spandrel"])
def test_span_and_spandrel_weights_with_nan_are_refused(kind, photo, tmp_path, monkeypatch, capsys):
    from spandrel.architectures.SPAN import SPAN

    path = tmp_path / "4xSPAN.safetensors"
    save_file(SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4).state_dict(), str(path))
    poison(path)
    args = [f"input={photo}", f"backbone={kind}", f"backbone.weights={path}"]
    zoom_refuses(args, f"backbone.weights={path}", tmp_path, monkeypatch, capsys)


def test_a_prompt_adapter_with_nan_is_refused(photo, tmp_path, monkeypatch, capsys):
    import copy

    from peft import LoraConfig, get_peft_model

    from coz.prompts.tiny import build_tiny_vlm

    base, _ = build_tiny_vlm()
    folder = tmp_path / "adapter"
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian")
    get_peft_model(copy.deepcopy(base), config).save_pretrained(str(folder))
    poison(folder / "adapter_model.safetensors")
    args = [f"input={photo}", "backbone=bicubic", "prompt=tiny_vlm", f"prompt.adapter={folder}"]
    zoom_refuses(args, f"prompt.adapter={folder}", tmp_path, monkeypatch, capsys)

"""Every weights option reads its file through one safe loader (coz/run/weights.py ``safe_load``): a
damaged file or a pickle that ``torch.load(weights_only=True)`` refuses is one line naming the file and
what is wrong, exit 2 — never a traceback, and never torch's advice to load with ``weights_only=False``
or to allowlist the pickled class (both would let the file run code). Through the command line."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from inprocess_cli import run_cli
from PIL import Image

from coz.errors import CozError

UNSAFE = "not a safe checkpoint: it pickles argparse.Namespace"
CORRUPT = "not a readable safetensors file"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint as many training scripts save it (tensors plus the run's argparse.Namespace: torch's
    weights_only refuses it), under each suffix the options take, and a safetensors file whose header is
    not JSON."""
    folder = tmp_path_factory.mktemp("weights")
    found = {}
    for suffix in ("pth", "pkl", "pt", "ckpt"):
        found[suffix] = folder / f"unsafe.{suffix}"
        torch.save({"params": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1e-4)}, found[suffix])
    found["corrupt"] = folder / "corrupt.safetensors"
    found["corrupt"].write_bytes((16).to_bytes(8, "little") + b'{"a": garbage!!}' + bytes(64))
    adapter = folder / "adapter"  # a PEFT folder whose weights are that pickle
    adapter.mkdir()
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["q_proj"], "task_type": None}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.bin").write_bytes(found["pth"].read_bytes())
    found["adapter"] = adapter
    Image.new("RGB", (64, 64), (90, 140, 60)).save(folder / "photo.png")
    found["photo"] = folder / "photo.png"
    return found


# (backbone or prompt options, the file's key in `files`, how the line starts, what it says)
ZOOM_CASES = {
    "span corrupt": (["backbone=span"], "backbone.weights", "corrupt", "backbone.weights={}: ", CORRUPT),
    "realesrgan pickle": (
        ["backbone=realesrgan"],
        "backbone.weights",
        "pth",
        "backbone.weights={}: ",
        UNSAFE,
    ),
    "spandrel pickle": (["backbone=spandrel"], "backbone.weights", "pth", "backbone.weights={}: ", UNSAFE),
    "sd21 osediff_pkl pickle": (
        ["backbone=tiny_sd21"],
        "backbone.osediff_pkl",
        "pkl",
        "OSEDiff checkpoint {}: ",
        UNSAFE,
    ),
    "sd21 osediff_pkl corrupt": (
        ["backbone=tiny_sd21"],
        "backbone.osediff_pkl",
        "corrupt",
        "OSEDiff checkpoint {}: ",
        CORRUPT,
    ),
    "sd3 released pickles": (
        ["backbone=tiny_sd3", "backbone.vae_encoder={pt}"],
        "backbone.transformer_lora",
        "pkl",
        "transformer LoRA {}: ",
        UNSAFE,
    ),
    "s3diff pretrained_path pickle": (
        ["backbone=tiny_s3diff"],
        "backbone.pretrained_path",
        "pkl",
        "S3Diff weights {}: ",
        UNSAFE,
    ),
    "s3diff de_net_path pickle": (
        ["backbone=tiny_s3diff"],
        "backbone.de_net_path",
        "pth",
        "degradation estimator {}: ",
        UNSAFE,
    ),
    "s3diff de_net_path corrupt": (
        ["backbone=tiny_s3diff"],
        "backbone.de_net_path",
        "corrupt",
        "degradation estimator {}: ",
        CORRUPT,
    ),
    "vlm adapter pickle": (
        ["backbone=bicubic", "prompt=tiny_vlm"],
        "prompt.adapter",
        "adapter",
        "prompt.adapter={}: ",
        UNSAFE,
    ),
}


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), lines
    line = errors[0]
    for advice in ("weights_only", "add_safe_globals", "safe_globals(", "trust"):
        assert advice not in line, line  # torch's way round the refusal is not passed on
    return line


@pytest.mark.parametrize("case", ZOOM_CASES)
def test_a_bad_weights_file_is_one_line_naming_it_through_coz_zoom(
    case, files, tmp_path, monkeypatch, capsys
):
    from coz.zoom.tool import main

    extra, option, key, starts, says = ZOOM_CASES[case]
    path = files[key]
    args = [a.format(**{k: files[k] for k in ("pt",)}) for a in extra]
    args += [f"{option}={path}", f"input={files['photo']}", "zoom.steps=1", "zoom.size=64"]
    args += ["logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    if "prompt=" not in " ".join(extra):
        args.append("prompt=none")
    code = run_cli(main, args, monkeypatch)
    line = one_error_line(capsys)
    assert code == 2, line
    assert line.startswith("error: " + starts.format(path)) and says in line, line


def test_a_pickled_checkpoint_to_resume_is_one_line(files, tmp_path, monkeypatch, capsys):
    """Checkpoints are safetensors only (coz.run.checkpoints): an older pickle .ckpt is never unpickled.
    (coz.train_sr reads resume= the same way, after a longer build.)"""
    from coz.train_grpo.tool import main

    path = files["ckpt"]
    code = run_cli(
        main, ["experiment=smoke", f"resume={path}", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch
    )
    line = one_error_line(capsys)
    assert code == 2 and line.startswith(f"error: resume={path}: ") and CORRUPT in line, line


def test_dape_weights_that_are_pickles_are_one_line(files):
    """prompt=dape builds RAM's Swin-L (200M parameters) before it reads the files: its loader, directly."""
    from coz.prompts.dape import load_ram_state

    for strict, option in ((True, "prompt.ram_weights"), (False, "prompt.dape_weights")):
        paths = (files["pth"], None) if strict else (None, files["pth"])
        with pytest.raises(CozError) as caught:
            load_ram_state(None, *paths)
        message = str(caught.value)
        assert message.startswith(f"{option}={files['pth']}: ") and UNSAFE in message, message
        assert "weights_only" not in message and "\n" not in message

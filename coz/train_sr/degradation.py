"""The device half of the degradations: a whole batch at once, from the draws the loader made.

``realesrgan``: Real-ESRGAN's second-order pipeline (Wang et al., ICCVW 2021, figure 2), with the
numbers of ``conf/train_sr/degradation/realesrgan.yaml`` (docs/fidelity.md, "Training the SR
backbone"), each image with its own draws (as the released dataset degrades it):

    blur(k1) -> resize(s1) -> noise -> JPEG -> blur(k2) -> resize(s2 / 4) -> noise
      -> either [resize to 1/4 + sinc] -> JPEG   or   JPEG -> [resize to 1/4 + sinc]
      -> round to 8 bits (for diffusion backbones: only after the resize back, see :func:`training_view`)

``bicubic``: the HR crop downscaled 4x with antialiased bicubic (MATLAB ``imresize``'s kernel),
rounded to 8 bits: the paper's "4x-specific" second stage.

Both return the low-res batch (B, 3, H/4, W/4) in [0, 1]; diffusion backbones see it resized back
to the crop size (:func:`resize_back`), as OSEDiff trains and as the zoom chain feeds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coz.train_sr.jpeg import jpeg
from coz.train_sr.kernels import RESIZE_MODES

KINDS = ("realesrgan", "bicubic")


def filter2d(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its own kernel: (B, C, H, W), (B, k, k) -> (B, C, H, W), reflect-padded."""
    b, c, h, w = images.shape
    k = kernels.shape[-1]
    mode = "reflect" if min(h, w) > k // 2 else "replicate"  # reflection needs a side longer than the pad
    x = F.pad(images, (k // 2,) * 4, mode=mode)
    weight = kernels.to(images.dtype).repeat_interleave(c, 0).unsqueeze(1)  # (B*C, 1, k, k)
    return F.conv2d(x.reshape(1, b * c, *x.shape[-2:]), weight, groups=b * c).reshape(b, c, h, w)


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=size, mode=mode, **kw)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W), ITU-R 601 luma (torchvision's rgb_to_grayscale)."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def add_noise(
    x: torch.Tensor,
    gaussian: torch.Tensor,
    sigma: torch.Tensor,
    poisson_scale: torch.Tensor,
    gray: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """BasicSR's ``random_add_gaussian_noise_pt`` / ``random_add_poisson_noise_pt`` with the draws
    given per image (all (B,)): Gaussian noise of ``sigma`` where ``gaussian`` is 1, else Poisson
    noise scaled by ``poisson_scale``; grey (one channel, repeated) where ``gray`` is 1. Clipped."""
    b = x.shape[0]
    view = (b, 1, 1, 1)
    g = gray.view(view).to(x.dtype)
    # Gaussian
    colour = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    mono = torch.randn((b, 1, *x.shape[2:]), generator=generator, device=x.device, dtype=x.dtype)
    gauss = (mono * g + colour * (1 - g)) * sigma.view(view).to(x.dtype)
    # Poisson: the image's number of distinct 8-bit values, rounded up to a power of two
    levels = torch.tensor([torch.unique(torch.round(img.clamp(0, 1) * 255)).numel() for img in x])
    levels = (2 ** torch.ceil(torch.log2(levels.float()))).to(x.device, x.dtype).view(view)
    clean = x.clamp(0, 1)
    colour_p = torch.poisson(clean * levels, generator=generator) / levels - clean
    luma = _gray(clean)
    mono_p = torch.poisson(luma * levels, generator=generator) / levels - luma
    poisson = (mono_p * g + colour_p * (1 - g)) * poisson_scale.view(view).to(x.dtype)
    noise = torch.where(gaussian.view(view) > 0.5, gauss, poisson)
    return (x + noise).clamp(0, 1)


def realesrgan_degrade(
    hr: torch.Tensor, draws: dict[str, torch.Tensor], scale: int = 4, round_8bit: bool = True
) -> torch.Tensor:
    """(B, 3, H, W) HR in [0, 1] and the loader's per-image draws -> LR (B, 3, H/scale, W/scale) in
    [0, 1]. Each image is degraded on its own with its own draws, as the released dataset does
    (the intermediate sizes differ between images); ``round_8bit=False`` leaves the 8-bit rounding
    to whoever resizes the LR view back (the released script rounds once, after that)."""
    d = {k: v.to(hr.device) for k, v in draws.items()}
    out = torch.cat(
        [_degrade_one(hr[i : i + 1], {k: v[i : i + 1] for k, v in d.items()}, scale) for i in range(len(hr))]
    )
    return torch.clamp(torch.round(out * 255.0), 0, 255) / 255.0 if round_8bit else out


def _degrade_one(hr: torch.Tensor, d: dict[str, torch.Tensor], scale: int) -> torch.Tensor:
    """One image (1, 3, H, W) through the two stages, unrounded (the draws ``d`` are its own)."""
    h, w = hr.shape[-2:]
    generator = torch.Generator(device=hr.device).manual_seed(int(d["noise_seed"][0]))

    def mode(key: str) -> str:
        return RESIZE_MODES[int(d[key][0])]

    # first degradation; the resize by factor, as released (F.interpolate(scale_factor=s1))
    out = filter2d(hr, d["kernel1"])
    kw = {} if mode("mode1") == "area" else {"align_corners": False}
    out = F.interpolate(out, scale_factor=float(d["scale1"][0]), mode=mode("mode1"), **kw)
    out = add_noise(
        out, d["noise1_gaussian"], d["noise1_sigma"], d["noise1_poisson_scale"], d["noise1_gray"], generator
    )
    out = jpeg(out, d["jpeg1"])
    # second degradation
    out = filter2d(out, d["kernel2"])
    s2 = float(d["scale2"][0])
    out = _interpolate(out, (max(1, int(h / scale * s2)), max(1, int(w / scale * s2))), mode("mode2"))
    out = add_noise(
        out, d["noise2_gaussian"], d["noise2_sigma"], d["noise2_poisson_scale"], d["noise2_gray"], generator
    )
    size = (h // scale, w // scale)
    if float(d["sinc_first"][0]) > 0.5:
        out = filter2d(_interpolate(out, size, mode("mode3")), d["sinc"])
        out = jpeg(out, d["jpeg2"])
    else:
        out = jpeg(out, d["jpeg2"])
        out = filter2d(_interpolate(out, size, mode("mode3")), d["sinc"])
    return out


def training_view(
    hr: torch.Tensor,
    kind: str,
    draws: dict[str, torch.Tensor] | None,
    scale: int = 4,
    back: str | None = None,
    round_8bit: bool = True,
) -> torch.Tensor:
    """What the generator restores from HR crops (B, 3, H, W) in [0, 1]: the LR batch, or with
    ``back`` (a resize mode, ``pil_bicubic``, or ``random``: each image's own ``mode_back`` draw)
    the LR view resized back to (H, W). Real-ESRGAN's view is rounded to 8 bits once, after the
    resize back, as the released script does (``round_8bit``); the bicubic stage's LR is an 8-bit
    picture before it is resized back (and rounded again), as the released bicubic class."""
    if back is None:
        return degrade(hr, kind, draws, scale)
    size = hr.shape[-2:]
    if kind != "realesrgan":
        return resize_back(degrade(hr, kind, draws, scale), size, back, round_8bit)
    lr = realesrgan_degrade(hr, draws, scale, round_8bit=False)
    if back != "random":
        return resize_back(lr, size, back, round_8bit)
    modes = [RESIZE_MODES[int(m)] for m in draws["mode_back"]]
    return torch.cat([resize_back(lr[i : i + 1], size, m, round_8bit) for i, m in enumerate(modes)])


def bicubic_degrade(hr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> antialiased bicubic (B, 3, H/scale, W/scale), rounded to 8 bits."""
    h, w = hr.shape[-2:]
    out = F.interpolate(
        hr, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False
    )
    return torch.clamp(torch.round(out * 255.0), 0, 255) / 255.0


def degrade(
    hr: torch.Tensor, kind: str, draws: dict[str, torch.Tensor] | None, scale: int = 4
) -> torch.Tensor:
    if kind == "realesrgan":
        if draws is None:
            raise ValueError("the realesrgan degradation needs the loader's draws")
        return realesrgan_degrade(hr, draws, scale)
    if kind == "bicubic":
        return bicubic_degrade(hr, scale)
    raise ValueError(f"degradation {kind!r}: use one of {', '.join(KINDS)}")


def resize_back(
    lr: torch.Tensor, size: tuple[int, int], mode: str = "bicubic", round_8bit: bool = False
) -> torch.Tensor:
    """The LR batch resized to the HR size (what a diffusion backbone restores), clamped to [0, 1].

    ``mode="pil_bicubic"``: PIL's bicubic (a = -0.5, torch's antialiased kernel), as the released
    bicubic dataset class resizes up. ``round_8bit``: rounded to 8 bits afterwards, as the released
    training script (its LR image is a uint8 picture before the model sees it)."""
    if mode == "pil_bicubic":
        out = F.interpolate(lr, size=size, mode="bicubic", antialias=True, align_corners=False)
    else:
        out = _interpolate(lr, size, mode)
    out = out.clamp(0, 1)
    return torch.round(out * 255.0) / 255.0 if round_8bit else out

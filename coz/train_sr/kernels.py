"""The data-loader half of the Real-ESRGAN degradation: blur kernels and every random draw, per item.

Real-ESRGAN (Wang et al., ICCVW 2021, section 3) as BasicSR and OSEDiff implement it: kernels are
sampled per image in the dataset (numpy), the degradation itself runs batched on the training
device (:mod:`coz.train_sr.degradation`). Here every draw comes from a numpy ``Generator``
seeded by (seed, item index), so an item's degradation is the same whatever the worker, the
number of processes or a resume.

Draws per item: the first-stage kernel, the second-stage kernel (a pulse when the second blur is
skipped), the final sinc filter (a pulse when skipped), noise type/level/grey flag and JPEG
quality of both stages, and a noise seed. Draws per batch (resize factors and modes, the order of
the last JPEG and sinc filter): all images of a batch must keep one size, so, as in BasicSR's
``RealESRGANModel``, these are shared by a batch; they are drawn from (seed, batch index), so
every item of a batch carries the same values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

KERNEL_SIZE = 21
KERNEL_SIZES = tuple(2 * v + 1 for v in range(3, 11))  # 7, 9, ..., 21 (BasicSR's kernel_range)
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
UPDOWN = ("up", "down", "keep")


def rng_for(seed: int, *index: int) -> np.random.Generator:
    """An independent numpy generator for (seed, index...): the only source of data randomness."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, *(int(i) for i in index)]))


# ---- kernels (BasicSR's basicsr/data/degradations.py, same formulas and parameter draws) ----------
def _grid(size: int) -> np.ndarray:
    ax = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack((xx, yy), axis=-1)  # (k, k, 2)


def _sigma_matrix(sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    d = np.array([[sig_x**2, 0.0], [0.0, sig_y**2]])
    u = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return u @ d @ u.T


def _quadratic(size: int, sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """x^T Sigma^-1 x on the kernel grid, (k, k)."""
    grid = _grid(size)
    inverse = np.linalg.inv(_sigma_matrix(sig_x, sig_y, theta))
    return np.sum((grid @ inverse) * grid, axis=2)


def _beta(rng: np.random.Generator, beta_range) -> float:
    # half the time below 1, half above (BasicSR's random_bivariate_generalized_Gaussian / plateau)
    if rng.uniform() < 0.5:
        return rng.uniform(beta_range[0], 1.0)
    return rng.uniform(1.0, beta_range[1])


def mixed_kernel(rng: np.random.Generator, size: int, cfg: dict[str, Any]) -> np.ndarray:
    """One of the six Gaussian-family kernels (``kernel_list`` / ``kernel_prob``), normalised."""
    kind = str(cfg["kernel_list"][rng.choice(len(cfg["kernel_list"]), p=_probs(cfg["kernel_prob"]))])
    if kind not in KERNEL_TYPES:
        raise ValueError(f"kernel type {kind!r}: use {', '.join(KERNEL_TYPES)}")
    isotropic = not kind.endswith("aniso")
    sig_x = rng.uniform(*cfg["sigma"])
    if isotropic:
        sig_y, theta = sig_x, 0.0
    else:
        sig_y, theta = rng.uniform(*cfg["sigma"]), rng.uniform(-math.pi, math.pi)
    q = _quadratic(size, sig_x, sig_y, theta)
    if kind.startswith("generalized"):
        kernel = np.exp(-0.5 * np.power(q, _beta(rng, cfg["betag_range"])))
    elif kind.startswith("plateau"):
        kernel = np.reciprocal(np.power(q, _beta(rng, cfg["betap_range"])) + 1)
    else:
        kernel = np.exp(-0.5 * q)
    return kernel / kernel.sum()


def sinc_kernel(cutoff: float, size: int) -> np.ndarray:
    """The circular low-pass (2-D sinc) kernel of BasicSR's ``circular_lowpass_kernel``."""
    from scipy import special

    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.sqrt((x - c) ** 2 + (y - c) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    kernel[size // 2, size // 2] = cutoff**2 / (4 * np.pi)
    return kernel / kernel.sum()


def pad_kernel(kernel: np.ndarray, size: int = KERNEL_SIZE) -> np.ndarray:
    pad = (size - kernel.shape[0]) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def pulse(size: int = KERNEL_SIZE) -> np.ndarray:
    """The identity kernel: convolving with it changes nothing."""
    kernel = np.zeros((size, size))
    kernel[size // 2, size // 2] = 1.0
    return kernel


def blur_kernel(rng: np.random.Generator, cfg: dict[str, Any]) -> np.ndarray:
    """A stage's blur kernel: size in 7..21, a sinc with ``sinc_prob`` else a mixed kernel, padded to 21."""
    size = int(rng.choice(KERNEL_SIZES))
    if rng.uniform() < cfg["sinc_prob"]:
        cutoff = rng.uniform(np.pi / 3, np.pi) if size < 13 else rng.uniform(np.pi / 5, np.pi)
        kernel = sinc_kernel(cutoff, size)
    else:
        kernel = mixed_kernel(rng, size, cfg)
    return pad_kernel(kernel)


def _probs(p) -> np.ndarray:
    p = np.asarray(list(p), dtype=np.float64)
    return p / p.sum()


def _noise(rng: np.random.Generator, cfg: dict[str, Any]) -> dict[str, float]:
    """One stage's noise draw: Gaussian (sigma in 0..255 units) or Poisson (scale), grey or colour."""
    gaussian = rng.uniform() < cfg["gaussian_noise_prob"]
    return {
        "gaussian": float(gaussian),
        "sigma": rng.uniform(*cfg["noise_range"]) / 255.0,
        "poisson_scale": rng.uniform(*cfg["poisson_scale_range"]),
        "gray": float(rng.uniform() < cfg["gray_noise_prob"]),
    }


def _resize(rng: np.random.Generator, probs, scale_range) -> tuple[float, int]:
    updown = UPDOWN[rng.choice(3, p=_probs(probs))]
    if updown == "up":
        scale = rng.uniform(1.0, scale_range[1])
    elif updown == "down":
        scale = rng.uniform(scale_range[0], 1.0)
    else:
        scale = 1.0
    return scale, int(rng.integers(len(RESIZE_MODES)))


def item_draws(seed: int, index: int, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every random choice of one item's Real-ESRGAN degradation, as tensors (collated by the loader).

    ``cfg`` is the ``degradation`` config as a plain dict (conf/train_sr/degradation/realesrgan.yaml).
    """
    rng = rng_for(seed, 1, index)
    first, second = cfg["first"], cfg["second"]
    kernel1 = blur_kernel(rng, first["kernel"])
    kernel2 = blur_kernel(rng, second["kernel"])
    if rng.uniform() >= second["blur_prob"]:
        kernel2 = pulse()
    if rng.uniform() < cfg["final_sinc_prob"]:
        size = int(rng.choice(KERNEL_SIZES))
        final = pad_kernel(sinc_kernel(rng.uniform(np.pi / 3, np.pi), size))
    else:
        final = pulse()
    noise1, noise2 = _noise(rng, first), _noise(rng, second)
    out = {
        "kernel1": torch.from_numpy(kernel1).float(),  # (21, 21)
        "kernel2": torch.from_numpy(kernel2).float(),
        "sinc": torch.from_numpy(final).float(),
        "jpeg1": torch.tensor(rng.uniform(*first["jpeg_range"])),
        "jpeg2": torch.tensor(rng.uniform(*second["jpeg_range"])),
        "noise_seed": torch.tensor(int(rng.integers(2**62)), dtype=torch.int64),
    }
    for name, noise in (("noise1", noise1), ("noise2", noise2)):
        for key, value in noise.items():
            out[f"{name}_{key}"] = torch.tensor(float(value))
    out.update(resize_draws(seed, index, cfg))
    return {k: v.float() if v.dtype == torch.float64 else v for k, v in out.items()}


def resize_draws(seed: int, index: int, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One item's resize factors and modes, and the order of the last two operations ([resize back
    + sinc] then JPEG, or JPEG then [resize back + sinc]): per image, as the released dataset
    degrades each image on its own (BasicSR's batched trainer shares them across a batch)."""
    rng = rng_for(seed, 2, index)
    first, second = cfg["first"], cfg["second"]
    scale1, mode1 = _resize(rng, first["resize_prob"], first["resize_range"])
    scale2, mode2 = _resize(rng, second["resize_prob"], second["resize_range"])
    return {
        "scale1": torch.tensor(scale1),
        "mode1": torch.tensor(mode1),
        "scale2": torch.tensor(scale2),
        "mode2": torch.tensor(mode2),
        "sinc_first": torch.tensor(float(rng.uniform() < 0.5)),
        "mode3": torch.tensor(int(rng.integers(len(RESIZE_MODES)))),
        "mode_back": torch.tensor(int(rng.integers(len(RESIZE_MODES)))),
    }

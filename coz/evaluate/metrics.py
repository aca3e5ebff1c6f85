"""Image-quality metrics by pyiqa name, scored one image at a time (inputs in [0, 1]).

No-reference metrics score every scale. Full-reference ones score a scale only where the source
photo holds the ground truth: the region the view shows, taken from the full-resolution source,
is at least ``gt_min_ratio * size`` pixels wide (then resized to the view's size with LANCZOS).
A failed image, or a metric that fails or returns a non-finite value on it, gets the metric's worst
value (the paper's rule: NIQE 100, the others 0) and is counted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

from coz.errors import CozError

log = logging.getLogger(__name__)

OFFLINE_HINT = "offline, use metrics=offline (NIQE, PIQE, PSNR, SSIM need no download)"


def column(name: str) -> str:
    """Result-column name of a pyiqa metric: ``maniqa-pipal`` -> ``maniqa_pipal``."""
    return name.replace("-", "_")


class Metrics:
    """The configured pyiqa metrics on one device."""

    def __init__(
        self,
        names: list[str],
        full_reference: list[str] = (),
        device: torch.device | str = "cpu",
        seed: int = 123,
        worst: Mapping[str, float] | None = None,
        gt_min_ratio: float = 1.0,
    ) -> None:
        self.device = torch.device(device)
        self.seed = seed
        self.gt_min_ratio = gt_min_ratio
        self.no_reference = {name: self._create(name, "NR") for name in names}
        self.full_reference = {name: self._create(name, "FR") for name in full_reference}
        self.lower_better = {
            column(n): bool(m.lower_better) for n, m in {**self.no_reference, **self.full_reference}.items()
        }
        worst = {column(k): float(v) for k, v in (worst or {}).items()}
        self.worst = {c: worst.get(c, 100.0 if low else 0.0) for c, low in self.lower_better.items()}

    @property
    def no_reference_columns(self) -> list[str]:
        return [column(n) for n in self.no_reference]

    @property
    def columns(self) -> list[str]:
        return [column(n) for n in (*self.no_reference, *self.full_reference)]

    def _create(self, name: str, mode: str):
        import pyiqa
        from pyiqa.default_model_configs import DEFAULT_CONFIGS

        if name not in DEFAULT_CONFIGS:
            raise CozError(f"metric {name!r}: not a pyiqa metric (see pyiqa.list_models())")
        kind = DEFAULT_CONFIGS[name].get("metric_mode")
        if kind != mode:
            where = "metrics.names" if mode == "NR" else "metrics.full_reference"
            raise CozError(f"metric {name!r} is {kind}, not {mode}: list it under the other key than {where}")
        options = {}
        if name == "niqe":
            from coz.evaluate.niqe_params import find_params

            options["pretrained_model_path"] = str(find_params())
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pyiqa prints download progress
                return pyiqa.create_metric(name, device=self.device, **options)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise CozError(
                f"metric {name!r}: pyiqa could not load its weights ({str(err).strip()[:120]}); "
                f"online, pyiqa downloads them to ~/.cache/torch/hub/pyiqa; {OFFLINE_HINT}"
            ) from err

    def score(self, image: Image.Image, reference: Image.Image | None = None) -> tuple[dict[str, float], int]:
        """Scores of one image (``reference``: its ground truth, or None); and how many metrics failed."""
        x = _to_tensor(image).to(self.device)
        scores, failures = {}, 0
        for name, metric in self.no_reference.items():
            scores[column(name)], failed = self._run(name, metric, x)
            failures += failed
        for name, metric in self.full_reference.items():
            if reference is None:
                scores[column(name)] = math.nan  # no ground truth at this scale: not scored, not failed
                continue
            ref = _to_tensor(reference.resize(image.size, Image.LANCZOS)).to(self.device)
            scores[column(name)], failed = self._run(name, metric, x, ref)
            failures += failed
        return scores, failures

    def _run(self, name: str, metric, *inputs: torch.Tensor) -> tuple[float, int]:
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(self.seed)  # random-crop metrics (MANIQA): same crops for every image
                value = float(metric(*inputs).mean())
        except torch.cuda.OutOfMemoryError:
            raise  # not the image's fault: the batch is retried one image at a time
        except Exception as err:  # a metric that breaks on one image must not stop the evaluation
            log.warning("metric %s failed: %s", name, str(err)[:200])
            return self.worst[column(name)], 1
        if not math.isfinite(value):
            log.warning("metric %s returned %s", name, value)
            return self.worst[column(name)], 1
        return value, 0


def ground_truth(source: Image.Image, scale: int, size: int, min_ratio: float) -> Image.Image | None:
    """The region of ``source`` that the scale-``scale`` view of its x0 shows, when the source has
    at least ``min_ratio * size`` pixels across it; else None.

    x0 is ``source`` resized so its short side is ``size``, then center-cropped (coz.images.prepare_x0),
    so the view covers the center 1/``scale`` of x0's exact source box (about ``short / scale`` source
    pixels, square; the chain's own crops are exact for powers of 4 up to 512x).
    """
    from coz.images import x0_source_box

    left, top, right, bottom = x0_source_box(source.width, source.height, size)
    side_x, side_y = (right - left) / scale, (bottom - top) / scale
    if min(side_x, side_y) < min_ratio * size:
        return None
    cx, cy = (left + right) / 2, (top + bottom) / 2
    box = (cx - side_x / 2, cy - side_y / 2, cx + side_x / 2, cy + side_y / 2)
    return source.resize((size, size), Image.LANCZOS, box=box)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()

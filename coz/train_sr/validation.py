"""Validation of ``coz.train_sr``: a few fixed images restored every ``val.every_n_steps`` steps and
scored, so the dashboards show the backbone getting better (or not), not just its losses.

The images are the first ``val.images`` files of ``val.source`` (default: the first data source),
center-cropped to ``data.crop`` and degraded by the deterministic bicubic 4x (the second stage's
degradation: the same LR every time, so the curves compare like with like). Each is restored with its
prompt (the training prompts' tagger, or none) one at a time; ``val.metrics`` (pyiqa names) score
SR against HR (full-reference ones such as psnr and lpips) or SR alone (niqe). A metric that cannot
be built here (LPIPS needs downloaded weights) is skipped with one warning; the others go on.

Logged on the first process: ``val/<metric>`` (mean over the images; returned, for the step's row),
and one picture per image (LR as the backbone saw it, SR, HR side by side, captioned with its prompt) to
``images/val_<step>.png`` and W&B.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from coz.errors import CozError

log = logging.getLogger("coz.train_sr")


def center_crop(image: Image.Image, size: int) -> Image.Image | None:
    """The ``size`` x ``size`` center of ``image``; None when the image is smaller."""
    w, h = image.size
    if min(w, h) < size:
        return None
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


class Validation:
    """The fixed validation images and their metrics (built on the first process)."""

    def __init__(self, cfg, device: torch.device) -> None:
        from coz.train_sr.data import list_source

        v = cfg.val
        source = v.source or cfg.data.sources[0].path  # the schema: at least one source
        size, count = cfg.data.crop, v.images
        crops = []
        for path in list_source(source):
            try:
                with Image.open(path) as img:
                    crop = center_crop(img.convert("RGB"), size)
            except OSError:
                continue
            if crop is not None:
                crops.append(crop)
            if len(crops) == count:
                break
        if not crops:
            raise CozError(f"val.source={source}: no readable image of at least {size} px")
        self.hr = torch.stack([torch.from_numpy(np.array(c)).permute(2, 0, 1) for c in crops]).float() / 255
        self.scale = cfg.degradation.scale
        self.device = device
        self.metrics = {}
        for name in v.metrics:
            try:
                self.metrics[name] = _create_metric(name, device)
            except Exception as err:  # noqa: BLE001 - one missing metric must not stop training
                log.warning("val: metric %s skipped (%s)", name, str(err).splitlines()[0][:200])

    @torch.no_grad()
    def run(self, gen, prompts, step: int, run_dir: Path, loggers) -> dict[str, float]:
        """Restore, score and log the images with generator ``gen`` (prompts: the tagger or None)."""
        from coz.run.atomic import write_atomic
        from coz.train_sr.degradation import degrade, resize_back

        scores: dict[str, list[float]] = {name: [] for name in self.metrics}
        pictures, captions = [], []
        for i in range(self.hr.shape[0]):
            hr = self.hr[i : i + 1].to(self.device)
            lr = degrade(hr, "bicubic", None, self.scale)
            x = resize_back(lr, hr.shape[-2:], "bicubic") if gen.takes_upsampled_input else lr
            prompt = prompts(hr)[0] if prompts is not None else ""
            sr, _, _ = gen.restore(x, [prompt])
            sr = ((sr.float().clamp(-1, 1) + 1) / 2).clamp(0, 1)
            for name, metric in self.metrics.items():
                try:
                    value = float(metric(sr, hr) if metric.metric_mode == "FR" else metric(sr))
                except Exception:  # noqa: BLE001 - e.g. NIQE on crops too small for its patches
                    value = math.nan
                if math.isfinite(value):
                    scores[name].append(value)
            view = F.interpolate(x.float(), size=hr.shape[-2:], mode="nearest") if x.shape != hr.shape else x
            pictures.append(_side_by_side([view, sr, hr]))
            captions.append(f"LR | SR | HR: {prompt}" if prompt else "LR | SR | HR")
        means = {f"val/{k}": sum(v) / len(v) for k, v in scores.items() if v}
        for name in [k for k, v in scores.items() if not v]:  # e.g. NIQE on crops smaller than its patches
            log.warning("val: metric %s gave no finite value on these images; dropped", name)
            del self.metrics[name]
        sheet = _stack(pictures)
        write_atomic(run_dir / "images" / f"val_{step:07d}.png", lambda p: sheet.save(p, format="PNG"))
        for logger in loggers:  # the scores go into the step's own row (the caller logs them)
            if hasattr(logger, "log_image"):
                logger.log_image("val/lr_sr_hr", images=pictures, step=step, caption=captions)
        return means


def _create_metric(name: str, device: torch.device):
    import contextlib
    import io

    import pyiqa

    options = {}
    if name == "niqe":
        from coz.evaluate.niqe_params import find_params

        options["pretrained_model_path"] = str(find_params())
    with contextlib.redirect_stdout(io.StringIO()):
        return pyiqa.create_metric(name, device=device, **options)


def _side_by_side(images: list[torch.Tensor]) -> Image.Image:
    row = torch.cat([im[0].float().cpu() for im in images], dim=-1)  # (3, S, 3S)
    return Image.fromarray((row.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _stack(pictures: list[Image.Image]) -> Image.Image:
    sheet = Image.new("RGB", (pictures[0].width, sum(p.height for p in pictures)))
    top = 0
    for p in pictures:
        sheet.paste(p, (0, top))
        top += p.height
    return sheet

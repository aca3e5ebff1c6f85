"""Metrics by pyiqa name, NIQE's offline calibration, the failure rule and ground truth."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coz.errors import CozError
from coz.evaluate.metrics import Metrics, column, ground_truth

# pyiqa's published NIQE values for its shipped calibration images (ResultsCalibra/calibration_summary).
PYIQA_NIQE = {"I03": 15.6538, "I04": 3.6549, "I06": 3.2342, "I08": 3.1921, "I19": 9.0722}


def calibration_images() -> dict[str, Path]:
    import pyiqa

    folder = Path(pyiqa.__file__).resolve().parent.parent / "ResultsCalibra" / "dist_dir"
    return {p.stem: p for p in sorted(folder.glob("*.bmp"))}


def test_niqe_reproduces_pyiqa_calibration(niqe_params):
    images = calibration_images()
    assert set(images) == set(PYIQA_NIQE), "pyiqa's calibration images are missing from its wheel"
    metrics = Metrics(["niqe"])
    for name, published in PYIQA_NIQE.items():
        scores, failures = metrics.score(Image.open(images[name]).convert("RGB"))
        assert failures == 0
        assert abs(scores["niqe"] - published) < 0.01, (name, scores["niqe"], published)


def test_unknown_and_misplaced_metrics_are_clear_errors(niqe_params):
    with pytest.raises(CozError, match="not a pyiqa metric"):
        Metrics(["niqee"])
    with pytest.raises(CozError, match="FR, not NR"):
        Metrics(["psnr"])


def test_a_failing_metric_scores_its_worst_value_and_is_counted(niqe_params, photo, monkeypatch):
    metrics = Metrics(["niqe", "piqe"], ["psnr"])
    assert metrics.worst == {"niqe": 100.0, "piqe": 100.0, "psnr": 0.0}
    broken = metrics.no_reference["piqe"]
    monkeypatch.setattr(broken, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    scores, failures = metrics.score(photo.resize((128, 128)), reference=photo.resize((128, 128)))
    assert failures == 1 and scores["piqe"] == 100.0
    assert math.isfinite(scores["niqe"]) and scores["niqe"] < 100
    assert scores["psnr"] > 40  # same image as its reference


def test_full_reference_metrics_only_where_ground_truth_exists(niqe_params):
    metrics = Metrics([], ["psnr"])
    scores, failures = metrics.score(Image.new("RGB", (64, 64)), reference=None)
    assert math.isnan(scores["psnr"]) and failures == 0


def test_ground_truth_is_the_region_the_view_shows():
    ramp = np.tile(np.arange(2048, dtype=np.float64) / 2048 * 255, (2048, 1)).astype(np.uint8)
    source = Image.fromarray(ramp).convert("RGB")  # brightness = x position
    gt = ground_truth(source, scale=4, size=512, min_ratio=1.0)  # center 512 of 2048: x in [768, 1280)
    row = np.asarray(gt)[256, :, 0].astype(float)
    assert abs(row[0] - 768 / 8) < 2 and abs(row[-1] - 1279 / 8) < 2
    assert ground_truth(source, scale=16, size=512, min_ratio=1.0) is None  # only 128 source px


def test_column_names():
    assert column("maniqa-pipal") == "maniqa_pipal"


def test_random_crop_metrics_are_seeded(niqe_params, photo, monkeypatch):
    import torch

    metrics = Metrics(["piqe"], seed=7)
    # stand-in for MANIQA's random crops: a score drawn from torch's generator
    monkeypatch.setattr(metrics.no_reference["piqe"], "forward", lambda x: torch.rand(1))
    a, _ = metrics.score(photo)
    torch.rand(5)  # whatever else consumed random numbers in between
    b, _ = metrics.score(photo)
    assert a == b
    other = Metrics(["piqe"], seed=8)  # another seed, other crops
    monkeypatch.setattr(other.no_reference["piqe"], "forward", lambda x: torch.rand(1))
    assert other.score(photo)[0] != a


def test_ground_truth_follows_x0s_exact_window_on_awkward_sizes():
    """x0's long side is truncated (2051 x 1537 -> 683 x 512, crop from 85), so its window is not the
    source's exact center: at scale 1 the ground truth must be x0's own pixels, not a shifted copy
    (on this texture, the center-based box scored 17 dB against x0)."""
    from coz.images import prepare_x0

    texture = np.random.default_rng(0).integers(0, 256, (400, 520, 3), dtype=np.uint8)
    source = Image.fromarray(texture).resize((2051, 1537), Image.BICUBIC)
    x0, _ = prepare_x0(source, 512)
    gt = np.asarray(ground_truth(source, scale=1, size=512, min_ratio=1.0), dtype=float)
    mse = ((gt - np.asarray(x0, dtype=float)) ** 2).mean()
    assert mse < 1.0  # the same window resampled the same way (> 50 dB)

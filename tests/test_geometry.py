"""The zoom geometry of docs/fidelity.md, "The zoom chain"."""

import numpy as np
import pytest
import torch
from PIL import Image

from coz.geometry import center_box, center_crop, to_pil, to_tensor, zoom_view


def test_center_box_matches_official_arithmetic():
    assert center_box(512, 4) == (192, 192, 320, 320)
    assert center_box(512, 16) == (240, 240, 272, 272)
    assert center_box(512, 256) == (255, 255, 257, 257)
    with pytest.raises(ValueError, match="leaves nothing"):
        center_box(512, 1024)


def test_center_crop_and_view(photo):
    x0 = photo.resize((512, 512))
    crop = center_crop(x0, 4)
    assert crop.size == (128, 128)
    assert np.array_equal(np.asarray(crop), np.asarray(x0)[192:320, 192:320])
    view = zoom_view(x0, 4, 512)
    assert view.size == (512, 512)
    assert np.array_equal(np.asarray(view), np.asarray(crop.resize((512, 512), Image.BICUBIC)))
    with pytest.raises(ValueError, match="square"):
        center_crop(photo.resize((300, 200)), 4)


def test_tensor_round_trip_is_exact(photo):
    images = [photo.resize((64, 64)), photo.resize((64, 64)).rotate(90)]
    batch = to_tensor(images)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    for a, b in zip(images, to_pil(batch), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_to_pil_rounds_and_clamps():
    t = torch.tensor([[[[0.5 / 255, 1.6 / 255, -0.2, 1.3]]]]).expand(1, 3, 1, 4)
    (img,) = to_pil(t)
    assert list(np.asarray(img)[0, :, 0]) == [0, 2, 0, 255]

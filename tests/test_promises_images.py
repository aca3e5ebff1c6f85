"""Input promises checked against oracles written here, not borrowed from the code under test:
EXIF orientation against the EXIF specification on a picture of known colours, horizontal flips
of training crops on pictures that are not symmetric, and prepare_x0's own size check."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from coz.images import load_rgb, prepare_x0
from coz.train_sr.data import TrainingImages

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def quadrants(width: int = 40, height: int = 20) -> np.ndarray:
    """Stored pixels: red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((height, width, 3), np.uint8)
    a[: height // 2, : width // 2] = RED
    a[: height // 2, width // 2 :] = GREEN
    a[height // 2 :, : width // 2] = BLUE
    a[height // 2 :, width // 2 :] = WHITE
    return a


# What a viewer shows for each EXIF orientation (TIFF/EXIF 2.3, tag 0x0112), from the stored rows.
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # row 0 on the left, column 0 at the top
    6: lambda a: np.rot90(a, k=-1),  # rotated 90 clockwise: row 0 on the right
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # row 0 on the right, column 0 at the bottom
    8: lambda a: np.rot90(a, k=1),  # rotated 90 anticlockwise: row 0 on the left
}


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_exif_orientation_shows_what_a_viewer_shows(tmp_path, orientation):
    stored = quadrants()
    path = tmp_path / f"o{orientation}.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif)
    image, notes = load_rgb(path)
    expected = DISPLAYED[orientation](stored)
    np.testing.assert_array_equal(np.asarray(image), expected)
    assert any(f"EXIF orientation {orientation}" in n for n in notes) == (orientation != 1)


def test_exif_orientation_in_a_jpeg_keeps_its_colours(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(quadrants(64, 32)).save(path, exif=exif, quality=95)
    a = np.asarray(load_rgb(path)[0]).astype(int)
    assert a.shape == (64, 32, 3)
    # rotated clockwise: the stored top-left (red) is now top-right, blue top-left
    for (row, col), colour in {(8, 24): RED, (8, 8): BLUE, (56, 24): GREEN, (56, 8): WHITE}.items():
        assert np.abs(a[row, col] - colour).max() < 40, (row, col, a[row, col])


# ------------------------------------------------------------------------------------ training flips
@pytest.fixture()
def gradients(tmp_path):
    """A picture whose red grows to the right and green grows downwards: every flip shows."""
    y, x = np.mgrid[0:64, 0:64]
    pixels = np.stack([x * 4, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "g.png")
    return tmp_path


def directions(data: TrainingImages, n: int = 80) -> tuple[list[bool], list[bool]]:
    """For n items: is red decreasing left to right (h-flipped), is green decreasing downwards."""
    hs, vs = [], []
    for i in range(n):
        hr = data[i]["hr"].numpy().astype(int)  # (3, crop, crop)
        hs.append(bool(hr[0, 0, 0] > hr[0, 0, -1]))
        vs.append(bool(hr[1, 0, 0] > hr[1, -1, 0]))
    return hs, vs


def test_training_crops_are_flipped_left_right_about_half_the_time(gradients):
    hs, vs = directions(TrainingImages([{"path": gradients}], crop=32, seed=0))
    assert 0.3 < np.mean(hs) < 0.7
    assert not any(vs)  # no vertical flips by default (the OSEDiff recipe)
    hs, vs = directions(TrainingImages([{"path": gradients}], crop=32, seed=0, hflip=False, vflip=True))
    assert not any(hs) and 0.3 < np.mean(vs) < 0.7


def test_a_flipped_crop_is_the_mirror_of_a_window_of_the_source(gradients):
    source = np.asarray(Image.open(gradients / "g.png"))
    data = TrainingImages([{"path": gradients}], crop=32, seed=1)
    for i in range(20):
        hr = data[i]["hr"].permute(1, 2, 0).numpy()
        unflipped = hr[:, ::-1] if hr[0, 0, 0] > hr[0, -1, 0] else hr
        top, left = int(unflipped[0, 0, 1]) // 4, int(unflipped[0, 0, 0]) // 4
        np.testing.assert_array_equal(unflipped, source[top : top + 32, left : left + 32])


# -------------------------------------------------------------------------------------------- x0
@pytest.mark.parametrize("size", [0, -512])
def test_prepare_x0_refuses_a_bad_size_itself(size):
    with pytest.raises(ValueError, match=f"size must be positive, got {size}"):
        prepare_x0(Image.new("RGB", (600, 600)), size)

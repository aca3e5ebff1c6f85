"""Geometry of the zoom strip and animation on a synthetic chain, and atomic GIF/PNG writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from coz.geometry import center_box
from coz.viz import save_gif, save_png, zoom_animation, zoom_strip

RED = (255, 0, 0)


def _smooth_image(side: int, seed: int = 0) -> Image.Image:
    """Smooth colourful image (low-frequency waves, values in 20..235, so never pure red)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    chans = []
    for _ in range(3):
        fx, fy, ph = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
        chans.append(np.sin(2 * np.pi * (fx * xx + fy * yy) + ph))
    arr = 127.5 + 107.5 * np.stack(chans, axis=-1)
    return Image.fromarray(arr.round().astype(np.uint8))


def _chain(side: int = 256, steps: int = 3, factor: int = 4) -> list[Image.Image]:
    """x0 smooth; x_i = exact center 1/factor crop of x_{i-1}, nearest-upscaled back to ``side``."""
    states = [_smooth_image(side)]
    lo, _, hi, _ = center_box(side, factor)
    for _ in range(steps):
        states.append(states[-1].crop((lo, lo, hi, hi)).resize((side, side), Image.Resampling.NEAREST))
    return states


def _mae(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


@pytest.mark.parametrize("tile", [None, 128])
def test_strip_layout_and_boxes(tile):
    states = _chain(side=256, steps=3)
    gap, band = 6, 24
    strip = zoom_strip(states, tile=tile, gap=gap, label_height=band, box_color=RED)
    side = tile or 256
    n = len(states)
    assert strip.size == (n * side + (n - 1) * gap, side + band)
    arr = np.asarray(strip)
    lo, _, hi, _ = center_box(side, 4)
    for i in range(n):
        x0 = i * (side + gap)
        panel = arr[:side, x0 : x0 + side]
        corners_and_edges = [(lo, lo), (hi - 1, hi - 1), (lo, hi - 1), (hi - 1, lo), ((lo + hi) // 2, lo)]
        if i < n - 1:
            for y, x in corners_and_edges:
                assert tuple(panel[y, x]) == RED, (i, y, x)
            # just outside the box and its interior keep the image
            assert tuple(panel[lo - 1, (lo + hi) // 2]) != RED
            assert tuple(panel[(lo + hi) // 2, (lo + hi) // 2]) != RED
        else:
            assert not np.all(panel == RED, axis=-1).any(), "last panel must carry no box or lines"


def test_strip_default_height_and_labels():
    states = _chain(side=128, steps=2)
    strip = zoom_strip(states)
    assert strip.size == (3 * 128 + 2 * 8, 128 + max(20, 128 // 8))
    band = np.asarray(strip)[128:]
    assert (band < 100).any(), "label text should be drawn in the band"
    with pytest.raises(ValueError):
        zoom_strip(states, labels=["a", "b"])


def test_animation_frames_geometry():
    states = _chain(side=256, steps=3)
    fps, hold = 8, 3
    frames = zoom_animation(states, frames_per_step=fps, hold=hold)
    n = len(states) - 1
    assert len(frames) == n * fps + 1 + 2 * hold
    assert all(f.size == (256, 256) for f in frames)
    assert np.array_equal(np.asarray(frames[0]), np.asarray(states[0]))
    assert np.array_equal(np.asarray(frames[-1]), np.asarray(states[-1]))
    # Mid-step of step 1 (t = 0.5): view side 256 * 4**-0.5 = 128 px, i.e. x0[64:192] resized.
    mid = frames[hold + fps // 2]
    expected = states[0].crop((64, 64, 192, 192)).resize((256, 256), Image.Resampling.BICUBIC)
    assert _mae(mid, expected) < 2.0
    # Same for step 2 (the view is a crop of x1); the chain is exact, so it also matches x0 closely.
    mid2 = frames[hold + fps + fps // 2]
    assert _mae(mid2, states[1].crop((64, 64, 192, 192)).resize((256, 256), Image.Resampling.BICUBIC)) < 2.0
    # Crossfade frames (x_i pasted into its place) must still agree with the plain zoom of x_{i-1}.
    late = frames[hold + fps - 1]  # t = 7/8, inside the crossfade
    t = (fps - 1) / fps
    view = 256 * 4.0**-t
    left = (256 - view) / 2
    plain = states[0].resize((256, 256), Image.Resampling.BICUBIC, box=(left, left, left + view, left + view))
    assert _mae(late, plain) < 3.0
    # Step boundaries are continuous: the first frame of step 2 is x1.
    assert np.array_equal(np.asarray(frames[hold + fps]), np.asarray(states[1]))


def test_animation_resized_and_default_hold():
    states = _chain(side=256, steps=2)
    frames = zoom_animation(states, frames_per_step=6, size=64)
    assert len(frames) == 2 * 6 + 1 + 2 * 3
    assert all(f.size == (64, 64) for f in frames)
    assert _mae(frames[0], states[0].resize((64, 64), Image.Resampling.BICUBIC)) < 1.0
    assert _mae(frames[-1], states[-1].resize((64, 64), Image.Resampling.BICUBIC)) < 1.0


def test_save_gif_round_trip_is_atomic(tmp_path):
    states = _chain(side=128, steps=2)
    frames = zoom_animation(states, frames_per_step=5, size=64, hold=2)
    path = tmp_path / "zoom.gif"
    assert save_gif(frames, path, duration_ms=50) == path
    assert [p.name for p in tmp_path.iterdir()] == ["zoom.gif"]
    with Image.open(path) as gif:
        # each hold collapses into one longer frame: one GIF frame per zoom position
        assert gif.n_frames == 2 * 5 + 1 == len(frames) - 2 * 2
        durations = []
        for k in range(gif.n_frames):
            gif.seek(k)
            durations.append(gif.info["duration"])
            if k == 0:
                # 256 colours for a frame spanning the whole colour cube: ~10 levels of error
                assert _mae(gif.convert("RGB"), frames[0]) < 15.0
    assert durations[0] == durations[-1] == 3 * 50
    assert sum(durations) == 50 * len(frames)


def test_save_gif_distinct_frames_all_kept(tmp_path):
    frames = [_smooth_image(32, seed=s) for s in range(4)]
    save_gif(frames, tmp_path / "a.gif")
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4
        assert gif.info.get("loop") == 0


def test_failed_writes_leave_existing_file(tmp_path, monkeypatch):
    path = tmp_path / "zoom.gif"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="at least one frame"):
        save_gif([], path)

    def crash_mid_write(im, fp, filename, *args, **kwargs):
        fp.write(b"GIF89a half")
        raise OSError("disk full")

    monkeypatch.setitem(Image.SAVE_ALL, "GIF", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_gif([_smooth_image(8, 0), _smooth_image(8, 1)], path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["zoom.gif"]


def test_save_png_atomic(tmp_path):
    img = _smooth_image(16)
    path = tmp_path / "sub" / "x.png"
    save_png(img, path)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(img))
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]
    path.write_bytes(b"old")
    with pytest.raises(Exception):  # noqa: B017 - any failure must leave the old file
        save_png("not an image", path)  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]

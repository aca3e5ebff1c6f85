"""View pairs for GRPO: the chain's geometry, the split by image, determinism, bad photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coz.errors import CozError
from coz.geometry import zoom_view
from coz.images import prepare_x0
from coz.train_grpo.data import (
    Geometry,
    PairSpec,
    TrainPairs,
    ValPairs,
    list_images,
    make_pair,
    split_images,
    val_specs,
    window,
)


def test_the_split_is_by_image_fixed_by_seed_and_the_papers_size():
    paths = [Path(f"{i:07d}.png") for i in range(84_991)]
    train, val = split_images(paths, 0.01, seed=42)
    assert len(val) == 849 and len(train) == 84_991 - 849  # B.3: 849 validation images
    assert not set(train) & set(val)
    assert split_images(paths, 0.01, seed=42)[1] == val
    assert split_images(paths, 0.01, seed=43)[1] != val
    assert len(split_images(paths[:5], 0.01, 0)[1]) == 1  # at least one validation image
    with pytest.raises(CozError, match="at least 2 images"):
        split_images(paths[:1], 0.01, 0)


def test_a_pair_is_the_chains_state_and_its_bicubic_zoom(photo):
    geometry = Geometry(position="center")
    pair = make_pair(photo, PairSpec(0, 0), geometry)
    x0, _ = prepare_x0(photo, 512)
    diff = np.abs(np.asarray(pair.first, dtype=int) - np.asarray(x0, dtype=int))
    assert diff.mean() < 1.0  # depth 0, centered: the chain's x0 (resampled in one go)
    assert np.array_equal(np.asarray(pair.second), np.asarray(zoom_view(pair.first, 4, 512)))
    deep = make_pair(photo, PairSpec(0, 1), geometry)
    assert deep.box == pytest.approx((192, 192, 320, 320))  # x1's window: the center 128 of the 512 photo


def test_windows_fall_back_to_shallower_depths_and_stay_inside():
    g = Geometry(min_window=64)
    box, depth = window(2040, 1356, 3, g, 1.0, 0.0)
    assert depth == 2 and box[2] == pytest.approx(2040) and box[1] == 0  # 1356/64 < 64: depth 2
    assert box[2] - box[0] == pytest.approx(1356 / 16)
    with pytest.raises(CozError):
        Geometry(position="corner")


def _folder(tmp_path: Path, n: int = 5) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i in range(n):
        folder = tmp_path / "a" if i % 2 else tmp_path / "a" / "b"
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    return tmp_path


def test_listing_is_recursive_and_sorted(tmp_path):
    root = _folder(tmp_path)
    found = list_images(root)
    assert [p.relative_to(root).as_posix() for p in found] == [
        "a/1.png",
        "a/3.png",
        "a/b/0.png",
        "a/b/2.png",
        "a/b/4.png",
    ]
    assert len(list_images(root / "a", recursive=False)) == 2
    with pytest.raises(CozError, match="no such folder"):
        list_images(root / "missing")


def test_training_pairs_are_a_function_of_seed_rank_and_step(tmp_path):
    paths = list_images(_folder(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    paths.append(tmp_path / "broken.png")
    g = Geometry(size=64, min_window=16)

    def batches(rank=0, start=0, updates=1, k=4):
        stream = TrainPairs(paths, g, batch_size=3, seed=7, rank=rank, updates=updates)
        stream.start = start
        out = []
        for item in stream:
            out.append(item)
            if len(out) == k:
                return out

    first = batches()
    assert [b for b, _ in first] == [0, 1, 2, 3] and all(
        len(p) == 3 for _, p in first
    )  # broken one drawn over
    resumed = batches(start=2, k=2)
    for (b1, p1), (b2, p2) in zip(first[2:], resumed, strict=True):
        assert b1 == b2 and [np.asarray(p.first).tobytes() for p in p1] == [
            np.asarray(p.first).tobytes() for p in p2
        ]
    other = batches(rank=1, k=1)[0][1]
    assert [p.box for p in other] != [p.box for p in first[0][1]]
    rounds = batches(updates=2)
    assert rounds[1][1] is None and rounds[3][1] is None and rounds[2][1] is not None


def test_validation_pairs_are_fixed_and_cycle_depths(tmp_path):
    paths = list_images(_folder(tmp_path))
    g = Geometry(size=64, min_window=8)
    specs = val_specs(len(paths), g, seed=1)
    assert [s.depth for s in specs] == [0, 1, 2, 3, 0]
    assert val_specs(len(paths), g, seed=1) == specs and val_specs(len(paths), g, 1, limit=2) == specs[:2]
    pairs = ValPairs(paths, specs, g)
    assert len(pairs) == 5 and pairs[3].index == 3 and pairs[3].first.size == (64, 64)
    three = val_specs(len(paths), g, seed=1, per_image=3)  # more pairs of each image, the first unchanged
    assert len(three) == 15 and three[::3] == specs and [s.image for s in three[:6]] == [0, 0, 0, 1, 1, 1]
    assert [s.depth for s in three[:6]] == [0, 1, 2, 1, 2, 3] and len({(s.u, s.v) for s in three}) == 15

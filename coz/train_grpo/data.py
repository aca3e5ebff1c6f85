"""Multi-scale view pairs for GRPO, made on the fly from a folder of high-resolution photos (LSDIR in
the paper; Algorithm 2's data set D of pairs (x_{i-2}, x_{i-1})).

A pair is what the prompt VLM sees at one step of the zoom chain (:mod:`coz.chain`): the previous
scale-state (512 x 512) and the bicubic zoom of its center quarter (the degraded view the SR model is
about to restore). From a photo whose short side is S, the state at depth d covers a square window of
side S / 4^d (depth 0: the whole square x0 of :func:`coz.images.prepare_x0`), LANCZOS-resized to 512;
the view is :func:`coz.geometry.zoom_view` of that state. Windows sit at random positions (``center``:
the chain's own geometry). A depth whose window would be smaller than ``min_window`` pixels falls
back to the deepest one that is not (there is no detail left to describe below that).

The train/validation split is by image: ``floor(val_fraction x N)`` images (at least one), drawn
with the seed (the paper's 0.01 of LSDIR's 84,991 images is its 849 validation images). Training
pairs are a deterministic function of (seed, process rank, batch index), so a resumed run sees exactly
the pairs the interrupted one would have; validation pairs are fixed for the whole run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from coz.errors import CozError
from coz.geometry import zoom_view
from coz.images import IMAGE_EXTENSIONS, ImageInputError, load_rgb

log = logging.getLogger("coz.train_grpo")


@dataclass(frozen=True)
class PairSpec:
    """Where a pair comes from: an image (index into its split), a zoom depth, a window position
    (fractions of the free space along x and y; 0.5, 0.5 is the center)."""

    image: int
    depth: int
    u: float = 0.5
    v: float = 0.5


@dataclass
class Pair:
    """One multi-scale view pair: ``first`` = the previous scale-state, ``second`` = its zoomed view."""

    first: Image.Image
    second: Image.Image
    source: str
    depth: int
    box: tuple[float, float, float, float]  # the window in the photo's pixels (left, top, right, bottom)
    index: int = -1  # validation pairs: their fixed position in the validation set
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Geometry:
    size: int = 512
    factor: int = 4
    depths: tuple[int, ...] = (0, 1, 2, 3)
    min_window: int = 64
    position: str = "random"  # random | center

    def __post_init__(self) -> None:
        if self.position not in ("random", "center"):
            raise CozError(f"data.position={self.position}: use random or center")
        if not self.depths or min(self.depths) < 0:
            raise CozError(f"data.depths={list(self.depths)}: give zoom depths >= 0")
        if self.size % self.factor or self.factor < 2:
            raise CozError(
                f"data.size={self.size}, data.factor={self.factor}: size must divide by factor >= 2"
            )


def list_images(root: str | Path, recursive: bool = True, option: str = "data.root") -> list[Path]:
    """Image files under ``root`` (recursively: LSDIR keeps its photos in numbered sub-folders), sorted
    by relative path, hidden files and folders skipped. ``option`` names the setting in errors."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CozError(
            f"{option}={root}: no such folder; give a folder of high-resolution photos "
            f"(LSDIR in the paper) with data.root=FOLDER or input=FOLDER, or set COZ_DATA"
        )
    found = root.rglob("*") if recursive else root.iterdir()
    paths = [
        p
        for p in found
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    ]
    if len(paths) < 2:
        raise CozError(
            f"{option}={root}: {len(paths)} image(s) found ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
            "training needs at least 2, one to train on and one to validate with"
        )
    return sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def split_images(paths: Sequence[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, validation) by image: ``floor(val_fraction * N)`` validation images, at least one,
    chosen by ``seed``; both lists in the input order."""
    n = len(paths)
    if not 0 < val_fraction < 1:
        raise CozError(f"data.val_fraction={val_fraction}: must be between 0 and 1")
    if n < 2:
        raise CozError(f"need at least 2 images (one to train on, one to validate with); found {n}")
    n_val = max(1, math.floor(val_fraction * n + 1e-9))
    chosen = set(np.random.default_rng([seed, 0]).permutation(n)[:n_val].tolist())
    train = [p for i, p in enumerate(paths) if i not in chosen]
    val = [p for i, p in enumerate(paths) if i in chosen]
    return train, val


def window(width: int, height: int, depth: int, geometry: Geometry, u: float, v: float):
    """(box, depth actually used) of the square window of ``depth`` in a width x height photo."""
    short = min(width, height)
    while depth > 0 and short / geometry.factor**depth < geometry.min_window:
        depth -= 1
    side = short / geometry.factor**depth
    if geometry.position == "center":
        u = v = 0.5
    left, top = u * (width - side), v * (height - side)
    return (left, top, left + side, top + side), depth


def make_pair(photo: Image.Image, spec: PairSpec, geometry: Geometry, source: str = "") -> Pair:
    """The view pair of ``spec`` cut from an RGB photo."""
    box, depth = window(photo.width, photo.height, spec.depth, geometry, spec.u, spec.v)
    size = geometry.size
    first = photo.resize((size, size), Image.LANCZOS, box=box)  # the scale-state x_{i-1}
    second = zoom_view(first, geometry.factor, size)  # its center 1/factor, bicubic: the chain's view
    return Pair(first, second, source, depth, box)


def load_photo(path: Path, max_pixels: float | None) -> Image.Image:
    photo, _ = load_rgb(path, max_pixels=max_pixels)
    return photo


class TrainPairs(IterableDataset):
    """An endless stream of training batches: item b is ``(b, pairs)``, the pairs of generation round
    ``b // updates`` (loaded only for its first batch; ``None`` for the others, which reuse the round's
    completions). Starts at batch ``start`` (set on resume before iterating)."""

    def __init__(
        self,
        paths: Sequence[Path],
        geometry: Geometry,
        batch_size: int,
        seed: int,
        rank: int = 0,
        updates: int = 1,
        max_pixels: float | None = None,
    ) -> None:
        self.paths, self.geometry, self.batch_size = list(paths), geometry, batch_size
        self.seed, self.rank, self.updates, self.max_pixels = seed, rank, updates, max_pixels
        self.start = 0

    def specs(self, round_index: int) -> Iterator[PairSpec]:
        """The specs of one round: a deterministic endless stream (bad images are drawn over)."""
        rng = np.random.default_rng([self.seed, 1, self.rank, round_index])
        depths = self.geometry.depths
        while True:
            yield PairSpec(
                int(rng.integers(len(self.paths))),
                int(depths[rng.integers(len(depths))]),
                float(rng.random()),
                float(rng.random()),
            )

    def round_pairs(self, round_index: int) -> list[Pair]:
        pairs: list[Pair] = []
        failures = 0
        for spec in self.specs(round_index):
            path = self.paths[spec.image]
            try:
                photo = load_photo(path, self.max_pixels)
            except ImageInputError as err:
                failures += 1
                log.warning("skipped in training: %s", err)
                if failures > 20 * self.batch_size:
                    raise CozError(f"too many unreadable training images (last: {err})") from err
                continue
            pairs.append(make_pair(photo, spec, self.geometry, str(path)))
            if len(pairs) == self.batch_size:
                return pairs
        raise AssertionError("unreachable")

    def __iter__(self) -> Iterator[tuple[int, list[Pair] | None]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        b = self.start + worker
        while True:
            yield b, self.round_pairs(b // self.updates) if b % self.updates == 0 else None
            b += workers


def val_specs(
    n_images: int, geometry: Geometry, seed: int, limit: int | None = None, per_image: int = 1
) -> list[PairSpec]:
    """``per_image`` pairs per validation image (one for a large set like LSDIR's 849; more where a
    few images must give a smooth curve), depths cycling through ``geometry.depths``, fixed by ``seed``."""
    specs = []
    for j in range(n_images):
        for k in range(per_image):
            rng = np.random.default_rng([seed, 2, j] + ([k] if k else []))  # k = 0: as with one each
            depth = int(geometry.depths[(j + k) % len(geometry.depths)])
            specs.append(PairSpec(j, depth, *map(float, rng.random(2))))
    return specs[:limit] if limit is not None else specs


class ValPairs(Dataset):
    """The fixed validation pairs (an unreadable image is a ``None`` item, logged and skipped)."""

    def __init__(
        self, paths: Sequence[Path], specs: Sequence[PairSpec], geometry: Geometry, max_pixels=None
    ) -> None:
        self.paths, self.specs, self.geometry, self.max_pixels = (
            list(paths),
            list(specs),
            geometry,
            max_pixels,
        )

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> Pair | None:
        spec = self.specs[i]
        path = self.paths[spec.image]
        try:
            photo = load_photo(path, self.max_pixels)
        except ImageInputError as err:
            log.warning("skipped in validation: %s", err)
            return None
        pair = make_pair(photo, spec, self.geometry, str(path))
        pair.index = i
        return pair

"""Training images: folders or path lists mixed by probability, random crops and flips.

Every item is a pure function of (seed, its global index): which source (by ``prob``), which
file, the crop, the flips and the degradation draws all come from a numpy generator seeded with
both. The sampler hands out indices in a fixed layout (below), so the data order does not depend
on the number of workers, survives a resume exactly (start at the first unseen micro-batch) and
splits over processes without a distributed sampler.

Layout: micro-batch ``m`` of process ``rank`` (of ``world``) holds the global indices
``(m * world + rank) * batch + b`` for ``b < batch``; ``accumulate`` consecutive micro-batches
make one optimisation step, so step ``s`` reads micro-batches ``s * accumulate ...``.

A file that cannot be read or is smaller than the crop is skipped: another file is drawn (from
the same generator) and the item reports how many it skipped, which the training loop sums and
logs. Nothing crashes on a bad file; only ``max_tries`` failures in a row for one item (a source
of nothing but bad files) stop the run, with one line naming the source.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from coz.errors import CozError
from coz.images import IMAGE_EXTENSIONS, load_rgb
from coz.train_sr.kernels import item_draws, rng_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """How global item indices map to processes, micro-batches and optimisation steps."""

    batch: int = 1
    accumulate: int = 1
    world: int = 1

    def step_of_item(self, index: int) -> int:
        return (index // self.batch // self.world) // self.accumulate


def list_source(path: str | Path, limit: int | None = None) -> list[Path]:
    """The images of one source: a folder (recursive, sorted) or a text file of paths (one per line,
    relative to the file's folder, ``#`` comments), the first ``limit`` of them if given;
    ``samples`` names the scikit-image photos."""
    if str(path) == "samples":  # the photos inside scikit-image (offline smoke runs and tests)
        from coz.run.paths import cache_dir
        from coz.samples import write_samples

        return write_samples(cache_dir() / "samples")[:limit]
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(
            f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
        )
    elif p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list"):
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
        files = [(p.parent / line).expanduser() for line in lines if line and not line.startswith("#")]
    elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
        files = [p]
    elif p.is_file():
        raise CozError(
            f"data source {path}: expected a folder of images, an image or a .txt list of image paths"
        )
    else:
        raise CozError(f"data source {path}: no such folder or file")
    files = files[:limit]  # None: all
    if not files:
        raise CozError(f"data source {path}: no images found")
    return files


def _weight(source: dict[str, Any], files: list[Path]) -> float:
    """A source's draw weight: its ``prob``, or its length for ``prob: size``."""
    prob = source.get("prob", 1.0)
    if str(prob) == "size":
        return float(len(files))
    try:
        return float(prob)
    except (TypeError, ValueError):
        raise CozError(f"data.sources {source['path']}: prob={prob!r}: give a number or size") from None


class TrainingImages(Dataset):
    """Map-style dataset over global item indices: ``{"hr": uint8 (3, crop, crop), "skipped": int,
    "index": int, "deg": {...}}``; ``deg`` holds the Real-ESRGAN draws where the item's stage uses them."""

    def __init__(
        self,
        sources: list[dict[str, Any]],
        *,
        crop: int = 512,
        hflip: bool = True,
        vflip: bool = False,
        seed: int = 0,
        layout: Layout = Layout(),
        stage_kind=lambda step: "bicubic",
        degradation: dict[str, Any] | None = None,
        max_tries: int = 50,
    ) -> None:
        if not sources:
            raise CozError("data.sources is empty: give at least one folder or path list")
        self.names = [str(s["path"]) for s in sources]
        self.files = [list_source(s["path"], s.get("limit")) for s in sources]
        # prob: size draws a source in proportion to its length: the released script concatenates
        # its path lists (LSDIR + FFHQ[:10000] -> about 89:11), which this reproduces.
        probs = np.array([_weight(s, files) for s, files in zip(sources, self.files, strict=True)])
        if (probs < 0).any() or probs.sum() <= 0:
            raise CozError(f"data.sources: probabilities {probs.tolist()} must be >= 0 and not all 0")
        self.probs = probs / probs.sum()
        self.crop, self.hflip, self.vflip = crop, hflip, vflip
        self.seed, self.layout, self.stage_kind = seed, layout, stage_kind
        self.degradation, self.max_tries = degradation, max_tries
        self._bad: set[Path] = set()  # per worker: files already found bad are not retried

    def __len__(self) -> int:  # indices are drawn by the sampler; any index is valid
        return 2**62

    def _load(self, path: Path) -> np.ndarray | None:
        if path in self._bad:
            return None
        try:
            image, _ = load_rgb(path)
        except (CozError, OSError, ValueError) as e:
            log.warning("skipping %s", e)
            self._bad.add(path)
            return None
        if min(image.size) < self.crop:
            log.warning("skipping %s: %dx%d is smaller than the %d crop", path, *image.size, self.crop)
            self._bad.add(path)
            return None
        return np.asarray(image)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = rng_for(self.seed, 0, index)
        skipped = 0
        for _ in range(self.max_tries):
            source = int(rng.choice(len(self.files), p=self.probs))
            path = self.files[source][int(rng.integers(len(self.files[source])))]
            pixels = self._load(path)
            if pixels is not None:
                break
            skipped += 1
        else:
            raise CozError(
                f"{self.max_tries} unreadable or too-small files in a row (last: {path}); "
                f"check data.sources ({', '.join(self.names)}) and data.crop={self.crop}"
            )
        h, w = pixels.shape[:2]
        top, left = int(rng.integers(h - self.crop + 1)), int(rng.integers(w - self.crop + 1))
        hr = pixels[top : top + self.crop, left : left + self.crop]
        if self.hflip and rng.uniform() < 0.5:
            hr = hr[:, ::-1]
        if self.vflip and rng.uniform() < 0.5:
            hr = hr[::-1]
        item = {
            "hr": torch.from_numpy(hr.copy()).permute(2, 0, 1),  # (3, crop, crop) uint8
            "skipped": skipped,
            "index": index,
        }
        step = self.layout.step_of_item(index)
        if self.stage_kind(step) == "realesrgan":
            item["deg"] = item_draws(self.seed, index, self.degradation)
        return item


class StepSampler(Sampler[list[int]]):
    """Batches of global indices for one process, from micro-batch ``start`` to ``stop`` (see Layout)."""

    def __init__(self, layout: Layout, rank: int, start: int, stop: int) -> None:
        self.layout, self.rank, self.start, self.stop = layout, rank, start, stop

    def __len__(self) -> int:
        # The epoch's whole length, not what is left: a resumed Lightning loop keeps counting the
        # batches it completed before the checkpoint and ends the epoch when that count reaches len.
        # (Reporting what is left ended a resumed run early.) The iterator yields only from start.
        return max(0, self.stop)

    def __iter__(self) -> Iterator[list[int]]:
        b, world = self.layout.batch, self.layout.world
        for m in range(self.start, self.stop):
            first = (m * world + self.rank) * b
            yield list(range(first, first + b))

"""The zoom's loop over its images, a batch at a time: load each image into the chain's x0, run
the chain on the batch, count every image's steps. ``python -m coz.zoom`` and the Python API
(:meth:`coz.api.Zoomer.zoom`) both zoom through :func:`zoom_batches`, so they load, skip and count
images alike; what each does with a finished batch (write files, collect results) stays theirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig
from PIL import Image

from coz.chain import Zoom, ZoomChain
from coz.full_image import FullImageOptions, prepare_full_x0
from coz.images import ImageInputError, load_rgb, prepare_x0, to_rgb

Item = TypeVar("Item")


@dataclass
class Loaded:
    """One image ready to zoom: its output name, where it came from, its x0 and the notes on
    conversions done to it (one line each)."""

    name: str
    source: Any  # the file or the PIL image it was loaded from
    x0: Image.Image
    notes: list[str]


def make_x0(
    image: Image.Image, chain: ZoomChain, full: FullImageOptions | None, name: str
) -> tuple[Image.Image, list[str]]:
    """The chain's x0 of an RGB image, plus notes on resizing (ImageInputError if it cannot be)."""
    if full is not None:
        return prepare_full_x0(image, full, chain.steps, chain.factor, name)
    return prepare_x0(image, size=chain.size, name=name)


def load_image(
    source: Image.Image | str | Path,
    name: str,
    cfg: DictConfig,
    chain: ZoomChain,
    full: FullImageOptions | None,
    label: str | None = None,
) -> Loaded:
    """``source`` (a file, or an image already opened) as the chain's x0, converted as ``cfg``'s
    ``alpha`` and ``max_pixels`` say; ``label`` names it in messages (default ``name``).
    ImageInputError (one line) when it cannot be used."""
    label = name if label is None else label
    if isinstance(source, Image.Image):
        image, notes = to_rgb(source, name=label, alpha=cfg.alpha)
    else:
        image, notes = load_rgb(source, alpha=cfg.alpha, max_pixels=cfg.max_pixels)
    x0, resize_notes = make_x0(image, chain, full, label)
    return Loaded(name, source, x0, notes + resize_notes)


def zoom_batches(
    chain: ZoomChain,
    items: Sequence[Item],
    batch_size: int,
    *,
    load: Callable[[Item], Loaded],
    on_step: Callable[[int], None],
    on_failure: Callable[[Item, ImageInputError], None] | None = None,
    on_batch: Callable[[list[str]], None] | None = None,
) -> Iterator[list[tuple[Loaded, Zoom]]]:
    """Zoom ``items`` ``batch_size`` at a time; yield each batch's images with their zooms.

    ``load`` makes an item a :class:`Loaded` image (an image already loaded passes through it). An
    item it refuses (ImageInputError) goes to ``on_failure`` and its steps still count, so progress
    reaches its total; without ``on_failure`` the error propagates. ``on_step(n)`` gets the steps
    done as they finish; ``on_batch(names)`` is called as a batch starts.
    """
    for start in range(0, len(items), batch_size):
        batch: list[Loaded] = []
        for item in items[start : start + batch_size]:
            try:
                batch.append(load(item))
            except ImageInputError as err:
                if on_failure is None:
                    raise
                on_failure(item, err)
                on_step(chain.steps)
        if not batch:
            continue
        if on_batch:
            on_batch([image.name for image in batch])
        zooms = chain.run(
            [image.x0 for image in batch], on_step=on_step, names=[image.name for image in batch]
        )
        yield list(zip(batch, zooms, strict=True))

"""The images of an evaluation: a folder (DIV2K, DIV8K or the user's), in name order, with a limit,
split between jobs (``shard``) and processes (``rank``) so that every image is scored exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from coz.errors import CozError
from coz.images import find_images
from coz.run.names import output_names


@dataclass(frozen=True)
class Item:
    index: int  # position in the whole (limited) dataset: fixes the order and which images get strips
    path: Path
    name: str


def dataset_root(cfg: DictConfig) -> Path:
    root = cfg.get("input") or cfg.dataset.root
    if root is None:
        raise CozError("no images to evaluate: pass input=FOLDER (or choose a dataset= with a root)")
    return Path(str(root)).expanduser()


def dataset_name(cfg: DictConfig) -> str:
    """``input=FOLDER`` is named by its folder whatever ``dataset=`` says (the default is DIV2K):
    its rows must not be labelled, and compared with the paper's numbers, as a dataset they are
    not (``paper_dataset=DIV2K`` asks for that comparison explicitly)."""
    if cfg.get("input"):
        return dataset_root(cfg).resolve().name
    return str(cfg.dataset.name or dataset_root(cfg).resolve().name)


def dataset_items(cfg: DictConfig) -> list[Item]:
    """Every image of the dataset in name order, cut to ``dataset.limit``."""
    root = dataset_root(cfg)
    if cfg.dataset.name == "samples" and not cfg.get("input"):
        from coz.samples import write_samples

        write_samples(root)
    if not root.exists():
        raise CozError(
            f"dataset {cfg.dataset.name or root.name}: {root} does not exist; "
            f"pass dataset.root=FOLDER or input=FOLDER (or set COZ_DATA to the folder holding it)"
        )
    paths = find_images(root)  # name order
    limit = cfg.dataset.get("limit")
    if limit is not None:
        if int(limit) < 1:
            raise CozError(f"dataset.limit={limit}: must be at least 1 (or null for all)")
        paths = paths[: int(limit)]
    return [Item(i, p, name) for i, (p, name) in enumerate(zip(paths, output_names(paths), strict=True))]


def split(items: list[Item], index: int, count: int) -> list[Item]:
    """Part ``index`` of ``count`` interleaved parts (every item in exactly one part)."""
    if count < 1 or not 0 <= index < count:
        raise CozError(f"shard.index={index}, shard.count={count}: need 0 <= index < count")
    return items[index::count]

"""``python -m coz.zoom input=PATH``: zoom into images with Chain-of-Zoom.

Every option is a Hydra override (``conf/zoom.yaml``): ``zoom=`` recursive_multiscale (CoZ, the
default) | recursive | onestep | nearest | bicubic | full (full-image SR, ``coz.full_image``),
``backbone=``, ``prompt=``, ``logger=``, ``zoom.steps=``, ``batch_size=``, ``seed=``, ``device=``...
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from coz.backbones import build_backbone
from coz.chain import INTERPOLATION_MODES, ZoomChain
from coz.cli import hydra_entry
from coz.cpu_share import CpuShare
from coz.errors import CozError
from coz.full_image import FullImageOptions, prepare_full_x0
from coz.images import ImageInputError, find_images, load_rgb, prepare_x0
from coz.loggers import build_logger
from coz.outputs import BackgroundWriter, is_finished
from coz.prompts import NullPrompt, build_prompt_extractor
from coz.runinfo import machine, versions, write_run_json
from coz.runtime import fixed_threads, hydra_choices, hydra_run_dir, resolve_device, seed_everything
from coz.timing import PhaseTimer

log = logging.getLogger("coz.zoom")


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Zoom every image of ``cfg.input``; write results to ``run_dir`` (Hydra's run folder by
    default). Returns the run record (also written to ``run.json``)."""
    run_dir = Path(run_dir or hydra_run_dir())
    timer = PhaseTimer()
    batch_size = int(cfg.batch_size)
    if batch_size < 1:
        raise CozError(f"batch_size={batch_size}: must be at least 1")
    images = find_images(cfg.input)  # fails on a missing input before any model loads
    names = _unique_names(images)
    config = OmegaConf.to_container(cfg, resolve=True)
    full = full_options(cfg)  # checked before any model loads
    _check_resumable(run_dir, config)

    seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    cpu_share = CpuShare(threads=fixed_threads(cfg.threads))
    threads = cpu_share.refresh()
    mode = str(cfg.zoom.mode)
    chain = build_chain(cfg, device, timer, full)
    backbone, prompter = chain.backbone, chain.prompter
    logger = build_logger(cfg, run_dir)

    record: dict[str, Any] = {
        "config": config,
        "choices": hydra_choices(),
        "seed": int(cfg.seed),
        "device": str(device),
        "threads": threads,
        "versions": versions(),
        "machine": machine(),
        "images": {},
        "failed": {},
    }
    todo = [(path, name) for path, name in zip(images, names, strict=True) if not is_finished(run_dir, name)]
    if len(todo) < len(images):
        log.info(
            "resuming: %d of %d images already zoomed in %s", len(images) - len(todo), len(images), run_dir
        )
    log.info(
        "zoom=%s backbone=%s prompt=%s: %d image(s) -> %s",
        mode,
        backbone.name if backbone else "none",
        prompter.name,
        len(todo),
        run_dir,
    )

    writer = BackgroundWriter(run_dir, cfg.save, chain.factor, max_pending=2 * batch_size)
    progress = tqdm(total=len(todo) * chain.steps, desc="zoom", unit="step", dynamic_ncols=True)
    try:
        for start in range(0, len(todo), batch_size):
            batch = []
            for path, name in todo[start : start + batch_size]:
                try:
                    image, notes = load_rgb(path, alpha=str(cfg.alpha), max_pixels=int(cfg.max_pixels))
                    x0, resize_notes = make_x0(image, chain, full, path.name)
                except ImageInputError as err:
                    log.error("%s", err)
                    record["failed"][str(path)] = str(err)
                    progress.update(chain.steps)
                    continue
                for note in notes + resize_notes:
                    log.warning("%s", note)
                batch.append((name, path, x0, notes + resize_notes))
            if not batch:
                continue
            progress.set_postfix_str(", ".join(name for name, *_ in batch)[:40])
            zooms = chain.run(
                [x0 for _, _, x0, _ in batch],
                on_step=lambda n: (progress.update(n), cpu_share.refresh()),
                names=[name for name, *_ in batch],
            )
            for (name, path, _, notes), zoom in zip(batch, zooms, strict=True):
                record["images"][name] = {
                    "source": str(path),
                    "prompts": [s.prompt for s in zoom.steps],
                    "notes": notes,
                }
                if zoom.full:
                    record["images"][name]["size"] = [list(s.size) for s in zoom.states]
                    record["images"][name]["tiles"] = [len(s.tiles or ()) for s in zoom.steps]
                with timer.phase("write"):  # only the time spent waiting for the writer
                    written = writer.submit(name, zoom, notes)
                for done in written:
                    logger.log_zoom(*done)
            record["timings"] = timer.summary()
            write_run_json(run_dir, record)  # after every batch: an interrupted run still says what it did
        with timer.phase("write"):
            written = writer.drain(wait=True)
        for done in written:
            logger.log_zoom(*done)
    finally:  # also on errors: no stray worker thread, bar or core-share entry
        writer.close()
        progress.close()
        cpu_share.close()

    record["timings"] = {**timer.summary(), "writer_busy_s": round(writer.busy_s, 4)}
    record["finished"] = sorted(n for n in names if is_finished(run_dir, n))
    write_run_json(run_dir, record)
    logger.log_summary(
        {"images": len(record["finished"]), "failed": len(record["failed"]), **record["timings"]}
    )
    logger.close()
    _report(run_dir, record)
    return record


def full_options(cfg: DictConfig) -> FullImageOptions | None:
    """``zoom=full``'s settings, checked (None for the other modes)."""
    if str(cfg.zoom.mode) != "full":
        return None
    try:
        return FullImageOptions.from_config(cfg.zoom)
    except ValueError as err:
        raise CozError(str(err)) from None


def make_x0(
    image: Image.Image, chain: ZoomChain, full: FullImageOptions | None, name: str
) -> tuple[Image.Image, list[str]]:
    """The chain's x0 of an RGB image, plus notes on resizing (ImageInputError if it cannot be)."""
    if full is not None:
        return prepare_full_x0(image, full, chain.steps, chain.factor, name)
    return prepare_x0(image, size=chain.size, name=name)


def build_chain(
    cfg: DictConfig, device: torch.device, timer: PhaseTimer, full: FullImageOptions | None = None
) -> ZoomChain:
    """Load ``cfg``'s backbone and prompt extractor (none for the interpolation modes) into a
    chain; the Python API (:mod:`coz.api`) builds its chain here too."""
    mode = str(cfg.zoom.mode)
    with timer.phase("load"):
        if mode in INTERPOLATION_MODES:  # no model, no prompts
            backbone, prompter = None, NullPrompt()
        else:
            backbone = build_backbone(cfg.backbone, device)
            prompter = build_prompt_extractor(cfg.get("prompt"), device=str(device))
    return ZoomChain(
        mode,
        backbone,
        prompter,
        steps=int(cfg.zoom.steps),
        factor=int(cfg.zoom.factor),
        size=int(cfg.zoom.size),
        user_prompt=str(cfg.user_prompt),
        timer=timer,
        full=full,
    )


def _report(run_dir: Path, record: dict[str, Any]) -> None:
    done, failed = len(record["finished"]), record["failed"]
    t = record["timings"]
    print(
        f"coz.zoom: {done} image(s) zoomed in {t['total_s']:.1f} s (loading {t.get('load_s', 0):.1f} s, "
        f"SR {t.get('sr_s', 0):.1f} s, prompts {t.get('prompt_s', 0):.1f} s, "
        f"writing {t.get('write_s', 0):.1f} s, other {t['other_s']:.1f} s)"
    )
    if failed:
        print(f"coz.zoom: {len(failed)} input(s) skipped:")
        for reason in failed.values():
            print(f"  {reason}")
    print(f"coz.zoom: results in {run_dir}")
    if done:
        first = record["finished"][0]
        print(f"coz.zoom: e.g. {run_dir / 'images' / first / 'strip.png'} and zoom.gif beside it")


def _check_resumable(run_dir: Path, config: dict[str, Any]) -> None:
    """A run folder that already holds a run is resumed only with the same config: nothing an
    earlier run wrote is overwritten with something different."""
    previous = run_dir / "run.json"
    if previous.exists():
        earlier = json.loads(previous.read_text()).get("config")
        if earlier != config:
            raise CozError(
                f"{run_dir} already holds a run with a different config; "
                "choose another hydra.run.dir (or omit it for a new folder)"
            )
    run_dir.mkdir(parents=True, exist_ok=True)


def _unique_names(paths: list[Path]) -> list[str]:
    """Output names: the file stem, plus the extension where two inputs share a stem."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in paths]


def _cli(cfg: DictConfig) -> None:
    record = run(cfg)
    if record["failed"]:
        sys.exit(1)  # every good result is kept; the status tells scripts that some inputs failed


main = hydra_entry(_cli, config_name="zoom")

if __name__ == "__main__":
    main()

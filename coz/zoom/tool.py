"""``python -m coz.zoom input=PATH``: zoom into images with Chain-of-Zoom.

Every option is a Hydra override (``conf/zoom/zoom.yaml``): ``zoom=`` recursive_multiscale (CoZ, the
default) | recursive | onestep | nearest | bicubic | full (full-image SR, ``coz.full_image``),
``backbone=``, ``prompt=``, ``logger=``, ``zoom.steps=``, ``batch_size=``, ``seed=``, ``device=``...
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from coz.backbones import build_backbone
from coz.chain import INTERPOLATION_MODES, ZoomChain
from coz.errors import CozError
from coz.full_image import FullImageOptions, prepare_full_x0
from coz.images import ImageInputError, find_images, load_rgb, not_images, prepare_x0
from coz.prompts import NullPrompt, build_prompt_extractor
from coz.run.cli import hydra_entry
from coz.run.cpu_share import CpuShare
from coz.run.folder import claim, record_attempt
from coz.run.loggers import build_logger
from coz.run.names import output_names
from coz.run.progress import Progress
from coz.run.resume import check_resume, read_record
from coz.run.runinfo import machine, versions, write_run_json
from coz.run.runtime import fixed_threads, hydra_choices, hydra_run_dir, resolve_device, seed_everything
from coz.run.schema import typed
from coz.run.timing import PhaseTimer
from coz.run.validate import check_zoom
from coz.zoom.outputs import BackgroundWriter, finished_images, is_finished
from coz.zoom.schema import ZoomTool

log = logging.getLogger("coz.zoom")


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Zoom every image of ``cfg.input``; write results to ``run_dir`` (Hydra's run folder by
    default). Returns the run record (also written to ``run.json``)."""
    run_dir = Path(run_dir or hydra_run_dir())
    cfg = typed(ZoomTool, cfg)  # every key and value, before any image is read or model loads
    check_zoom(cfg)  # every value, before any image is read or model loads
    full = full_options(cfg)
    images = find_images(cfg.input)
    skipped = not_images(cfg.input)  # listed as skipped inputs (exit 1), never dropped without a word
    names = output_names(images)
    config = OmegaConf.to_container(cfg, resolve=True)
    with claim(run_dir, "zoom"):  # one process per folder, from before the first write
        earlier = read_record(run_dir / "run.json")
        check_resume(earlier and earlier.get("config"), config, "zoom", run_dir)
        record_attempt(run_dir, cfg)
        return _zoom(cfg, run_dir, images, names, config, full, skipped)


def _zoom(
    cfg: DictConfig,
    run_dir: Path,
    images: list[Path],
    names: list[str],
    config: dict[str, Any],
    full: FullImageOptions | None,
    skipped: dict[str, str],
) -> dict[str, Any]:
    timer = PhaseTimer()
    batch_size = int(cfg.batch_size)
    max_pixels = None if cfg.max_pixels is None else int(cfg.max_pixels)
    seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    cpu_share = CpuShare(threads=fixed_threads(cfg.threads))
    threads = cpu_share.refresh()
    mode = str(cfg.zoom.mode)
    chain = build_chain(cfg, device, timer, full)
    backbone, prompter = chain.backbone, chain.prompter
    logger = build_logger(cfg, run_dir, names)

    record: dict[str, Any] = {
        "config": config,
        "choices": hydra_choices(),
        "seed": int(cfg.seed),
        "device": str(device),
        "threads": threads,
        "versions": versions(),
        "machine": machine(),
        "images": finished_images(run_dir, names),  # an earlier attempt's, kept
        "failed": dict(skipped),
    }
    for reason in skipped.values():
        log.error("%s", reason)
    write_run_json(run_dir, record)  # from the start: a rerun compares its config with this one
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
    progress = Progress(  # a resumed run counts on from the images already zoomed
        len(images) * chain.steps, "zoom", "image-steps", initial=(len(images) - len(todo)) * chain.steps
    )
    try:
        for start in range(0, len(todo), batch_size):
            batch = []
            for path, name in todo[start : start + batch_size]:
                try:
                    image, notes = load_rgb(path, alpha=str(cfg.alpha), max_pixels=max_pixels)
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
            progress.set_postfix(", ".join(name for name, *_ in batch)[:40])
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
                    written = writer.submit(name, zoom, notes, str(path))
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
    record["images"] = finished_images(run_dir, names)  # every attempt's, in input order
    record["finished"] = sorted(record["images"])
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
            prompter = build_prompt_extractor(cfg.get("prompt"), device=str(device), tiles=mode == "full")
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
        to_8bit=str(cfg.zoom.get("to_8bit", "backbone")),
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


main = hydra_entry(
    run, config_name="zoom", tool_schema=ZoomTool
)  # exit 1 when inputs were skipped: every good result is kept

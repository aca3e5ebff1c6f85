"""``python -m coz.zoom input=PATH``: zoom into images with Chain-of-Zoom.

Every option is a Hydra override (``conf/zoom/zoom.yaml``): ``zoom=`` recursive_multiscale (CoZ, the
default) | recursive | onestep | nearest | bicubic | full (full-image SR, ``coz.full_image``),
``backbone=``, ``prompt=``, ``logger=``, ``zoom.steps=``, ``batch_size=``, ``seed=``, ``device=``...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from coz.images import check_header, find_images, not_images
from coz.modes import INTERPOLATION_MODES
from coz.run.cli import hydra_entry
from coz.run.handle import Run, execute
from coz.run.names import output_names
from coz.run.tool import Tool
from coz.run.validate import check_zoom
from coz.zoom.build import full_options
from coz.zoom.schema import ZoomTool

# Up to the config check (typed, check) nothing here imports torch: a refusal is one line at once.
# What runs the chain (torch, the backbones) is imported by the body.
if TYPE_CHECKING:
    from coz.chain import ZoomChain
    from coz.full_image_options import FullImageOptions
    from coz.zoom.batches import Loaded

log = logging.getLogger("coz.zoom")


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Zoom every image of ``cfg.input``; write results to ``run_dir`` (Hydra's run folder by
    default). Returns the run record (also written to ``run.json``)."""
    return execute(TOOL, cfg, run_dir)


@dataclass(frozen=True)
class Plan:
    """What :func:`check` found: the images, their output names, the files of the input that are not
    images (skipped, each with its reason) and ``zoom=full``'s settings."""

    images: list[Path]
    names: list[str]
    skipped: dict[str, str]
    full: FullImageOptions | None


def check(cfg: DictConfig) -> Plan:
    """Every value (the chain's geometry with this backbone) and the input, before any image is read
    or model loads."""
    check_zoom(cfg)
    full = full_options(cfg)
    images = find_images(cfg.input)
    if not Path(cfg.input).expanduser().is_dir():  # one file named: not an image is one line (exit 2) now,
        check_header(images[0])  # not a skipped input once the model has loaded and the folder is made
    skipped = not_images(cfg.input)  # listed as skipped inputs (exit 1), never dropped without a word
    if cfg.zoom.mode not in INTERPOLATION_MODES:  # a missing model or weight file: before the folder is made
        from coz.backbones import check_backbone_files
        from coz.prompts import check_prompt_files

        check_backbone_files(cfg.backbone)
        check_prompt_files(cfg.prompt)
    return Plan(images, output_names(images), skipped, full)


def zoom(run: Run) -> dict[str, Any]:
    """The body: zoom the images whose results are not in the folder yet, in batches."""
    from coz.run.timing import PhaseTimer
    from coz.zoom.batches import zoom_batches
    from coz.zoom.build import build_chain
    from coz.zoom.outputs import BackgroundWriter, finished_images, is_finished

    cfg, plan = run.cfg, run.plan
    timer = PhaseTimer()
    chain = build_chain(cfg, run.device, timer, plan.full)
    record = run.record
    record["images"] = finished_images(run.dir, plan.names)  # an earlier attempt's, kept
    record["failed"] = {}
    for item, reason in plan.skipped.items():
        run.skip(item, reason)
    run.save_record()
    todo = [
        (path, name)
        for path, name in zip(plan.images, plan.names, strict=True)
        if not is_finished(run.dir, name)
    ]
    total = len(plan.images)
    if len(todo) < total:
        log.info("resuming: %d of %d images already zoomed in %s", total - len(todo), total, run.dir)
    log.info(
        "zoom=%s backbone=%s prompt=%s: %d image(s) -> %s",
        cfg.zoom.mode,
        chain.backbone.name if chain.backbone else "none",
        chain.prompter.name,
        len(todo),
        run.dir,
    )

    writer = BackgroundWriter(run.dir, cfg.save, chain.factor, max_pending=2 * cfg.batch_size)
    progress = run.progress(  # a resumed run counts on from the images already zoomed
        total * chain.steps, "zoom", "image-steps", initial=(total - len(todo)) * chain.steps
    )
    try:
        batches = zoom_batches(
            chain,
            todo,
            cfg.batch_size,
            load=lambda item: _load(item, cfg, chain, plan.full),
            on_step=lambda n: (progress.update(n), run.refresh_threads()),
            on_failure=lambda item, err: run.skip(item[0], str(err)),
            on_batch=lambda names: progress.set_postfix(", ".join(names)[:40]),
        )
        for batch in batches:
            for image, result in batch:
                name, path, notes = image.name, image.source, image.notes
                record["images"][name] = {
                    "source": str(path),
                    "prompts": [s.prompt for s in result.steps],
                    "notes": notes,
                }
                if result.full:
                    record["images"][name]["size"] = [list(s.size) for s in result.states]
                    record["images"][name]["tiles"] = [len(s.tiles or ()) for s in result.steps]
                with timer.phase("write"):  # only the time spent waiting for the writer
                    written = writer.submit(name, result, notes, str(path))
                for done in written:
                    run.logger.log_zoom(*done)
            record["timings"] = timer.summary()
            run.save_record()  # after every batch: an interrupted run still says what it did
        with timer.phase("write"):
            written = writer.drain(wait=True)
        for done in written:
            run.logger.log_zoom(*done)
    finally:  # also on errors: no stray worker thread (the bar and core share close with the run)
        writer.close()
    progress.close()  # its last line before the summary below, not after it

    record["timings"] = {**timer.summary(), "writer_busy_s": round(writer.busy_s, 4)}
    record["images"] = finished_images(run.dir, plan.names)  # every attempt's, in input order
    record["finished"] = sorted(record["images"])
    run.save_record()
    run.logger.log_summary(
        {"images": len(record["finished"]), "failed": len(record["failed"]), **record["timings"]}
    )
    run.logger.close()
    _report(run.dir, record)
    return record


def _load(item: tuple[Path, str], cfg: DictConfig, chain: ZoomChain, full: FullImageOptions | None) -> Loaded:
    """One input file as the chain's x0 (named by its file name in messages); its notes logged."""
    from coz.zoom.batches import load_image

    path, name = item
    image = load_image(path, name, cfg, chain, full, label=path.name)
    for note in image.notes:
        log.warning("%s", note)
    return image


def _logger(run: Run) -> Any:
    from coz.run.loggers import build_logger

    return build_logger(run.cfg, run.dir, run.plan.names)


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
    if done:  # the pictures a person looks at first, those this run wrote (save.strip, save.gif)
        folder = run_dir / "images" / record["finished"][0]
        shown = [folder / name for name in ("strip.png", "zoom.gif") if (folder / name).is_file()]
        if shown:
            print(f"coz.zoom: e.g. {' and '.join(str(p) for p in shown)}")


TOOL = Tool(
    name="zoom",
    schema=ZoomTool,
    body=zoom,
    check=check,
    resume="units",  # a rerun zooms the images whose results are not in the folder yet
    logger=lambda run: _logger(run),
)

main = hydra_entry(TOOL)  # exit 1 when inputs were skipped: every good result is kept

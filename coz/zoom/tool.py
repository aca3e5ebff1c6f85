"""``python -m coz.zoom input=PATH``: zoom into images with Chain-of-Zoom.

Every option is a Hydra override (``conf/zoom/zoom.yaml``): ``zoom=`` recursive_multiscale (CoZ, the
default) | recursive | onestep | nearest | bicubic | full (full-image SR, ``coz.full_image``),
``backbone=``, ``prompt=``, ``logger=``, ``zoom.steps=``, ``batch_size=``, ``seed=``, ``device=``...
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.chain import ZoomChain
from coz.full_image import FullImageOptions
from coz.images import ImageInputError, find_images, not_images
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
from coz.zoom.batches import Loaded, load_image, zoom_batches
from coz.zoom.build import build_chain, full_options
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

    def failed(item: tuple[Path, str], err: ImageInputError) -> None:
        log.error("%s", err)
        record["failed"][str(item[0])] = str(err)

    try:
        batches = zoom_batches(
            chain,
            todo,
            batch_size,
            load=lambda item: _load(item, cfg, chain, full),
            on_step=lambda n: (progress.update(n), cpu_share.refresh()),
            on_failure=failed,
            on_batch=lambda names: progress.set_postfix(", ".join(names)[:40]),
        )
        for batch in batches:
            for image, zoom in batch:
                name, path, notes = image.name, image.source, image.notes
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


def _load(item: tuple[Path, str], cfg: DictConfig, chain: ZoomChain, full: FullImageOptions | None) -> Loaded:
    """One input file as the chain's x0 (named by its file name in messages); its notes logged."""
    path, name = item
    image = load_image(path, name, cfg, chain, full, label=path.name)
    for note in image.notes:
        log.warning("%s", note)
    return image


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

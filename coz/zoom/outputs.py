"""Writes one image's zoom to the run folder. Every file is written atomically, and a zoom
counts as finished only when its ``zoom.json`` exists (written last), so an interrupted run
resumes where it stopped.

Layout, per image ``<name>``::

    images/<name>/state_0.png .. state_n.png   the scale-states x0..xn
    images/<name>/input_<i>.png                 step i's bicubic zoom (what the backbone and prompt saw)
    images/<name>/prompt_<i>.txt                step i's prompt
    images/<name>/strip.png                     the states side by side, zoomed regions boxed
    images/<name>/zoom.gif                      the animated zoom
    images/<name>/zoom.json                     scales, prompts, file names
    scales/x<scale>/<name>.png                  every image at one scale (for per-scale metrics)

Full-image zooms (``zoom=full``) write the same files: each state is the whole image at its scale
(4x larger per step), ``input_<i>`` is the LANCZOS 4x upsampling of state i-1 (every tile's view is a
crop of it), ``prompt_<i>.txt`` holds one prompt per tile, one a line, in the order of the tile boxes
that ``zoom.json`` lists (``tiles``: (top, left, bottom, right) in state i's pixels); the strip and
GIF show the whole result and its detail at every scale (:func:`coz.viz.full_strip`).
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from PIL import Image

from coz.chain import Zoom
from coz.run.atomic import link_or_copy_atomic, write_text_atomic
from coz.viz import full_animation, full_strip, save_gif, save_png, zoom_animation, zoom_strip


def image_dir(run_dir: Path, name: str) -> Path:
    return run_dir / "images" / name


def is_finished(run_dir: Path, name: str) -> bool:
    return (image_dir(run_dir, name) / "zoom.json").exists()


def finished_images(run_dir: Path, names: list[str]) -> dict[str, dict]:
    """``run.json``'s entry of every finished image of ``names``, in that order, read from its
    ``zoom.json``: what a run did survives any number of interruptions and resumes."""
    images = {}
    for name in names:
        if not is_finished(run_dir, name):
            continue
        unit = json.loads((image_dir(run_dir, name) / "zoom.json").read_text(encoding="utf-8"))
        entry = {"source": unit.get("source"), "prompts": unit["prompts"], "notes": unit["notes"]}
        if unit.get("full"):
            entry["size"] = unit["sizes"]
            entry["tiles"] = [len(boxes) for boxes in unit["tiles"]]
        images[name] = entry
    return images


def strip_picture(zoom: Zoom, factor: int) -> Image.Image:
    """The states side by side, labelled x1, x4, ... (a full-image zoom: its whole and details)."""
    labels = [f"x{scale}" for scale in zoom.scales]
    if zoom.full:
        return full_strip(zoom.states, labels=labels)
    return zoom_strip(zoom.states, factor=factor, labels=labels)


def animation_frames(zoom: Zoom, factor: int, size: int) -> list[Image.Image]:
    """The frames of the animated zoom, ``size`` px square."""
    if zoom.full:
        return full_animation(zoom.states, factor=factor, size=size)
    return zoom_animation(zoom.states, factor=factor, size=size)


def write_zoom(
    run_dir: Path,
    name: str,
    zoom: Zoom,
    save: DictConfig,
    factor: int,
    notes: list[str],
    source: str | None = None,
) -> dict[str, Path]:
    """Write every file of one zoom; return them by role (state_0, input_1, prompt_1, strip, gif...)."""
    folder = image_dir(run_dir, name)
    files: dict[str, Path] = {}
    for i, (state, scale) in enumerate(zip(zoom.states, zoom.scales, strict=True)):
        files[f"state_{i}"] = save_png(state, folder / f"state_{i}.png")
        if save.per_scale:  # the same bytes: a hard link, not a second encode
            link_or_copy_atomic(files[f"state_{i}"], run_dir / "scales" / f"x{scale}" / f"{name}.png")
    for i, step in enumerate(zoom.steps, start=1):
        if step.view is not None:
            files[f"input_{i}"] = save_png(step.view, folder / f"input_{i}.png")
        if step.prompt is not None:
            files[f"prompt_{i}"] = write_text_atomic(folder / f"prompt_{i}.txt", step.prompt)
    if save.strip:
        files["strip"] = save_png(strip_picture(zoom, factor), folder / "strip.png")
    if save.gif:
        files["gif"] = save_gif(animation_frames(zoom, factor, int(save.gif_size)), folder / "zoom.gif")
    record = {
        "name": name,
        "source": source,
        "scales": zoom.scales,
        "prompts": [s.prompt for s in zoom.steps],
        "notes": notes,
        "files": {role: str(path.relative_to(run_dir)) for role, path in files.items()},
    }
    if zoom.full:
        record["full"] = True
        record["sizes"] = [list(state.size) for state in zoom.states]
        record["tiles"] = [[list(box) for box in step.tiles or ()] for step in zoom.steps]
        record["tile_prompts"] = [step.tile_prompts for step in zoom.steps]
    write_text_atomic(folder / "zoom.json", json.dumps(record, indent=2))
    return files


class BackgroundWriter:
    """Writes finished zooms on one worker thread, so encoding PNGs and the GIF of one batch
    overlaps the backbone's work on the next (PIL and zlib release the GIL while they encode).

    ``submit`` returns at once unless ``max_pending`` zooms are still being written; ``drain``
    hands back ``(name, zoom, files)`` for every write that has finished (all of them with
    ``wait=True``) and re-raises a write's error in the caller's thread.
    """

    def __init__(self, run_dir: Path, save: DictConfig, factor: int, max_pending: int = 8) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.run_dir, self.save, self.factor = run_dir, save, factor
        self.max_pending = max_pending
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coz-writer")
        self.pending: list = []
        self.busy_s = 0.0  # the worker's own time, for run.json

    def submit(
        self, name: str, zoom: Zoom, notes: list[str], source: str | None = None
    ) -> list[tuple[str, Zoom, dict[str, Path]]]:
        done = self.drain(wait=len(self.pending) >= self.max_pending)
        self.pending.append((name, zoom, self.pool.submit(self._write, name, zoom, notes, source)))
        return done

    def drain(self, wait: bool = False) -> list[tuple[str, Zoom, dict[str, Path]]]:
        finished, still = [], []
        for name, zoom, future in self.pending:
            if wait or future.done():
                finished.append((name, zoom, future.result()))
            else:
                still.append((name, zoom, future))
        self.pending = still
        return finished

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _write(self, name: str, zoom: Zoom, notes: list[str], source: str | None) -> dict[str, Path]:
        import time

        start = time.perf_counter()
        files = write_zoom(self.run_dir, name, zoom, self.save, self.factor, notes, source)
        self.busy_s += time.perf_counter() - start
        return files

"""``coz.study build``: a study folder from zoom results.

    <study>/manifest.json      methods, questions, each rater slot's questions and method order
    <study>/media/<hash>.png   strips, text-question views;  <hash>.gif  animations
    <study>/.hydra/            the config of the build

Media are named by a hash of their bytes, so nothing a rater's browser sees names a method. The
manifest is written last: a folder without one is an unfinished build.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw

from coz.errors import CozError
from coz.geometry import center_box
from coz.run.atomic import atomic_path, write_text_atomic
from coz.study.assign import rater_plans
from coz.study.manifest import MANIFEST, load_manifest
from coz.study.sources import Run, find_runs, zoom_record

log = logging.getLogger("coz.study")


def options(cfg: DictConfig) -> dict[str, Any]:
    """The build's options (their types and ranges: :mod:`coz.study.schema`); a build needs ``from=``."""
    sources = list(cfg["from"])
    if not sources:
        raise CozError(
            "from= is missing: give the zoom run folders or evaluate sweeps to compare, from=[a,b]"
        )
    sizes = {key: OmegaConf.select(cfg, key) for key in ("media.tile", "media.gif_size", "media.view_size")}
    return {
        "from": sources,
        "kinds": list(cfg.questions),
        "text_step": cfg.text_step,
        "per_rater": cfg.per_rater,
        "raters": cfg.raters,
        **sizes,
    }


def check(cfg: DictConfig, study_dir: Path) -> tuple[dict[str, Any], list[Run]]:
    """The options and the runs to compare, checked before the study folder is claimed: a bad
    ``from=`` leaves nothing behind."""
    opts = options(cfg)
    runs = find_runs(opts["from"])
    if (study_dir / MANIFEST).exists():
        raise CozError(f"{study_dir} already holds a study ({MANIFEST}); build into a new folder")
    if opts["kinds"] == ["text"] and not any(has_prompts(run) for run in runs):
        raise CozError(
            "questions=[text]: no run of from= has prompts (they zoomed with prompt=null), so there is "
            "nothing to ask; add image questions (questions=[image,text]) or give runs with prompts"
        )
    return opts, runs


def has_prompts(run: Run) -> bool:
    """Whether any image of ``run`` has a non-empty prompt at any step."""
    return any(
        (prompt or "").strip()
        for name in run.images
        for prompt in zoom_record(run, name).get("prompts") or []
    )


def build(cfg: DictConfig, study_dir: Path, opts: dict[str, Any], runs: list[Run]) -> dict[str, Any]:
    """Write the study of ``runs`` into ``study_dir`` (claimed by the caller); returns the manifest."""
    names = [n for n in runs[0].images if all(n in run.images for run in runs[1:])]
    if not names:
        raise CozError(
            f"from={','.join(opts['from'])}: the runs share no image; a study compares zooms of the same images"
        )
    for run in runs:
        if missing := sorted(set(run.images) - set(names)):
            log.warning(
                "%s: %d image(s) not in every run, left out: %s",
                run.method,
                len(missing),
                ", ".join(missing[:5]),
            )
    media = Media(study_dir / "media")
    questions: dict[str, dict] = {}
    for name in names:
        records = {run.method: (run, zoom_record(run, name)) for run in runs}
        if "image" in opts["kinds"]:
            questions[f"image-{len(questions)}"] = image_question(name, records, media, opts)
        if "text" in opts["kinds"]:
            text = text_question(name, records, media, opts)
            if text:
                questions[f"text-{len(questions)}"] = text
    kinds = [k for k in opts["kinds"] if any(q["kind"] == k for q in questions.values())]
    if "text" in opts["kinds"] and "text" not in kinds:
        log.warning("no run has prompts: image questions only")
    manifest = {
        "format": 1,
        "methods": [run.method for run in runs],
        "sources": {run.method: str(run.folder.resolve()) for run in runs},
        "kinds": kinds,
        "per_rater": opts["per_rater"],
        "seed": cfg.seed,
        "questions": questions,
        "raters": rater_plans(questions, kinds, opts["per_rater"], opts["raters"], cfg.seed),
    }
    write_text_atomic(study_dir / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
    log.info(
        "study of %d methods (%s): %d questions on %d images, %d rater slots -> %s",
        len(runs),
        "; ".join(manifest["methods"]),
        len(questions),
        len(names),
        opts["raters"],
        study_dir,
    )
    return load_manifest(study_dir)


def states_of(run: Run, name: str, record: dict) -> list[Image.Image]:
    files = record.get("files", {})
    states = []
    for i in range(len(record.get("scales", []))):
        path = run.folder / files.get(f"state_{i}", f"images/{name}/state_{i}.png")
        try:
            states.append(Image.open(path).convert("RGB"))
        except OSError as err:
            raise CozError(f"{path}: cannot read the scale-state ({err})") from None
    if len(states) < 2:
        raise CozError(f"{run.folder / 'images' / name}: fewer than two scale-states; nothing to rate")
    return states


def _factor(record: dict) -> int:
    scales = record["scales"]
    return int(round(scales[1] / scales[0]))


def image_question(name: str, records: dict, media: Media, opts: dict) -> dict:
    from coz.viz import zoom_animation, zoom_strip

    samples = {}
    for method, (run, record) in records.items():
        states = states_of(run, name, record)
        factor = _factor(record)
        labels = [f"x{s}" for s in record["scales"]]
        strip = zoom_strip(states, factor, labels=labels, tile=opts["media.tile"])
        frames = zoom_animation(states, factor, size=opts["media.gif_size"])
        samples[method] = {"strip": media.png(strip), "gif": media.gif(frames)}
    return {"kind": "image", "image": name, "samples": samples}


def text_question(name: str, records: dict, media: Media, opts: dict) -> dict | None:
    """Each method's prompt of the chosen step beside the view it describes: the state that step
    zooms into, with the zoomed region (its center) in a white box. Methods without prompts are left
    out; an image no method has prompts for gets no text question."""
    samples = {}
    step = None
    for method, (run, record) in records.items():
        prompts = record.get("prompts") or []
        step = len(prompts) if opts["text_step"] == "last" else opts["text_step"]
        if not 1 <= step <= len(prompts):
            raise CozError(f"text_step={opts['text_step']}: {run.folder} has {len(prompts)} steps")
        text = (prompts[step - 1] or "").strip()
        if not text:
            continue
        state = states_of(run, name, record)[step - 1]
        view = state.resize((opts["media.view_size"],) * 2, Image.Resampling.BICUBIC)
        view = boxed(view, _factor(record))  # drawn at the shown size: crisp at any state size
        samples[method] = {"view": media.png(view), "text": text}
    return {"kind": "text", "image": name, "step": step, "samples": samples} if samples else None


def boxed(state: Image.Image, factor: int) -> Image.Image:
    """The state with the region the next step zooms into outlined in white (Figure 9, right)."""
    image = state.copy()
    left, top, right, bottom = center_box(image.width, factor)
    width = max(2, image.width // 128)
    ImageDraw.Draw(image).rectangle((left, top, right - 1, bottom - 1), outline=(255, 255, 255), width=width)
    return image


class Media:
    """Writes media under names made from their bytes (``<sha256[:16]>.<ext>``), atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _write(self, data: bytes, ext: str) -> str:
        name = f"{hashlib.sha256(data).hexdigest()[:16]}.{ext}"
        path = self.folder / name
        if not path.exists():
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return f"media/{name}"

    def png(self, image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=6)
        return self._write(buffer.getvalue(), "png")

    def gif(self, frames: list[Image.Image]) -> str:
        from coz.viz import save_gif

        with tempfile.TemporaryDirectory(prefix="coz-study-") as scratch:  # save_gif writes a file
            path = save_gif(frames, Path(scratch) / "animation.gif")
            return self._write(path.read_bytes(), "gif")

"""What the page does, without the page: the choices it offers, and one job from input to files.

A job zooms one photo (an upload or a named sample: nothing else is ever read) with the Python API
(:class:`coz.Zoomer`) twice: the chosen zoom, and beside it what you get without Chain-of-Zoom at
the same scale (``zoom=onestep``, direct SR; for ``zoom=full``, the whole photo magnified by bicubic
resampling). Its files go to a folder of their own under the server's working folder.
"""

from __future__ import annotations

import logging
import shutil
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from coz.errors import CozError

log = logging.getLogger("coz.app")

NULL_PROMPT = "null"
#: the page's two kinds of zoom -> the ``zoom=`` option of each and of its comparison
MODES = {"coz": ("recursive_multiscale", "onestep"), "full": ("full", "full")}


@dataclass
class JobRequest:
    """One press of Zoom: the input (an upload's path or a sample's name) and the choices."""

    upload: Path | None
    sample: str | None
    backbone: str
    prompt: str
    mode: str = "coz"
    steps: Any = 4
    user_prompt: str = ""


@dataclass
class JobFiles:
    """What a job wrote: the states with their captions, the two pictures compared, the rest."""

    folder: Path
    gallery: list[tuple[str, str]]
    prompts: str  # each state's caption, one a line (Markdown): the prompts in full
    compare: tuple[str, str]  # (this zoom's last state, the comparison at the same scale)
    compare_labels: tuple[str, str]
    strip: str
    gif: str
    archive: str
    status: str


class ZoomService:
    """The page's choices, its checks, and :meth:`run` (one job)."""

    def __init__(self, cfg: DictConfig, work_dir: Path) -> None:
        self.cfg = cfg
        self.work_dir = work_dir
        self.backbones = list(cfg.backbones) + [
            b for b in cfg.cached_backbones if _model_cached("backbone", b)
        ]
        self.prompts = list(cfg.prompts) + [p for p in cfg.cached_prompts if _model_cached("prompt", p)]
        self.samples = _samples(Path(cfg.samples))
        self._zoomers: OrderedDict[tuple, Any] = OrderedDict()  # the last few configs stay loaded
        self._jobs: list[Path] = []

    def check(self, request: JobRequest) -> int:
        """The number of steps, once every choice is one the page offers."""
        if request.backbone not in self.backbones:
            raise CozError(f"backbone {request.backbone!r} is not offered here ({', '.join(self.backbones)})")
        if request.prompt not in self.prompts:
            raise CozError(f"prompt mode {request.prompt!r} is not offered here ({', '.join(self.prompts)})")
        if request.mode not in MODES:
            raise CozError(f"zoom {request.mode!r} is not offered here ({', '.join(MODES)})")
        if request.mode == "full":
            return 1  # one 4x step of the whole photo: the next would be 16x its pixels
        try:
            n = int(request.steps)
        except (TypeError, ValueError):
            n = 0
        if not 1 <= n <= self.cfg.max_steps:
            raise CozError(f"steps={request.steps}: choose 1 to {self.cfg.max_steps}")
        return n

    def load(self, request: JobRequest):
        """The job's photo, checked (size and pixels from the header, before decoding), and its name."""
        from coz.images import ImageInputError, load_rgb

        if request.upload is not None:
            path = request.upload
            try:
                image = load_rgb(path, max_pixels=self.cfg.max_pixels)[0]
            except ImageInputError as err:  # name the user's file, not the server's copy
                raise ImageInputError(path.name, err.problem) from None
            name = path.stem
        elif request.sample:
            if request.sample not in self.samples:
                raise CozError(f"no sample named {request.sample!r}")
            image, name = load_rgb(self.samples[request.sample])[0], request.sample
        else:
            raise CozError("upload a photo or pick a sample first")
        side = self.cfg.full_max_side
        if request.mode == "full" and max(image.size) > side:
            raise CozError(
                f"{name}: {image.width}x{image.height} is too large for the whole-photo zoom "
                f"(sides up to {side} px); choose Chain-of-Zoom"
            )
        return image, name

    def zoomer(self, mode: str, backbone: str, prompt: str, steps: int, user_prompt: str):
        import coz

        key = (mode, backbone, prompt, steps, user_prompt)
        if key not in self._zoomers:
            options = {"backbone": backbone, "prompt": prompt, "steps": steps, "user_prompt": user_prompt}
            self._zoomers[key] = coz.Zoomer(*self.cfg.zoom_overrides, f"zoom={mode}", **options)
            while len(self._zoomers) > 3:
                self._zoomers.popitem(last=False)
        self._zoomers.move_to_end(key)
        return self._zoomers[key]

    def run(self, request: JobRequest, report: Callable[[int, int, str], None]) -> JobFiles:
        """One job; ``report(done, total, what)`` after each step (it may raise to stop the job)."""
        n = self.check(request)
        image, name = self.load(request)
        zoom_mode, compare_mode = MODES[request.mode]
        user_prompt = (request.user_prompt or "").strip()
        # full: no model and no prompt beside it; coz: the same model and prompt in one step
        compare_backbone = "bicubic" if request.mode == "full" else request.backbone
        compare_prompt = NULL_PROMPT if request.mode == "full" else request.prompt
        total = 2 * n
        report(0, total, "loading the models")
        zoomer = self.zoomer(zoom_mode, request.backbone, request.prompt, n, user_prompt)
        compare = self.zoomer(compare_mode, compare_backbone, compare_prompt, n, user_prompt)
        label = "Chain-of-Zoom" if request.mode == "coz" else "whole photo"
        result = zoomer.zoom(
            image, on_step=lambda done, _: report(done, total, f"{label}: step {done} of {n}")
        )
        other = compare.zoom(
            image, on_step=lambda done, _: report(n + done, total, f"comparison: step {done} of {n}")
        )
        result.name = other.name = _safe_name(name)
        return self._write(request, result, other)

    def _write(self, request: JobRequest, result, other) -> JobFiles:
        job = self._new_job_dir()
        files = result.save(job / "zoom")
        other_files = other.save(job / "zoom" / "comparison")
        strip = files.get("strip") or _save(result.strip(), job / "strip.png")
        gif = files.get("gif") or result.gif(job / "zoom.gif")
        captions = [
            _caption(scale, text, request.mode)
            for scale, text in zip(result.scales, [None, *result.prompts], strict=True)
        ]
        gallery = [(str(files[f"state_{i}"]), caption) for i, caption in enumerate(captions)]
        last = len(result.states) - 1
        top = result.scales[-1]
        if request.mode == "full":
            labels = (f"whole photo x{top} ({request.backbone})", f"bicubic x{top}")
        else:
            labels = (f"Chain-of-Zoom x{top}", f"direct SR x{top} (one step, {request.backbone})")
        archive = _zip(job / "zoom", job / f"coz-{result.name}.zip")
        status = f"Done: {len(result.states)} scale-states, x1 to x{top}."
        compare = (str(files[f"state_{last}"]), str(other_files[f"state_{last}"]))
        prompts = "\n".join(f"- {_escape(caption)}" for caption in captions)
        return JobFiles(job, gallery, prompts, compare, labels, str(strip), str(gif), str(archive), status)

    def _new_job_dir(self) -> Path:
        job = self.work_dir / "jobs" / uuid.uuid4().hex
        job.mkdir(parents=True)
        self._jobs.append(job)
        while len(self._jobs) > self.cfg.keep_jobs:
            shutil.rmtree(self._jobs.pop(0), ignore_errors=True)
        return job


def _model_cached(group: str, option: str) -> bool:
    """Whether the hub model of ``conf/shared/<group>/<option>.yaml`` is in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    from coz.api import compose_zoom_config

    try:
        model = str(compose_zoom_config([f"{group}={option}"])[group].get("model") or "")
    except CozError:
        return False
    if not model:
        return False
    if Path(model).is_dir():
        return True
    for name in ("model_index.json", "config.json"):
        if isinstance(try_to_load_from_cache(model, name), str):
            return True
    return False


def _samples(folder: Path) -> dict[str, Path]:
    """The sample photos, written from scikit-image if the folder has none."""
    from coz.samples import write_samples

    try:
        paths = write_samples(folder)
    except OSError as err:
        log.warning("no sample photos (%s)", err)
        return {}
    return {p.stem: p for p in paths}


def _caption(scale: int, prompt: str | None, mode: str) -> str:
    """A state's caption: its scale and the prompt that made it (full: how many tile prompts)."""
    if scale == 1:
        return "x1 (input)"
    if mode == "full" and prompt:
        return f"x{scale}: {len(prompt.splitlines())} tiles, one prompt each (prompt_1.txt in the zip)"
    if prompt is None:
        return f"x{scale} (no model, no prompt)"
    return f"x{scale}: {prompt}" if prompt else f"x{scale}: (null prompt)"


def _escape(text: str) -> str:
    """Prompt text shown as Markdown as it is (a prompt is the model's words, not markup)."""
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|" else c for c in text)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "image"


def _save(image, path: Path) -> Path:
    from coz.viz import save_png

    return save_png(image, path)


#: files stored in a job's zip as they are: compressed already (deflating a job's PNGs again saved
#: 0.5% of their size for 20 times the CPU of storing them)
COMPRESSED = {".png", ".gif", ".jpg", ".jpeg", ".webp"}


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stored = path.suffix.lower() in COMPRESSED
                zf.write(path, path.relative_to(folder), zipfile.ZIP_STORED if stored else None)
    return target

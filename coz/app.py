"""``python -m coz.app`` (or ``coz-app``): a web page to zoom into a photo, on the Python API.

Upload a photo or pick a sample, choose the backbone, prompt mode and steps, press Zoom: the page
shows x1..x256 with each step's prompt, the strip, the animated zoom and a zip of every file. Jobs
wait in one queue and run one at a time (one device; the page shows the queue position). A bad
upload gets a one-line message on the page; uploads are deleted when their job ends, and results
live in a temporary folder that goes with the server. Options: ``conf/app/app.yaml``.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from coz.errors import CozError
from coz.run.cli import hydra_entry

log = logging.getLogger("coz.app")

NULL_PROMPT = "null"
STATUS_OK = "Done: {n} scale-states, x1 to x{top}."


class ZoomService:
    """What the page does, without the page: choices, jobs and the models they load."""

    def __init__(self, cfg: DictConfig, work_dir: Path) -> None:
        self.cfg = cfg
        self.work_dir = work_dir
        self.backbones = list(cfg.backbones) + [
            b for b in cfg.cached_backbones if _model_cached("backbone", b)
        ]
        self.prompts = list(cfg.prompts) + [p for p in cfg.cached_prompts if _model_cached("prompt", p)]
        self.samples = _samples(Path(cfg.samples))
        self._zoomers: OrderedDict[tuple, Any] = OrderedDict()  # the last two configs stay loaded
        self._jobs: list[Path] = []

    def zoomer(self, backbone: str, prompt: str, steps: int, user_prompt: str):
        import coz

        key = (backbone, prompt, steps, user_prompt)
        if key not in self._zoomers:
            options = {"backbone": backbone, "prompt": prompt, "steps": steps, "user_prompt": user_prompt}
            self._zoomers[key] = coz.Zoomer(*self.cfg.zoom_overrides, **options)
            while len(self._zoomers) > 2:
                self._zoomers.popitem(last=False)
        self._zoomers.move_to_end(key)
        return self._zoomers[key]

    def check(self, backbone: str, prompt: str, steps: Any) -> int:
        if backbone not in self.backbones:
            raise CozError(f"backbone {backbone!r} is not offered here ({', '.join(self.backbones)})")
        if prompt not in self.prompts:
            raise CozError(f"prompt mode {prompt!r} is not offered here ({', '.join(self.prompts)})")
        try:
            n = int(steps)
        except (TypeError, ValueError):
            n = 0
        if not 1 <= n <= int(self.cfg.max_steps):
            raise CozError(f"steps={steps}: choose 1 to {self.cfg.max_steps}")
        return n

    def load(self, upload: str | None, sample: str | None):
        """The job's image from the upload (checked, then deleted by the caller) or a sample."""
        from coz.images import ImageInputError, load_rgb

        if upload:
            path = Path(upload)
            size_mb = path.stat().st_size / 2**20
            if size_mb > float(self.cfg.max_upload_mb):
                raise ImageInputError(
                    path.name, f"{size_mb:.1f} MB is over the upload limit of {self.cfg.max_upload_mb} MB"
                )
            try:
                return load_rgb(path, max_pixels=int(self.cfg.max_pixels))[0], path.stem
            except ImageInputError as err:  # name the user's file, not the server's copy
                raise ImageInputError(path.name, err.problem) from None
        if sample:
            if sample not in self.samples:
                raise CozError(f"no sample named {sample!r}")
            return load_rgb(self.samples[sample])[0], sample
        raise CozError("upload a photo or pick a sample first")

    def run(self, upload, sample, backbone, prompt, steps, user_prompt, on_step=None) -> dict[str, Any]:
        """One job: the result's gallery (image, caption) pairs, strip, GIF and zip paths."""
        try:
            n = self.check(backbone, prompt, steps)
            image, name = self.load(upload, sample)
            zoomer = self.zoomer(backbone, prompt, n, (user_prompt or "").strip())
            result = zoomer.zoom(image, on_step=on_step)
        finally:  # nothing a user uploads is kept after the job
            if upload:
                Path(upload).unlink(missing_ok=True)
                _remove_empty(Path(upload).parent)
        result.name = _safe_name(name)
        job = self._new_job_dir()
        files = result.save(job / "zoom")
        strip = files.get("strip") or _save(result.strip(), job / "strip.png")
        gif = files.get("gif") or result.gif(job / "zoom.gif")
        gallery = [
            (str(files[f"state_{i}"]), _caption(scale, text))
            for i, (scale, text) in enumerate(zip(result.scales, [None, *result.prompts], strict=True))
        ]
        archive = _zip(job / "zoom", job / f"coz-{result.name}.zip")
        status = STATUS_OK.format(n=len(result.states), top=result.scales[-1])
        return {
            "gallery": gallery,
            "strip": str(strip),
            "gif": str(gif),
            "zip": str(archive),
            "status": status,
        }

    def _new_job_dir(self) -> Path:
        job = self.work_dir / "jobs" / uuid.uuid4().hex[:12]
        job.mkdir(parents=True)
        self._jobs.append(job)
        while len(self._jobs) > int(self.cfg.keep_jobs):
            shutil.rmtree(self._jobs.pop(0), ignore_errors=True)
        return job


def build_demo(service: ZoomService):
    """The Gradio page (Blocks) around ``service``; queue: one job at a time."""
    import gradio as gr

    theme = gr.themes.Default(  # system fonts: the page loads nothing from the internet
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    steps_default = min(int(service.cfg.steps), int(service.cfg.max_steps))
    with gr.Blocks(title="Chain-of-Zoom", theme=theme, analytics_enabled=False) as demo:
        gr.Markdown(
            "# Chain-of-Zoom\nZoom 4x per step into the center of a photo, up to 256x, "
            "with a super-resolution model guided by a prompt per step."
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Photo (PNG, JPEG, ...)", file_types=["image"], elem_id="upload")
                sample = gr.Dropdown(
                    list(service.samples), label="or a sample photo", value=None, elem_id="sample"
                )
                backbone = gr.Dropdown(service.backbones, value=service.backbones[0], label="Backbone")
                prompt = gr.Dropdown(service.prompts, value=service.prompts[0], label="Prompt mode")
                steps = gr.Slider(
                    1, int(service.cfg.max_steps), value=steps_default, step=1, label="Steps (4x each)"
                )
                user_prompt = gr.Textbox(label="Your prompt (optional, added to every step's)", max_lines=1)
                button = gr.Button("Zoom", variant="primary", elem_id="zoom")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="x1 .. x256", elem_id="gallery", columns=5, height="auto")
                strip = gr.Image(label="Strip", type="filepath", elem_id="strip")
                with gr.Row():
                    gif = gr.Image(label="Animated zoom", type="filepath", elem_id="gif")
                    archive = gr.File(label="Everything (zip)", elem_id="zip")

        def zoom(upload, sample, backbone, prompt, steps, user_prompt, progress=gr.Progress()):  # noqa: B008 (gradio finds it by the default)
            upload_path = getattr(upload, "name", upload)  # gradio 3 hands a tempfile wrapper
            if upload_path:  # gradio keeps the uploaded file and gives us a copy: both go
                _delete_originals(Path(upload_path), service.work_dir / "gradio")
            progress(0, desc="loading")
            try:
                out = service.run(
                    upload_path,
                    sample,
                    backbone,
                    prompt,
                    steps,
                    user_prompt,
                    on_step=lambda done, total: progress(done / total, desc=f"step {done} of {total}"),
                )
            except CozError as err:  # a bad upload or choice: say so on the page, keep serving
                log.warning("job refused: %s", err)
                return [], None, None, None, f"**Error:** {err}"
            return out["gallery"], out["strip"], out["gif"], out["zip"], out["status"]

        button.click(
            zoom,
            [upload, sample, backbone, prompt, steps, user_prompt],
            [gallery, strip, gif, archive, status],
            api_name="zoom",
        )
    demo.queue(concurrency_count=1, max_size=int(service.cfg.queue_size), api_open=True)
    return demo


def launch(cfg: DictConfig, block: bool = True):
    """Serve the page; with ``block=False`` return (demo, url, work_dir) at once (tests)."""
    work_dir = Path(tempfile.mkdtemp(prefix="coz-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(
        work_dir / "gradio"
    )  # uploads and served copies: gone with the server
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if block:  # stopped with Ctrl-C or a TERM signal: results and uploads go too
        atexit.register(shutil.rmtree, work_dir, True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    service = ZoomService(cfg, work_dir)
    demo = build_demo(service)
    log.info("backbones %s, prompt modes %s", service.backbones, service.prompts)
    try:
        _, url, _ = demo.launch(
            server_name=str(cfg.host),
            server_port=int(cfg.port),
            prevent_thread_lock=not block,
            show_api=False,
            quiet=not block,
        )
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    if block:
        demo.close()
        shutil.rmtree(work_dir, ignore_errors=True)
        return None
    return demo, url, work_dir


def _delete_originals(copy: Path, root: Path) -> None:
    """Delete the files under ``root`` that ``copy`` was copied from (same name, same bytes), and
    their folders once empty; ``copy`` itself goes when its job ends."""
    import filecmp

    for original in root.glob(f"*/{copy.name}"):
        if original != copy and filecmp.cmp(original, copy, shallow=False):
            original.unlink(missing_ok=True)
            _remove_empty(original.parent)


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another user's upload) or gone
        pass


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


def _caption(scale: int, prompt: str | None) -> str:
    if scale == 1:
        return "x1 (input)"
    return f"x{scale}: {prompt}" if prompt else f"x{scale}"


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "image"


def _save(image, path: Path) -> Path:
    from coz.viz import save_png

    return save_png(image, path)


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder))
    return target


def _cli(cfg: DictConfig) -> None:
    launch(cfg)


main = hydra_entry(_cli, config_name="app")

if __name__ == "__main__":
    main()

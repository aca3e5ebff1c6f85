"""The Gradio page around :class:`~coz.app.service.ZoomService`.

One event computes (Zoom, API name ``zoom``): queued, one at a time, its queue position and each
step's progress shown; Cancel takes it out of the queue or stops it at its next step. The other
events run in the browser only (picking a sample clears the upload and back).
"""

from __future__ import annotations

import logging
from pathlib import Path

from coz.app.jobs import Job, JobCancelled
from coz.app.service import JobRequest, ZoomService
from coz.app.uploads import delete_upload, upload_path
from coz.errors import CozError

log = logging.getLogger("coz.app")

#: how often (s) a waiting handler hands control back to Gradio, which can then cancel it
_POLL_S = 0.5

INTRO = (
    "# Chain-of-Zoom\nZoom 4x per step into the center of a photo, up to 256x, with a super-resolution "
    "model guided by a prompt per step; beside it, the same model in one step (direct SR)."
)


def build_demo(service: ZoomService, uploads: Path):
    """The page (a ``gr.Blocks``); ``uploads`` is the only folder a job's upload may come from."""
    import gradio as gr

    cfg = service.cfg
    backbone_default = service.backbones[0]
    steps_default = min(cfg.steps, cfg.max_steps)
    modes = [
        ("Chain-of-Zoom: the center, 4x per step", "coz"),
        (f"The whole photo, 4x once (zoom=full; sides up to {cfg.full_max_side} px)", "full"),
    ]
    with gr.Blocks(title="Chain-of-Zoom", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.Image(
                    label="Your photo (PNG, JPEG, ...)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload"],
                    height=260,
                    elem_id="upload",
                )
                # Gradio's own preprocessing would decode the photo (and accept data: URLs) before
                # our size and pixel checks: the job takes the uploaded file's path only.
                upload.preprocess = lambda payload: None if payload is None else str(payload.path or "")
                sample = gr.Dropdown(
                    list(service.samples), label="or a sample photo", value=None, elem_id="sample"
                )
                backbone = gr.Dropdown(
                    service.backbones, value=backbone_default, label="Backbone", elem_id="backbone"
                )
                prompt = gr.Dropdown(service.prompts, value=service.prompts[0], label="Prompt mode")
                mode = gr.Radio(modes, value="coz", label="Zoom", elem_id="mode")
                steps = gr.Slider(
                    1,
                    cfg.max_steps,
                    value=steps_default,
                    step=1,
                    label="Steps (4x each; Chain-of-Zoom)",
                    elem_id="steps",
                )
                user_prompt = gr.Textbox(label="Your prompt (optional, added to every step's)", max_lines=1)
                with gr.Row():
                    button = gr.Button("Zoom", variant="primary", elem_id="zoom")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                with gr.Row():
                    compare_zoom = gr.Image(label="Chain-of-Zoom", type="filepath", elem_id="coz")
                    compare_direct = gr.Image(label="Direct SR", type="filepath", elem_id="direct")
                gallery = gr.Gallery(
                    label="Every scale-state, with the prompt that made it",
                    elem_id="gallery",
                    columns=5,
                    height=240,
                    object_fit="contain",
                )
                prompts = gr.Markdown(elem_id="prompts")
                with gr.Accordion("Strip, animation, files", open=False):
                    strip = gr.Image(label="Strip", type="filepath", elem_id="strip")
                    with gr.Row():
                        gif = gr.Image(label="Animated zoom", type="filepath", elem_id="gif")
                        archive = gr.File(label="Everything (zip)", elem_id="zip")
        outputs = [status, compare_zoom, compare_direct, gallery, prompts, strip, gif, archive]

        def zoom(upload, sample, backbone, prompt, mode, steps, user_prompt, progress=gr.Progress()):  # noqa: B008 (gradio finds it by the default)
            skip = [gr.skip()] * len(outputs)
            path = None
            try:
                if upload:
                    path = upload_path(upload, uploads, cfg.max_upload_mb)
                request = JobRequest(
                    path, None if path else sample, backbone, prompt, mode, steps, user_prompt
                )
                service.check(request)
            except CozError as err:  # a bad choice: nothing was computed
                if path is not None:
                    delete_upload(path)
                yield _failed(err, len(outputs))
                return
            job = Job(lambda report: _run(service, request, report), holds=path)
            try:
                while not job.done:
                    done, total, desc = job.wait(_POLL_S)
                    progress(done / max(total, 1), desc=desc)
                    yield skip
            finally:  # also when Gradio cancels or closes this handler: the job stops at its next step
                job.cancel()
            if job.error is not None:
                if not isinstance(job.error, CozError):
                    log.error("job failed", exc_info=job.error)
                    yield _failed(CozError("the job failed on the server (see its log)"), len(outputs))
                    return
                yield _failed(job.error, len(outputs))
                return
            files = job.result
            yield [
                files.status,
                gr.Image(files.compare[0], label=files.compare_labels[0]),
                gr.Image(files.compare[1], label=files.compare_labels[1]),
                files.gallery,
                files.prompts,
                files.strip,
                files.gif,
                files.archive,
            ]

        event = button.click(
            zoom,
            [upload, sample, backbone, prompt, mode, steps, user_prompt],
            outputs,
            api_name="zoom",
            concurrency_limit=1,
            concurrency_id="zoom",
        )
        cancel.click(None, None, None, cancels=[event])
        # in the browser only: an upload and a sample exclude each other
        sample.input(None, None, upload, js="() => null")
        upload.upload(None, None, sample, js="() => null")
    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=1, api_open=False)
    return demo


def _run(service: ZoomService, request: JobRequest, report):
    """The job's work; its upload goes when it ends, however it ends."""
    try:
        return service.run(request, report)
    finally:
        if request.upload is not None:
            delete_upload(request.upload)


def _failed(err: CozError, n_outputs: int) -> list:
    if isinstance(err, JobCancelled):
        log.info("job cancelled")
        return ["Cancelled.", *[None] * (n_outputs - 1)]
    log.warning("job refused: %s", err)
    return [f"**Error:** {err}", *[None] * (n_outputs - 1)]

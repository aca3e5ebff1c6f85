"""Serving the page: a private working folder, the limits, and clean-up when the server stops.

Everything the server writes (uploads, results, Gradio's own files) lives in one temporary working
folder, which is also the only folder whose files any route serves (``allowed_paths`` stays empty:
not the folder the server was started in, not the samples). It is removed when the server stops.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from coz.run.schema import ConfigError

log = logging.getLogger("coz.app")

#: the page this process serves (at most one: see :func:`launch`)
_serving = None


def launch(cfg: DictConfig, block: bool = True):
    """Serve the page; with ``block=False`` return (demo, url, work_dir) at once (tests).

    One page per process: Gradio reads its upload folder from the process environment
    (``GRADIO_TEMP_DIR``) at every request, so a second page would make the first refuse its own
    uploads ("not uploaded by a user"). A second launch while one serves is refused; close the first
    (``demo.close()``) or serve the other from another process.
    """
    global _serving
    if _serving is not None and _serving.is_running:
        raise ConfigError(
            "coz.app: this process already serves a page; close it (demo.close()) or start the "
            "other server in a process of its own (Gradio keeps one upload folder per process)"
        )
    work_dir = Path(tempfile.mkdtemp(prefix="coz-app-")).resolve()
    before = {key: os.environ.get(key) for key in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE")}
    # Gradio's upload folder and file cache, read at every request: ours, and gone with us
    os.environ["GRADIO_TEMP_DIR"] = str(work_dir)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(work_dir / "examples")  # else .gradio/ under the cwd
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if block:  # stopped with Ctrl-C or a TERM signal: results and uploads go too
        atexit.register(shutil.rmtree, work_dir, True)
        for stop in (signal.SIGTERM, signal.SIGINT):  # Gradio's own Ctrl-C waits ~10 s for its server
            signal.signal(stop, lambda *_: sys.exit(0))
    try:
        demo, url = _serve(cfg, work_dir, block)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        for key, value in before.items():  # a refused launch leaves the environment as it was
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        raise
    _serving = demo
    if block:
        demo.close()
        shutil.rmtree(work_dir, ignore_errors=True)
        return None
    return demo, url, work_dir


def _serve(cfg: DictConfig, work_dir: Path, block: bool):
    import gradio as gr
    from starlette.middleware import Middleware

    from coz.app import jobs
    from coz.app.page import build_demo
    from coz.app.pending import PendingUploads, queued_files
    from coz.app.service import ZoomService
    from coz.app.uploads import UploadGuard

    # Gradio reads GRADIO_TEMP_DIR once, at import, for a few folders of its own (vibe_edit_history/, made
    # as a page is built): a second page in this process would make them again in the first one's folder,
    # long deleted, and leave it behind
    for name in ("gradio.routes", "gradio.route_utils", "gradio.mcp", "gradio.screen_recording_utils"):
        if hasattr(module := sys.modules.get(name), "DEFAULT_TEMP_DIR"):
            module.DEFAULT_TEMP_DIR = str(work_dir)
    service = ZoomService(cfg, work_dir)
    max_bytes = int(cfg.max_upload_mb * 2**20)
    demo = build_demo(service, work_dir / "uploads")

    def held():
        queued = queued_files(demo)
        return None if queued is None else queued | jobs.held_files()

    pending = PendingUploads(
        work_dir / "uploads",
        ttl_s=cfg.upload_ttl_s,
        max_bytes=int(cfg.max_pending_upload_mb * 2**20),
        held=held,
    )
    guard = Middleware(UploadGuard, folder=str(work_dir), max_bytes=max_bytes, pending=pending)
    pending.start()  # until the working folder goes (or the server, below)
    log.info("backbones %s, prompt modes %s", service.backbones, service.prompts)
    theme = gr.themes.Default(  # system fonts: the page loads nothing from the internet
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    try:
        _, url, _ = demo.launch(
            server_name=cfg.host,
            server_port=cfg.port,
            prevent_thread_lock=not block,
            quiet=not block,
            theme=theme,
            max_file_size=max_bytes,  # Gradio's own check of each uploaded file, as it arrives
            allowed_paths=[],
            app_kwargs={"middleware": [guard]},
            footer_links=["gradio", "settings"],
            ssr_mode=False,  # no Node server beside Python
            pwa=False,
            mcp_server=False,
            enable_monitoring=False,
            run_history=False,
        )
    except BaseException:
        pending.stop()
        raise
    if block:  # served until now
        pending.stop()
    return demo, url

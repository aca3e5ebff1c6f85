"""``python -m coz.app`` (or ``coz-app``): a web page to zoom into a photo, on the Python API.

Upload a photo or pick a sample, choose the backbone (``span`` first: fast on a CPU), prompt mode,
zoom and steps, press Zoom: the page shows the Chain-of-Zoom result and direct SR side by side at
the chosen scale, every scale-state with its prompt, the strip, the animated zoom and a zip of every
file. Jobs wait in one queue and run one at a time (the page shows the queue position and each
step); Cancel stops a job. Only an upload or a named sample is ever read; only the server's own
working folder (uploads and results) is ever served, and it goes with the server; an upload no job
uses goes after ``upload_ttl_s``. Options:
``conf/app/app.yaml``.

- :mod:`coz.app.tool`: the command line (Hydra)
- :mod:`coz.app.server`: launching, the working folder, clean-up
- :mod:`coz.app.page`: the Gradio page and its one computing event
- :mod:`coz.app.jobs`: one job at a time, progress, cancellation
- :mod:`coz.app.service`: the choices and one job, on :class:`coz.Zoomer`
- :mod:`coz.app.uploads`: request-size limits and private uploads
- :mod:`coz.app.pending`: uploads no job uses go after ``upload_ttl_s``; their total is capped
"""


def main() -> None:
    """``python -m coz.app`` and the console script ``coz-app``."""
    from coz.run.extras import tool_main

    tool_main("app")

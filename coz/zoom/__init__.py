"""``python -m coz.zoom``: the everyday tool. :mod:`~coz.zoom.tool` declares the run (config in,
zoomed images out); :mod:`~coz.zoom.outputs` writes one image's zoom to the run folder."""


def main() -> None:
    """``python -m coz.zoom`` and the console script ``coz-zoom``."""
    from coz.run.extras import tool_main

    tool_main("zoom")

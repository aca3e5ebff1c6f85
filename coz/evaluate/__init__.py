"""``python -m coz.evaluate``: per-scale image-quality metrics of zoom methods, aggregated into the
paper's tables with the published numbers beside ours, plots and an HTML report."""


def main() -> None:
    """``python -m coz.evaluate`` and the console script ``coz-evaluate``."""
    from coz.run.extras import tool_main

    tool_main("evaluate")

"""``python -m coz.evaluate``: per-scale image-quality metrics of zoom methods, aggregated into the
paper's tables with the published numbers beside ours, plots and an HTML report."""

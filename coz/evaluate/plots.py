"""One picture per metric: the metric against the scale, one line per method (ours solid, the paper's
dashed in the same colour), one panel per dataset."""

from __future__ import annotations

import math
from pathlib import Path

from coz.evaluate.aggregate import NAMES


def plot_metric(rows: list[dict], column: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    from coz.run.atomic import write_atomic

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    name, lower = NAMES.get(column, (column, None))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for method in methods:
            cell = sorted(
                (r for r in rows if r["dataset"] == dataset and r["method"] == method),
                key=lambda r: r["scale"],
            )
            for key, style, label in ((column, "-o", method), (f"{column}_paper", "--", f"{method} (paper)")):
                points = [(r["scale"], r[key]) for r in cell if not math.isnan(r[key])]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(
                        xs, ys, style, color=colors[method], label=label, alpha=1.0 if style == "-o" else 0.55
                    )
        ax.set_xscale("log", base=4)
        scales = sorted({r["scale"] for r in rows})
        ax.set_xticks(scales, [f"{s}x" for s in scales])
        arrow = "" if lower is None else (" (lower is better)" if lower else " (higher is better)")
        ax.set_title(f"{dataset}: {name}{arrow}")
        ax.set_xlabel("magnification")
        ax.grid(alpha=0.3)
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return path

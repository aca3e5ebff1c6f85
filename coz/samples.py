"""``python -m coz.samples FOLDER``: write the sample photos that ship inside scikit-image (no
download) as PNGs, the input of ``make demo`` and of the tests."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from coz.run.atomic import write_atomic

# Colour photos of scikit-image's data module that need no download.
SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")


def write_samples(folder: str | Path, names: tuple[str, ...] = SAMPLES) -> list[Path]:
    from skimage import data

    folder = Path(folder)
    written = []
    for name in names:
        path = folder / f"{name}.png"
        if not path.exists():
            image = Image.fromarray(getattr(data, name)())
            write_atomic(path, lambda p, image=image: image.save(p, format="PNG"))
        written.append(path)
    return written


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "outputs/samples"
    for path in write_samples(target):
        print(path)

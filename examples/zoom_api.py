"""Zoom into a photo with coz's Python API and save its strip, GIF and prompts.

    python examples/zoom_api.py [IMAGE] [OUT_FOLDER] [OPTION=VALUE ...]

IMAGE defaults to scikit-image's astronaut, OUT_FOLDER to outputs/api-example; options are the
overrides of ``python -m coz.zoom`` (for example ``backbone=bicubic zoom.steps=2``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import coz
from coz.errors import CozError


def main(argv: list[str]) -> Path:
    out = Path(argv[1] if len(argv) > 1 else "outputs/api-example")
    if argv:
        image = argv[0]
    else:
        from coz.samples import write_samples

        image = write_samples(out / "samples", names=("astronaut",))[0]

    zoomer = coz.Zoomer(*argv[2:])  # the command line's defaults: realesrgan, null prompt, 4 steps
    result = zoomer.zoom(image)  # a path, a PIL image, or a list of them
    out.mkdir(parents=True, exist_ok=True)  # once there is something to write
    for scale, prompt in zip(result.scales[1:], result.prompts, strict=True):
        print(f"x{scale}: {prompt!r}")
    result.strip().save(out / "strip.png")
    result.gif(out / "zoom.gif")
    result.states[-1].save(out / f"x{result.scales[-1]}.png")
    print(f"wrote {out}/strip.png, zoom.gif and x{result.scales[-1]}.png")
    return out


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except CozError as err:  # a bad option or image: one line, as the command line says it
        sys.exit(f"error: {err}")

"""The Python API: zoom from a script or a notebook, with the command line's defaults.

```python
import coz

zoomer = coz.Zoomer(backbone="realesrgan", prompt="none", steps=4)  # loads the model once
result = zoomer.zoom("photo.jpg")  # or a PIL image, or a list of either
result.states, result.scales, result.prompts  # x1..x256 as PIL images, 1..256, one prompt a step
result.strip().save("strip.png"); result.gif("zoom.gif")
coz.zoom_image("photo.jpg", steps=2)  # the same in one call
```

Options are the overrides of ``python -m coz.zoom``: as keywords (``backbone="bicubic"``,
``user_prompt="a cat"``, ``**{"zoom.size": 256}``) or as the strings a command line takes
(``"zoom=recursive"``, ``"save.gif_size=128"``); ``steps`` is short for ``zoom.steps``. The config is
composed from ``conf/zoom/zoom.yaml`` exactly as the command line composes it, and nothing is written
unless asked (``result.save(folder)`` writes the command line's files for one image).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from PIL import Image

from coz.chain import Zoom
from coz.errors import CozError
from coz.zoom.batches import Loaded, load_image, zoom_batches

__all__ = ["ZoomResult", "Zoomer", "zoom_image"]

ImageInput = Image.Image | str | Path

# keyword -> the override it stands for
_ALIASES = {"steps": "zoom.steps"}


@dataclass
class ZoomResult:
    """The zoom of one image: its scale-states, their scales and each step's prompt."""

    name: str
    zoom: Zoom  # the chain's own record (views, full-image tiles)
    factor: int
    notes: list[str]  # conversions done to the input, one line each
    save_options: DictConfig  # the ``save.`` options the Zoomer was made with

    @property
    def states(self) -> list[Image.Image]:
        """x0 (the 512-px input, "x1") then one state per step."""
        return self.zoom.states

    @property
    def scales(self) -> list[int]:
        """The magnification of each state: 1, 4, 16, ..."""
        return self.zoom.scales

    @property
    def prompts(self) -> list[str | None]:
        """The text the backbone saw at each step ("" for the null prompt, None without a model)."""
        return [step.prompt for step in self.zoom.steps]

    def strip(self) -> Image.Image:
        """The states side by side, the zoomed region boxed at every level."""
        from coz.zoom.outputs import strip_picture

        return strip_picture(self.zoom, self.factor)

    def frames(self, size: int | None = None) -> list[Image.Image]:
        """The frames of the animated zoom, ``size`` px square (default ``save.gif_size``)."""
        from coz.zoom.outputs import animation_frames

        return animation_frames(self.zoom, self.factor, int(size or self.save_options.gif_size))

    def gif(self, path: str | Path, size: int | None = None) -> Path:
        """Write the animated zoom to ``path`` (atomically) and return it."""
        from coz.viz import save_gif

        return save_gif(self.frames(size), path)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write what ``python -m coz.zoom`` writes for this image under ``folder``
        (``images/<name>/...``, ``scales/x<scale>/<name>.png``); return the files by role."""
        from coz.zoom.outputs import write_zoom

        return write_zoom(Path(folder), self.name, self.zoom, self.save_options, self.factor, self.notes)


class Zoomer:
    """A zoom configuration with its models loaded once; :meth:`zoom` runs it on images.

    ``backbone``, ``prompt`` and ``steps`` default to the command line's (``realesrgan``, the null
    prompt, 4); ``prompt="none"`` and ``prompt="null"`` both mean the null prompt. Further options
    are keywords or ``"key=value"`` strings (see the module help). A bad option raises
    :class:`coz.errors.CozError` with Hydra's one-line reason, before any model loads.
    """

    def __init__(
        self,
        *overrides: str,
        backbone: str | None = None,
        prompt: str | None = None,
        steps: int | None = None,
        **options: Any,
    ) -> None:
        from coz.zoom.build import build_chain, full_options

        keywords = {"backbone": backbone, "prompt": prompt, "steps": steps, **options}
        args = [_override(_ALIASES.get(k, k), v) for k, v in keywords.items() if v is not None]
        given = {a.partition("=")[0] for a in args}
        for item in overrides:
            if isinstance(item, str) and item.partition("=")[0] in given:
                raise CozError(f"{item!r}: {item.partition('=')[0]} is also given as a keyword")
        from coz.run.schema import typed
        from coz.run.validate import check_chain
        from coz.zoom.schema import ZoomTool

        self.config = typed(ZoomTool, compose_zoom_config([*args, *overrides]))  # one line per bad value
        cfg = self.config

        check_chain(cfg)  # the CLI's checks of the chain's values, one line each, before loading
        try:
            self.full = full_options(cfg)
            self.device = _device(cfg)
            from coz.run.timing import PhaseTimer

            self.chain = build_chain(cfg, self.device, PhaseTimer(), self.full)
        except ValueError as err:  # the chain's checks of steps, factor and size
            raise CozError(str(err)) from None

    def __repr__(self) -> str:
        backbone = self.chain.backbone.name if self.chain.backbone else "none"
        return (
            f"Zoomer(zoom={self.chain.mode}, backbone={backbone}, prompt={self.chain.prompter.name}, "
            f"steps={self.chain.steps}, device={self.device})"
        )

    def zoom(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        on_step: Callable[[int, int], None] | None = None,
    ) -> ZoomResult | list[ZoomResult]:
        """Zoom into one image (a PIL image or a file) or a list of them (or a folder's images).

        Returns one :class:`ZoomResult`, or a list for a list or a folder. Every input is loaded and
        checked before the first step, so a bad file fails at once (one-line
        :class:`coz.images.ImageInputError`) and costs no compute. ``on_step(done, total)`` is called
        after each step of each image. Seeds are reset from ``seed=`` at every call, so an image's
        result does not depend on what was zoomed before.
        """
        from coz.run.cpu_share import CpuShare
        from coz.run.runtime import fixed_threads, seed_everything

        single = isinstance(images, Image.Image | str | Path) and not _is_folder(images)
        inputs = _expand([images] if isinstance(images, Image.Image | str | Path) else list(images))
        if not inputs:
            raise CozError("zoom: no images given")
        cfg, chain = self.config, self.chain
        loaded = [self._load(item, name) for item, name in zip(inputs, _names(inputs), strict=True)]

        seed_everything(cfg.seed)
        total, done = len(loaded) * chain.steps, 0
        results: list[ZoomResult] = []
        batch_size = cfg.batch_size
        with CpuShare(threads=fixed_threads(cfg.threads)) as share:

            def stepped(n: int) -> None:
                nonlocal done
                done += n
                share.refresh()
                if on_step:
                    on_step(done, total)

            for batch in zoom_batches(chain, loaded, batch_size, load=lambda image: image, on_step=stepped):
                results += [ZoomResult(i.name, zoom, chain.factor, i.notes, cfg.save) for i, zoom in batch]
        return results[0] if single else results

    def _load(self, item: ImageInput, name: str) -> Loaded:
        return load_image(item, name, self.config, self.chain, self.full)


def zoom_image(
    image: ImageInput | Sequence[ImageInput], *overrides: str, **options: Any
) -> ZoomResult | list[ZoomResult]:
    """Zoom into ``image`` in one call: ``Zoomer(*overrides, **options).zoom(image)``."""
    return Zoomer(*overrides, **options).zoom(image)


def compose_zoom_config(overrides: Sequence[str]) -> DictConfig:
    """``conf/zoom/zoom.yaml`` with ``overrides``, composed as ``python -m coz.zoom`` composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from coz.run.cli import quote_null_choices, tool_config_dir

    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise CozError(f"{item!r}: options are keywords or 'key=value' strings")
    args = quote_null_choices(list(overrides))
    from hydra.core.global_hydra import GlobalHydra

    # Inside a Hydra app (python -m coz.app) Hydra is initialized with that app's config: set it
    # aside while composing zoom's, and put it back after.
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=tool_config_dir("zoom"), version_base="1.3"):
            return compose(config_name="zoom", overrides=args)
    except (HydraException, OmegaConfBaseException) as err:
        from coz.run import schema
        from coz.zoom.schema import ZoomTool

        line = (
            schema.describe(err)
            or schema.unknown_override(err, ZoomTool)
            or schema.unknown_option(err)
            or " ".join(str(err).split())
        )
        raise CozError(line) from None
    finally:
        if outer is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)


def _override(key: str, value: Any) -> str:
    """A keyword option as a Hydra override; strings are quoted, so commas and spaces stay text."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, int | float):
        return f"{key}={value}"
    if isinstance(value, str | Path):
        return f"{key}={quote(str(value))}"
    raise CozError(f"{key}={value!r}: give a string, a number or a bool (or a '{key}=...' string)")


def quote(text: str) -> str:
    """``text`` as a single-quoted Hydra override value that parses back to exactly ``text``:
    a quote is escaped, and so are the backslashes before a quote or at the end."""
    escaped = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", text)
    escaped = re.sub(r"(\\+)$", lambda m: m[1] * 2, escaped)
    return f"'{escaped}'"


def _device(cfg: DictConfig):
    from coz.run.runtime import resolve_device

    return resolve_device(cfg.device)


def _is_folder(item: ImageInput) -> bool:
    return not isinstance(item, Image.Image) and Path(item).expanduser().is_dir()


def _expand(items: list[ImageInput]) -> list[ImageInput]:
    """Folders become their images (as ``input=FOLDER`` does); missing paths fail at once."""
    from coz.images import find_images

    out: list[ImageInput] = []
    for item in items:
        out += [item] if isinstance(item, Image.Image) else find_images(item)
    return out


def _names(items: list[ImageInput]) -> list[str]:
    """A name per input, for messages and ``save()``: the file's stem, else ``image_<n>``."""
    from coz.run.names import output_names

    paths = [
        Path(item)
        if not isinstance(item, Image.Image)
        else Path(getattr(item, "filename", "") or f"image_{i}")
        for i, item in enumerate(items, start=1)
    ]
    names = output_names(paths)
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # two files of one stem in different folders
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}_{seen[name]}"
    return names

"""Finding and loading user images, with one-line errors for bad input.

``python -m coz.zoom input=PATH`` accepts a file or a folder. Everything a user can
throw at it (a folder of mixed files, a corrupt download, a 16-bit scan, a phone
photo with an EXIF rotation, a decompression bomb) either becomes an 8-bit RGB
image plus human-readable notes about what was converted, or an
:class:`ImageInputError` whose message is one line naming the file.
"""

from __future__ import annotations

import errno
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from coz.errors import CozError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageInputError",
    "find_images",
    "not_images",
    "load_rgb",
    "prepare_x0",
    "to_rgb",
]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)

#: ~12k x 12k. Above Pillow's own warning threshold (~89 MP) because large photos
#: are legitimate input, but low enough that decoding cannot exhaust memory.
DEFAULT_MAX_PIXELS = 150_000_000

#: High-bit-depth pixels converted to 8 bits at a time (_scale_to_8bit).
_BLOCK_PIXELS = 1 << 18

#: Above this many pixels, prepare_x0 resizes only the crop window (see there).
_MAX_INTERMEDIATE_PIXELS = 4096 * 4096

_EXIF_ORIENTATION = 0x0112


def _one_line(text: object) -> str:
    """Escape line breaks (they can even be in file names) so messages stay one line."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n").strip()


class ImageInputError(CozError, ValueError):
    """A user-supplied image path cannot be used; ``str()`` is ``"<path>: <problem>"`` on one line."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = _one_line(problem)
        super().__init__(f"{_one_line(self.path)}: {self.problem}")


# --------------------------------------------------------------------------- finding


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_images(path: str | Path) -> list[Path]:
    """The images to process for ``input=PATH``.

    A file is returned as is (even without an image extension: the user named it,
    so a non-image is reported when it is loaded, not silently skipped). A folder
    yields its image files by extension, sorted by name, not recursing and skipping
    hidden files (``.DS_Store``, ``._photo.jpg`` from macOS), so stray notes or
    sub-folders in a photo folder do not stop a run.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        try:
            entries = list(p.iterdir())
        except OSError as e:
            raise ImageInputError(path, f"cannot list folder ({e.strerror or e})") from e
        # a link that leads nowhere (broken, or a loop) is listed as a failed input when loaded, not dropped
        images = sorted(
            (
                e
                for e in entries
                if _is_image_name(e) and (e.is_file() or (e.is_symlink() and not e.exists()))
            ),
            key=lambda e: e.name,
        )
        if not images:
            exts = ", ".join(sorted(x.lstrip(".") for x in IMAGE_EXTENSIONS))
            raise ImageInputError(path, f"folder contains no image files (looked for {exts})")
        return images
    if p.exists():
        return [p]
    raise ImageInputError(path, "no such file or folder")


#: Image formats people keep in photo folders that coz does not read: named as such when skipped.
_UNSUPPORTED_FORMATS = frozenset(
    {
        ".avif",
        ".heic",
        ".heif",
        ".jp2",
        ".j2k",
        ".jpx",
        ".jxl",
        ".psd",
        ".svg",
        ".ico",
        ".tga",
        ".exr",
        ".hdr",
        ".dng",
        ".cr2",
        ".cr3",
        ".nef",
        ".arw",
        ".orf",
        ".rw2",
        ".raw",
    }
)


def not_images(path: str | Path) -> dict[str, str]:
    """The files of folder ``path`` that :func:`find_images` leaves out, each with the reason (a
    tool lists them as skipped inputs: nothing in a folder is dropped without a word). Hidden files
    and sub-folders are not inputs; a file ``path`` has none."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return {}
    exts = ", ".join(sorted(x.lstrip(".") for x in IMAGE_EXTENSIONS))
    found = {}
    for entry in sorted(p.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or _is_image_name(entry) or not entry.is_file():
            continue
        suffix = entry.suffix.lower()
        if suffix in _UNSUPPORTED_FORMATS:
            problem = f"unsupported image format ({suffix}); convert it to PNG or JPEG"
        else:
            problem = f"not an image file name (coz reads {exts})"
        found[str(entry)] = str(ImageInputError(entry, problem))
    return found


# --------------------------------------------------------------------------- loading


def check_header(path: str | Path) -> None:
    """:class:`ImageInputError` now if ``path`` is not an image Pillow can identify (its header only)."""
    _open(Path(path).expanduser(), None).close()


def _open(path: Path, max_pixels: float | None) -> Image.Image:
    """Open lazily (header only) and refuse oversized images before any decoding.

    Pillow's DecompressionBombWarning is silenced here because ``max_pixels`` is the
    limit we apply; its DecompressionBombError (at twice ``Image.MAX_IMAGE_PIXELS``)
    cannot be silenced without changing global state, so it is translated instead.
    """
    name = str(path)
    if path.is_dir():
        raise ImageInputError(name, "is a folder, not an image file")
    try:
        if path.stat().st_size == 0:
            raise ImageInputError(name, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except ImageInputError:
        raise
    except FileNotFoundError as e:
        problem = "broken symbolic link" if path.is_symlink() else "no such file or folder"
        raise ImageInputError(name, problem) from e
    except PermissionError as e:
        raise ImageInputError(name, "cannot read file (permission denied)") from e
    except UnidentifiedImageError as e:
        raise ImageInputError(name, "not an image file (cannot identify format)") from e
    except OSError as e:  # after its subclasses above
        if e.errno == errno.ELOOP:
            raise ImageInputError(name, "symbolic link loop (the link leads back to itself)") from e
        raise ImageInputError(name, f"cannot read image header ({type(e).__name__}: {e})") from e
    except Image.DecompressionBombError as e:
        raise ImageInputError(
            name,
            f"exceeds Pillow's decompression-bomb limit of {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels "
            f"({e}); raise PIL.Image.MAX_IMAGE_PIXELS only for files you trust",
        ) from e
    except Exception as e:  # corrupt headers raise all sorts (SyntaxError, struct.error, ...)
        raise ImageInputError(name, f"cannot read image header ({type(e).__name__}: {e})") from e

    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        img.close()
        raise ImageInputError(
            name,
            f"{w}x{h} is {w * h / 1e6:.1f} megapixels, which exceeds the limit of {max_pixels / 1e6:.1f}; "
            "set max_pixels higher (or null: None in Python) only for files you trust",
        )
    if w == 0 or h == 0:
        img.close()
        raise ImageInputError(name, f"image has no pixels ({w}x{h})")
    return img


def _source_is_16bit_rgb(img: Image.Image) -> bool:
    """Pillow silently reduces 16-bit-per-channel RGB(A) PNGs/TIFFs to 8 bits on load;
    the only trace is the decoder's raw mode (e.g. ``RGB;16B``), visible before ``load()``."""
    tiles = getattr(img, "tile", None) or ()  # an image made in memory has no decoder tiles
    return img.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in tiles)


@contextmanager
def _truncation_is_an_error():
    """Pillow fills the missing rest of a truncated file with black when
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set, and libraries set it on import (pyiqa's datasets):
    an input that stops early must be refused, whatever they set."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _decode(img: Image.Image, name: str, notes: list[str]) -> Image.Image:
    """Fully decode the first frame, so truncation and corrupt data surface here, not later."""
    try:
        n_frames = getattr(img, "n_frames", 1)
        if n_frames > 1:
            img.seek(0)
            notes.append(f"{name}: has {n_frames} frames; using the first")
        if _source_is_16bit_rgb(img):
            notes.append(f"{name}: 16-bit {img.mode} converted to 8-bit")
        with _truncation_is_an_error():
            img.load()
    except MemoryError:
        raise
    except Exception as e:
        problem = "truncated file" if "truncated" in str(e) else "corrupt image data"
        raise ImageInputError(name, f"{problem} ({type(e).__name__}: {e})") from e
    return img


def _apply_exif_orientation(img: Image.Image, name: str, notes: list[str]) -> Image.Image:
    """Phones store photos sideways plus an EXIF tag; users expect what their viewer shows."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF must not make a fine image unusable
        notes.append(f"{name}: unreadable EXIF data ignored")
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        img = ImageOps.exif_transpose(img)
        notes.append(f"{name}: EXIF orientation {orientation} applied")
    return img


def _scale_to_8bit(a: np.ndarray, name: str, kind: str, notes: list[str]) -> Image.Image:
    """Map high-bit-depth single-channel data to 8 bits without clipping.

    Pillow's own ``convert("L")`` clips I/I;16 values at 255, which turns a normal
    16-bit scan almost white; so scale explicitly: integers in 0..65535 as 16-bit
    (x/257, so 65535 -> 255 and 32768 -> 128), floats in 0..1 as x*255, and anything
    else stretched from its min..max. Row blocks of ``_BLOCK_PIXELS`` at a time: a
    12000x12000 scan needs its 8-bit result and one block of float64, not several
    float64 copies of the whole (gigabytes).
    """
    rows = max(1, _BLOCK_PIXELS // max(1, a.shape[-1]))  # (H, W)
    blocks = [a[r : r + rows] for r in range(0, a.shape[0], rows)]
    lo, hi = np.inf, -np.inf
    for block in blocks:
        finite = _finite(block)
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    lo, hi = (lo, hi) if lo <= hi else (0.0, 0.0)
    if kind == "int" and lo >= 0 and hi <= 65535:
        scale, offset = 1 / 257.0, 0.0
        notes.append(f"{name}: 16-bit converted to 8-bit")
    elif kind == "float" and lo >= 0 and hi <= 1:
        scale, offset = 255.0, 0.0
        notes.append(f"{name}: floating-point 0..1 converted to 8-bit")
    else:
        scale, offset = (255.0 / (hi - lo), lo) if hi > lo else (0.0, 0.0)
        notes.append(f"{name}: {kind} values {lo:g}..{hi:g} stretched to 8-bit 0..255")
    out = np.empty(a.shape, dtype=np.uint8)
    row = 0
    for block in blocks:
        values = _finite(block)
        scaled = values / 257.0 if kind == "int" and scale == 1 / 257.0 else (values - offset) * scale
        out[row : row + len(block)] = np.clip(np.rint(scaled), 0, 255)
        row += len(block)
    return Image.fromarray(out, "L")


def _finite(block: np.ndarray) -> np.ndarray:
    """The block as float64 with NaN and infinities as 0 (as an 8-bit image shows them)."""
    return np.nan_to_num(block.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _flatten_alpha(img: Image.Image, name: str, alpha: str, notes: list[str]) -> Image.Image:
    """Drop or composite transparency; the SR model has no alpha, and black behind
    transparent pixels (what a plain ``convert("RGB")`` may reveal) is rarely intended.
    Row bands of about ``_BLOCK_PIXELS`` at a time: the peak is the decoded image, its RGB result
    and one band, not five full-size copies (a 0.6-MB RGBA PNG of 144 MP peaked at 3.6 GB)."""
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")  # LA, PA, P/L/RGB with a transparent color
    lo = rgba.getextrema()[3][0]
    if lo == 255:
        notes.append(f"{name}: fully opaque alpha channel dropped")
    elif alpha == "drop":
        notes.append(f"{name}: alpha channel dropped")
    else:
        notes.append(f"{name}: alpha composited on white")
    w, h = rgba.size
    out = Image.new("RGB", (w, h))
    rows = max(1, _BLOCK_PIXELS // w)
    for top in range(0, h, rows):
        band = rgba.crop((0, top, w, min(h, top + rows)))
        if lo != 255 and alpha != "drop":
            band = Image.alpha_composite(Image.new("RGBA", band.size, (255, 255, 255, 255)), band)
        out.paste(band.convert("RGB"), (0, top))
    return out


def _to_rgb(img: Image.Image, name: str, alpha: str, notes: list[str]) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, noting each conversion."""
    mode = img.mode
    if mode == "RGB" and not img.has_transparency_data:
        return img.copy()  # a copy, so the caller may close the file-backed original
    if mode.startswith("I;16") or mode == "I":
        return _scale_to_8bit(np.asarray(img), name, "int", notes).convert("RGB")
    if mode == "F":
        return _scale_to_8bit(np.asarray(img), name, "float", notes).convert("RGB")
    try:
        if img.has_transparency_data:  # LA, PA, RGBA, or P/L/RGB with a transparent color
            return _flatten_alpha(img, name, alpha, notes)
        out = img.convert("RGB")
    except ValueError as e:  # e.g. premultiplied "La", which Pillow cannot convert
        raise ImageInputError(name, f"unsupported pixel mode {mode!r} ({e})") from e
    labels = {"1": "1-bit", "L": "grayscale", "P": "palette"}
    notes.append(f"{name}: {labels.get(mode, mode)} converted to RGB")
    return out


def load_rgb(
    path: str | Path,
    *,
    max_pixels: float | None = DEFAULT_MAX_PIXELS,
    alpha: str = "white",
) -> tuple[Image.Image, list[str]]:
    """Load ``path`` as an 8-bit RGB image, plus one-line notes on conversions done.

    ``alpha="white"`` composites transparency on white; ``"drop"`` discards it.
    ``max_pixels`` (None: no limit of ours) is checked from the header before decoding.
    Raises :class:`ImageInputError` for anything that is not a usable image.
    """
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha must be 'white' or 'drop', not {alpha!r}")
    path = Path(path).expanduser()
    name = str(path)
    notes: list[str] = []
    with _open(path, max_pixels) as opened:  # closes the file even for multi-frame images
        img = _decode(opened, name, notes)
        img = _apply_exif_orientation(img, name, notes)
        rgb = _to_rgb(img, name, alpha, notes)
    return rgb, notes


def to_rgb(img: Image.Image, *, name: str = "image", alpha: str = "white") -> tuple[Image.Image, list[str]]:
    """An image already opened (the Python API's input) as 8-bit RGB, converted as :func:`load_rgb`
    converts files (a new image), plus the notes."""
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha must be 'white' or 'drop', not {alpha!r}")
    notes: list[str] = []
    img = _decode(img, name, notes)
    img = _apply_exif_orientation(img, name, notes)
    return _to_rgb(img, name, alpha, notes), notes


# --------------------------------------------------------------------------- x0


def x0_geometry(width: int, height: int, size: int = 512) -> tuple[tuple[int, int], tuple[int, int]]:
    """((new_w, new_h), (left, top)): the short side is resized to ``size`` (the long one truncated,
    as the official code's integer sizes do), then the ``size`` square at (left, top) is kept."""
    scale = size / min(width, height)
    new_w, new_h = max(size, int(width * scale)), max(size, int(height * scale))
    return (new_w, new_h), ((new_w - size) // 2, (new_h - size) // 2)


def x0_source_box(width: int, height: int, size: int = 512) -> tuple[float, float, float, float]:
    """The region of the source, in its pixel coordinates, that x0 shows: exact, truncation included
    (an image's center and x0's can differ by most of an x0 pixel)."""
    (new_w, new_h), (left, top) = x0_geometry(width, height, size)
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + size) * sx, (top + size) * sy)


def prepare_x0(img: Image.Image, size: int = 512, name: str = "") -> tuple[Image.Image, list[str]]:
    """The Chain-of-Zoom scale-state x0: LANCZOS-resize so the short side is ``size``,
    then center-crop ``size`` x ``size`` (as the official code does, upscaling small
    images too, which is noted since the zoom then starts from invented detail).

    For extremely thin images (e.g. 10000x3) the full intermediate would be gigantic,
    so only the crop window is resampled (``resize(box=...)``); that matches the
    direct result to within 1 gray level.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    label = name or "image"
    w, h = img.size
    if w == 0 or h == 0:
        raise ImageInputError(label, f"image has no pixels ({w}x{h})")
    notes: list[str] = []
    if min(w, h) < size:
        notes.append(
            f"{label}: {w}x{h} is smaller than the process size {size}; upscaled (LANCZOS) before zooming"
        )
    (new_w, new_h), (left, top) = x0_geometry(w, h, size)
    if new_w * new_h <= _MAX_INTERMEDIATE_PIXELS:
        resized = img.resize((new_w, new_h), Image.LANCZOS)
        out = resized.crop((left, top, left + size, top + size))
    else:
        out = img.resize((size, size), Image.LANCZOS, box=x0_source_box(w, h, size))
    return out, notes

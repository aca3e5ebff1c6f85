"""coz.images: every kind of bad or unusual user input, generated in tmp_path."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from coz.images import ImageInputError, find_images, load_rgb, prepare_x0


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())  # 512x512 RGB photo


def expect_input_error(path: Path, **kwargs) -> str:
    """load_rgb must fail with a one-line ImageInputError naming the file; returns the message."""
    with pytest.raises(ImageInputError) as excinfo:
        load_rgb(path, **kwargs)
    msg = str(excinfo.value)
    assert "\n" not in msg and "\r" not in msg
    assert path.name in msg
    return msg


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A minimal PNG written by hand, for what Pillow cannot write (16-bit RGB, lying headers)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw_rows))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- bad input


def test_corrupt_bytes_named_jpg(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "not an image file" in expect_input_error(p)


def test_jpeg_header_then_garbage(tmp_path, astronaut):
    good = tmp_path / "good.jpg"
    astronaut.save(good)
    p = tmp_path / "garbled.jpg"
    p.write_bytes(good.read_bytes()[:200] + b"\x00" * 5000)
    expect_input_error(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.touch()
    assert "empty file" in expect_input_error(p)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated(tmp_path, astronaut, fmt, suffix):
    full = tmp_path / f"full{suffix}"
    astronaut.save(full, fmt)
    p = tmp_path / f"truncated{suffix}"
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert "truncated" in expect_input_error(p)


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("not a picture\nsecond line\n")
    assert "not an image file" in expect_input_error(p)


def test_directory_named_png(tmp_path):
    p = tmp_path / "x.png"
    p.mkdir()
    assert "is a folder" in expect_input_error(p)


def test_missing_file(tmp_path):
    assert "no such file" in expect_input_error(tmp_path / "gone.png")


def test_unreadable_file(tmp_path, astronaut):
    p = tmp_path / "secret.png"
    astronaut.save(p)
    p.chmod(0)
    try:
        if os.access(p, os.R_OK):
            pytest.skip(
                "running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not make a file unreadable"
            )
        assert "permission denied" in expect_input_error(p)
    finally:
        p.chmod(0o644)


def test_decompression_bomb_header(tmp_path):
    """A tiny PNG whose IHDR claims 100000x100000: Pillow's own bomb error, translated."""
    p = tmp_path / "bomb.png"
    p.write_bytes(png_bytes(100_000, 100_000, 8, 0, b"\x00\x00"))
    assert p.stat().st_size < 100
    assert "megapixels" in expect_input_error(p)


def test_decompression_bomb_header_under_pillow_limit(tmp_path):
    """Between our limit and Pillow's: our max_pixels check refuses it before decoding."""
    p = tmp_path / "bomb.png"
    p.write_bytes(png_bytes(12_000, 13_000, 8, 0, b"\x00\x00"))
    msg = expect_input_error(p)
    assert "156.0 megapixels" in msg and "limit of 150.0" in msg and "max_pixels" in msg


def test_max_pixels_parameter(tmp_path, astronaut):
    p = tmp_path / "big.png"
    astronaut.save(p)
    assert "exceeds the limit" in expect_input_error(p, max_pixels=1000)
    img, _ = load_rgb(p, max_pixels=None)
    assert img.size == (512, 512)


def test_message_with_newline_in_name_stays_one_line(tmp_path):
    p = tmp_path / "two\nlines.png"
    p.write_text("text")
    with pytest.raises(ImageInputError) as excinfo:
        load_rgb(p)
    assert "\n" not in str(excinfo.value) and "two\\nlines.png" in str(excinfo.value)


def test_error_is_a_value_error():
    assert issubclass(ImageInputError, ValueError)


# --------------------------------------------------------------------------- conversions


def load(path: Path, **kwargs) -> tuple[np.ndarray, list[str]]:
    img, notes = load_rgb(path, **kwargs)
    assert img.mode == "RGB"
    assert all(path.name in n and "\n" not in n for n in notes)
    return np.asarray(img), notes


def test_plain_rgb_has_no_notes(tmp_path, astronaut):
    p = tmp_path / "a.png"
    astronaut.save(p)
    a, notes = load(p)
    assert notes == []
    np.testing.assert_array_equal(a, np.asarray(astronaut))


def test_one_by_one(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(p)
    a, _ = load(p)
    assert a.shape == (1, 1, 3) and tuple(a[0, 0]) == (10, 20, 30)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_and_bilevel(tmp_path, mode):
    p = tmp_path / f"g_{mode}.png"
    Image.new(mode, (3, 2), 255 if mode == "1" else 77).save(p)
    a, notes = load(p)
    assert (a == (255 if mode == "1" else 77)).all()
    assert any("converted to RGB" in n for n in notes)


def test_palette_with_transparency(tmp_path):
    p = tmp_path / "pal.png"
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0  # index 0 (red) is transparent
    img.save(p, transparency=0)
    a, notes = load(p)
    assert tuple(a[0, 0]) == (255, 255, 255) and tuple(a[0, 1]) == (0, 0, 255)
    assert any("alpha composited on white" in n for n in notes)


def test_palette_without_transparency(tmp_path, astronaut):
    p = tmp_path / "pal.png"
    astronaut.quantize(64).save(p)
    a, notes = load(p)
    assert a.shape == (512, 512, 3) and any("palette converted to RGB" in n for n in notes)


def test_rgba_composited_on_white(tmp_path):
    p = tmp_path / "rgba.png"
    px = np.array([[[0, 0, 0, 0], [200, 0, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(px, "RGBA").save(p)
    a, notes = load(p)
    assert tuple(a[0, 0]) == (255, 255, 255)  # fully transparent -> white
    assert tuple(a[0, 1]) == (200, 0, 0)  # opaque unchanged
    assert np.abs(a[0, 2].astype(int) - 127).max() <= 1  # half black over white
    assert any("alpha composited on white" in n for n in notes)

    d, notes = load(p, alpha="drop")
    assert tuple(d[0, 0]) == (0, 0, 0) and any("alpha channel dropped" in n for n in notes)
    with pytest.raises(ValueError):
        load_rgb(p, alpha="black")


def test_la_composited_on_white(tmp_path):
    p = tmp_path / "la.png"
    Image.fromarray(np.array([[[50, 0], [50, 255]]], dtype=np.uint8), "LA").save(p)
    a, _ = load(p)
    assert tuple(a[0, 0]) == (255, 255, 255) and tuple(a[0, 1]) == (50, 50, 50)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    p = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(p)
    assert Image.open(p).mode.startswith("I")  # really stored and read as 16-bit
    a, notes = load(p)
    assert a[0, :, 0].tolist() == [0, 1, 128, 255]
    assert any("16-bit converted to 8-bit" in n for n in notes)


def test_16bit_rgb_png(tmp_path):
    """Pillow cannot write 16-bit RGB, so write the PNG by hand; Pillow reads it as 8-bit RGB."""
    p = tmp_path / "rgb16.png"
    px = np.array([[[65535, 0, 32768], [0, 65535, 256]]], dtype=">u2")
    p.write_bytes(png_bytes(2, 1, 16, 2, b"\x00" + px.tobytes()))
    a, notes = load(p)
    assert a.tolist() == [[[255, 0, 128], [0, 255, 1]]]
    assert any("16-bit RGB converted to 8-bit" in n for n in notes)


def test_32bit_int_and_float_tiff(tmp_path):
    pi = tmp_path / "i32.tif"
    Image.fromarray(np.array([[0, 65535]], dtype=np.int32), "I").save(pi)
    a, _ = load(pi)
    assert a[0, :, 0].tolist() == [0, 255]

    pf = tmp_path / "f32.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(pf)
    a, _ = load(pf)
    assert a[0, :, 0].tolist() == [0, 128, 255]

    pw = tmp_path / "wide.tif"
    Image.fromarray(np.array([[-1000.0, 3000.0]], dtype=np.float32), "F").save(pw)
    a, notes = load(pw)
    assert a[0, :, 0].tolist() == [0, 255] and any("stretched" in n for n in notes)


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p)  # pure red in CMYK
    assert Image.open(p).mode == "CMYK"
    a, notes = load(p)
    r, g, b = a[4, 4].astype(int)
    assert r > 200 and g < 50 and b < 50
    assert any("CMYK converted to RGB" in n for n in notes)


def test_ycbcr_tiff(tmp_path):
    p = tmp_path / "ycc.tif"
    # compressed: Pillow writes an uncompressed YCbCr TIFF that its own reader finds truncated (3
    # bytes a pixel written, 4 read), which loaded only while a library had set LOAD_TRUNCATED_IMAGES
    Image.new("RGB", (4, 4), (0, 200, 0)).convert("YCbCr").save(p, compression="tiff_lzw")
    a, _ = load(p)
    assert np.abs(a[0, 0].astype(int) - (0, 200, 0)).max() <= 3


def test_exif_orientation_6(tmp_path, astronaut):
    p = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    astronaut.resize((40, 20)).save(p, exif=exif)
    a, notes = load(p)
    assert a.shape[:2] == (40, 20)  # width and height swapped: was 40 wide, 20 high
    assert any("EXIF orientation 6" in n for n in notes)


def test_animated_gif_uses_first_frame(tmp_path):
    p = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    a, notes = load(p)
    assert tuple(a[0, 0]) == (255, 0, 0)
    assert any("3 frames; using the first" in n for n in notes)


def test_multipage_tiff_uses_first_page(tmp_path):
    p = tmp_path / "pages.tiff"
    pages = [Image.new("RGB", (4, 4), c) for c in [(9, 9, 9), (200, 200, 200)]]
    pages[0].save(p, save_all=True, append_images=pages[1:])
    a, notes = load(p)
    assert tuple(a[0, 0]) == (9, 9, 9) and any("2 frames" in n for n in notes)


# --------------------------------------------------------------------------- find_images


def test_find_images_in_folder(tmp_path, astronaut):
    small = astronaut.resize((4, 4))
    for name in ["b.png", "A.JPG", "c.WebP", "a.jpeg", "z.tiff"]:
        small.save(tmp_path / name)
    (tmp_path / ".hidden.png").write_bytes((tmp_path / "b.png").read_bytes())
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "README").write_text("hi")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "sub").mkdir()
    small.save(tmp_path / "sub" / "deep.png")

    found = find_images(tmp_path)
    assert [f.name for f in found] == ["A.JPG", "a.jpeg", "b.png", "c.WebP", "z.tiff"]
    assert all(f.parent == tmp_path for f in found)
    for f in found:
        load_rgb(f)


def test_find_images_single_file_even_without_image_extension(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hi")
    assert find_images(p) == [p]
    assert find_images(str(p)) == [p]
    expect_input_error(p)  # named explicitly, so it is reported when loaded


def test_find_images_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ImageInputError) as excinfo:
        find_images(tmp_path)
    msg = str(excinfo.value)
    assert "no image files" in msg and str(tmp_path) in msg and "\n" not in msg


def test_find_images_missing_path(tmp_path):
    with pytest.raises(ImageInputError, match="no such file or folder") as excinfo:
        find_images(tmp_path / "nope")
    assert "nope" in str(excinfo.value)


# --------------------------------------------------------------------------- prepare_x0


@pytest.mark.parametrize(
    "size_in", [(800, 600), (600, 800), (300, 200), (1, 1), (512, 512), (513, 1000), (10000, 3), (3, 5000)]
)
def test_prepare_x0_is_exactly_square(astronaut, size_in):
    img = astronaut.resize(size_in)
    x0, notes = prepare_x0(img, 512, name="in.png")
    assert x0.size == (512, 512) and x0.mode == "RGB"
    assert bool(notes) == (min(size_in) < 512)


def test_prepare_x0_small_image_note(astronaut):
    _, notes = prepare_x0(astronaut.resize((300, 200)), 512, name="in.png")
    assert notes == [
        "in.png: 300x200 is smaller than the process size 512; upscaled (LANCZOS) before zooming"
    ]


def test_prepare_x0_matches_direct_computation(astronaut):
    img = astronaut.resize((700, 333))
    size = 256
    scale = size / min(img.size)
    new_w, new_h = int(img.width * scale), int(img.height * scale)
    resized = img.resize((new_w, new_h), Image.LANCZOS)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    expected = resized.crop((left, top, left + size, top + size))
    x0, notes = prepare_x0(img, size)
    assert notes == []
    np.testing.assert_array_equal(np.asarray(x0), np.asarray(expected))


def test_prepare_x0_thin_image_content(astronaut):
    """The crop-window path for extreme aspect ratios keeps the center of the strip."""
    strip = np.zeros((3, 10000, 3), np.uint8)
    strip[:, 4000:6000] = 255
    x0, _ = prepare_x0(Image.fromarray(strip), 512)
    a = np.asarray(x0)
    assert (a > 250).all()  # the middle 512 of 1706666 resized columns lie within the white band


def test_prepare_x0_rejects_bad_size(astronaut):
    with pytest.raises(ValueError):
        prepare_x0(astronaut, 0)

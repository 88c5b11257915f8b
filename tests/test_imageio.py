"""Image decoding and encoding: formats, bit depth, orientation, metadata, and refusals."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from albumd.pipeline.imageio import ImageDecodeError, ImageTooLargeError, encode_image, load_image
from PIL import Image, ImageCms, ImageOps


def gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([x / (w - 1), y / (h - 1), (x + y) / (w + h - 2)], axis=2)


def pil_bytes(im: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def test_16bit_colour_png_and_tiff_keep_their_precision() -> None:
    img = gradient(50, 700)  # 700 distinct levels along x: more than 8 bits can hold
    for fmt in ("png", "tif"):
        data = encode_image(img, fmt, bit_depth=16)  # type: ignore[arg-type]
        loaded = load_image(data)
        assert loaded.bit_depth == 16
        assert np.abs(loaded.pixels - img).max() < 1.0 / 65535 + 1e-6
        assert len(np.unique(loaded.pixels[0, :, 0])) == 700
        again = load_image(encode_image(loaded.pixels, fmt, bit_depth=16))  # type: ignore[arg-type]
        assert np.array_equal(again.pixels, loaded.pixels)


def test_16bit_greyscale_png() -> None:
    arr = (np.linspace(0, 65535, 1000).reshape(10, 100)).astype(np.uint16)
    loaded = load_image(pil_bytes(Image.fromarray(arr), "PNG"))
    assert loaded.greyscale and loaded.bit_depth == 16
    assert np.allclose(loaded.pixels[..., 0], arr / 65535.0, atol=1e-6)
    assert np.array_equal(loaded.pixels[..., 0], loaded.pixels[..., 2])


def test_greyscale_jpeg_stays_single_channel_on_output() -> None:
    grey = (gradient()[..., 0] * 255).astype(np.uint8)
    loaded = load_image(pil_bytes(Image.fromarray(grey), "JPEG", quality=95))
    assert loaded.greyscale and loaded.pixels.shape == (40, 60, 3)
    out = Image.open(io.BytesIO(encode_image(loaded.pixels, "png", greyscale=True)))
    assert out.mode == "L"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(orientation: int) -> None:
    base = Image.fromarray((gradient(30, 50) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = pil_bytes(base, "PNG", exif=exif.tobytes())
    loaded = load_image(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")) / 255.0
    assert loaded.pixels.shape == expected.shape
    assert np.allclose(loaded.pixels, expected, atol=1e-6)
    # the written EXIF says "upright" so viewers do not rotate it a second time
    assert loaded.exif is not None
    out = Image.open(io.BytesIO(encode_image(loaded.pixels, "png", exif=loaded.exif)))
    assert out.getexif().get(0x0112) == 1


def test_invalid_orientation_is_ignored_with_a_note() -> None:
    exif = Image.Exif()
    exif[0x0112] = 42
    data = pil_bytes(Image.fromarray((gradient() * 255).astype(np.uint8)), "JPEG", exif=exif.tobytes())
    loaded = load_image(data)
    assert loaded.pixels.shape == (40, 60, 3)
    assert any("orientation" in n for n in loaded.notes)


def test_icc_profile_and_exif_are_carried_to_every_output_format() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "Epson"  # Make
    data = pil_bytes(
        Image.fromarray((gradient() * 255).astype(np.uint8)), "JPEG", icc_profile=icc, exif=exif.tobytes()
    )
    loaded = load_image(data)
    assert loaded.icc_profile == icc
    for fmt, depth in (("png", 8), ("png", 16), ("jpg", 8)):
        out = encode_image(
            loaded.pixels, fmt, bit_depth=depth, icc_profile=loaded.icc_profile, exif=loaded.exif
        )  # type: ignore[arg-type]
        im = Image.open(io.BytesIO(out))
        assert im.info.get("icc_profile") == icc, (fmt, depth)
        assert im.getexif().get(0x010F) == "Epson", (fmt, depth)
    tif = encode_image(loaded.pixels, "tif", bit_depth=16, icc_profile=icc)
    with tifffile.TiffFile(io.BytesIO(tif)) as t:
        assert t.pages[0].tags[34675].value == icc


def test_alpha_is_flattened_onto_white_with_a_note() -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    loaded = load_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert np.allclose(loaded.pixels[0, 0], [200 / 255, 0, 0], atol=1e-6)
    assert np.allclose(loaded.pixels[9, 9], [1, 1, 1])
    assert any("alpha" in n for n in loaded.notes)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert not load_image(pil_bytes(Image.fromarray(opaque, "RGBA"), "PNG")).notes


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_image(pil_bytes(cmyk, "JPEG"))
    r, g, b = loaded.pixels[10, 10]
    assert r > 0.8 and g < 0.2 and b < 0.2
    assert any("CMYK" in n for n in loaded.notes)


def test_multipage_tiff_takes_the_first_page() -> None:
    pages = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    out = io.BytesIO()
    pages[0].save(out, format="TIFF", save_all=True, append_images=pages[1:])
    loaded = load_image(out.getvalue())
    assert loaded.frames == 2 and loaded.pixels[0, 0, 0] == 1.0
    assert any("2 frames" in n for n in loaded.notes)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    big = pil_bytes(Image.new("L", (5000, 5000)), "PNG")
    assert len(big) < 100_000  # a tiny file that claims 25 megapixels
    with pytest.raises(ImageTooLargeError, match="25,000,000 pixels"):
        load_image(big, max_pixels=10_000_000)
    assert load_image(big, max_pixels=30_000_000).width == 5000


def test_pixel_limit_is_the_configured_one_not_pillows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1200 dpi flatbed scan (~95-140M pixels) is under max_image_pixels (200M) but over Pillow's own
    bomb limit (89M): found by the hostile-input suite, it was refused with Pillow's limit in the message.
    Here a header claiming 10000x9500 with broken data: it must get as far as decoding."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # Pillow's default, as in a fresh process

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10_000, 9_500, 8, 0, 0, 0, 0))
    data = header + chunk(b"IDAT", b"not zlib data at all") + chunk(b"IEND", b"")
    with pytest.raises(ImageDecodeError) as err:
        load_image(data, max_pixels=200_000_000)
    assert not isinstance(err.value, ImageTooLargeError), err.value
    with pytest.raises(ImageTooLargeError, match="95,000,000 pixels"):
        load_image(data, max_pixels=90_000_000)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is text\n", "not an image"),
        (b"<html><body>not a photo</body></html>", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG"),
    ],
)
def test_bad_bytes_fail_with_a_specific_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(data)


def test_truncated_jpeg_fails() -> None:
    full = pil_bytes(
        Image.fromarray((np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8)), "JPEG"
    )
    with pytest.raises(ImageDecodeError):
        load_image(full[: len(full) // 3])

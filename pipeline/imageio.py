"""Decoding and encoding photos without losing what a scan carries.

Pillow reads every format and its metadata, but drops 16-bit colour to 8 bits; OpenCV keeps the 16 bits
but ignores metadata. So Pillow decides (format, size, bomb limit, EXIF, ICC) and OpenCV decodes the
pixels of 16-bit colour PNG and TIFF files. EXIF orientation is applied here, once, so every stage sees
the photo upright; the written EXIF has its orientation reset to 1 so viewers do not rotate it again.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 200_000_000
ORIENTATION_TAG = 0x0112


class ImageDecodeError(Exception):
    """The file cannot be used as a photo. Permanent: retrying will not help."""


class ImageTooLargeError(ImageDecodeError):
    """The image's declared size is over the decompression-bomb limit."""


@dataclass
class LoadedImage:
    pixels: np.ndarray
    """(H, W, 3) float32 in [0, 1], upright (EXIF orientation applied)."""
    format: str
    mode: str
    bit_depth: int
    width: int
    height: int
    icc_profile: bytes | None = None
    exif: bytes | None = None
    greyscale: bool = False
    """The file itself is single-channel (its output is written single-channel too)."""
    frames: int = 1
    notes: list[str] = field(default_factory=list)
    """Things the loader decided that a user should know (multi-frame input, alpha flattened...)."""


def load_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode a photo from its file bytes. Raises ImageDecodeError with a specific reason."""
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    # Pillow's own bomb check (a warning over Image.MAX_IMAGE_PIXELS, 89M by default, an error over twice
    # that) runs inside Image.open and would refuse a 1200 dpi flatbed scan (~140M pixels) that
    # max_image_pixels allows: it is raised to the configured limit, which is then checked below.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "UNKNOWN"
            width, height = im.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (decompression-bomb protection; raise max_image_pixels to allow it)"
                )
            if width < 1 or height < 1:
                raise ImageDecodeError(f"image has no pixels ({width}x{height})")
            frames = int(getattr(im, "n_frames", 1) or 1)
            notes: list[str] = []
            if frames > 1:
                notes.append(f"file has {frames} frames/pages; only the first is restored")
            im.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow names its own figure (its limit, or twice it for an error): say which one albumd uses.
        raise ImageTooLargeError(
            f"decompression bomb refused (max_image_pixels is {max_pixels:,}): {exc}"
        ) from exc
    except UnidentifiedImageError as exc:
        kind = _fmt_name(data)
        if kind != "image":
            raise ImageDecodeError(
                f"corrupt {kind} file: it starts like a {kind} but cannot be decoded"
            ) from exc
        raise ImageDecodeError("not an image Pillow can identify (unknown or corrupt format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise ImageDecodeError(f"cannot decode {_fmt_name(data)} data: {exc}") from exc

    icc = im.info.get("icc_profile") or None
    exif_bytes, orientation = _read_exif(im, notes)
    pixels, bit_depth, greyscale, icc = _pixels(im, data, fmt, icc, notes)
    pixels = _apply_orientation(pixels, orientation)
    h, w = pixels.shape[:2]
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        format=fmt,
        mode=im.mode,
        bit_depth=bit_depth,
        width=w,
        height=h,
        icc_profile=icc,
        exif=exif_bytes,
        greyscale=greyscale,
        frames=frames,
        notes=notes,
    )


def _fmt_name(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return "image"


def _read_exif(im: Image.Image, notes: list[str]) -> tuple[bytes | None, int]:
    try:
        exif = im.getexif()
    except Exception as exc:  # Pillow raises many types on corrupt EXIF; the photo is still usable
        notes.append(f"EXIF unreadable and dropped: {exc}")
        return None, 1
    if not exif:
        return None, 1
    orientation = exif.get(ORIENTATION_TAG, 1)
    if not isinstance(orientation, int) or orientation not in range(1, 9):
        notes.append(f"EXIF orientation {orientation!r} is invalid; treated as upright")
        orientation = 1
    exif[ORIENTATION_TAG] = 1
    try:
        return exif.tobytes(), orientation
    except Exception as exc:
        notes.append(f"EXIF could not be re-encoded and was dropped: {exc}")
        return None, orientation


def _pixels(
    im: Image.Image, data: bytes, fmt: str, icc: bytes | None, notes: list[str]
) -> tuple[np.ndarray, int, bool, bytes | None]:
    """Return (pixels float32 HxWx3, bit depth, single-channel source, icc to carry)."""
    if _is_16bit_colour(im, data, fmt):
        return _decode_16bit_colour(data), 16, False, icc
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode != "I" or arr.max() > 255 else 255.0
        grey = np.clip(arr / top, 0, 1).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2), 16 if top > 255 else 8, True, icc
    if mode == "F":
        grey = np.clip(np.asarray(im, dtype=np.float32), 0, 1)
        return np.repeat(grey[..., None], 3, axis=2), 16, True, icc
    if mode == "CMYK":
        rgb, icc = _cmyk_to_rgb(im, icc, notes)
        return np.asarray(rgb, dtype=np.float32) / 255.0, 8, False, icc
    if mode in ("1", "L", "LA", "P", "PA") and _palette_is_grey(im):
        if "A" in mode or (mode == "P" and "transparency" in im.info):
            im = _flatten_alpha(im.convert("LA"), notes)
        grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        return np.repeat(grey[..., None], 3, axis=2), 8, True, icc
    if mode in ("RGBA", "LA", "PA", "P", "RGBa", "La") or "transparency" in im.info:
        im = _flatten_alpha(im.convert("RGBA"), notes)
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return rgb, 8, False, icc


def _palette_is_grey(im: Image.Image) -> bool:
    if im.mode in ("1", "L", "LA"):
        return True
    if im.mode not in ("P", "PA"):
        return False
    palette = np.asarray(im.convert("RGB"), dtype=np.int16)
    return bool(np.all(palette[..., 0] == palette[..., 1]) and np.all(palette[..., 1] == palette[..., 2]))


def _flatten_alpha(im: Image.Image, notes: list[str]) -> Image.Image:
    """Composite transparent areas onto white (the colour of a print's paper), noting it if it mattered."""
    alpha = np.asarray(im.getchannel("A"))
    if alpha.min() < 255:
        notes.append(
            f"alpha channel flattened onto white ({float((alpha < 255).mean()) * 100:.1f}% not opaque)"
        )
    base = Image.new(im.mode, im.size, (255,) * (len(im.mode) - 1) + (255,))
    base.alpha_composite(im)
    return base.convert(im.mode[:-1])


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
            assert out is not None
            notes.append("CMYK converted to sRGB through its embedded ICC profile")
            return out, None
        except Exception as exc:  # a broken profile must not lose the photo
            notes.append(f"CMYK ICC profile unusable ({exc}); converted without colour management")
    else:
        notes.append("CMYK without an ICC profile; converted without colour management")
    return im.convert("RGB"), None


def _is_16bit_colour(im: Image.Image, data: bytes, fmt: str) -> bool:
    if fmt == "PNG" and len(data) > 25:
        # IHDR: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA).
        return data[24] == 16 and data[25] in (2, 6)
    if fmt == "TIFF":
        bits = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
        if isinstance(bits, tuple | list):
            return len(bits) >= 3 and int(bits[0]) == 16
        return False
    return False


def _decode_16bit_colour(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3:
        raise ImageDecodeError("16-bit colour image could not be decoded")
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 65535.0
        colour = arr[..., :3].astype(np.float32) / 65535.0
        arr_f = colour * alpha + (1.0 - alpha)
    else:
        arr_f = arr[..., :3].astype(np.float32) / 65535.0
    return np.ascontiguousarray(arr_f[..., ::-1])


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    # EXIF orientations 2..8 as numpy flips/rotations (same mapping as PIL.ImageOps.exif_transpose).
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.rot90(a, 1)[::-1, :],
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[:, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(pixels)) if op else pixels


OutputFormat = Literal["png", "tif", "jpg"]
# zlib level of PNG output. Scans are grainy and compress little whatever the level: on restored
# 1500x1125 scans 4 takes 0.42x the time of 6 for 3 % more bytes (bench/bench_png.py,
# docs/performance.md). Every level is lossless.
DEFAULT_PNG_COMPRESS_LEVEL = 4


def to_uint(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    top = 65535 if bit_depth == 16 else 255
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return np.clip(np.rint(np.clip(pixels, 0.0, 1.0) * top), 0, top).astype(dtype)


def encode_image(
    pixels: np.ndarray,
    fmt: OutputFormat = "png",
    bit_depth: int = 8,
    greyscale: bool = False,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 92,
    png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL,
) -> bytes:
    """Encode (H, W, 3) or (H, W) float pixels, carrying ICC and EXIF into the file."""
    if pixels.ndim == 3 and greyscale:
        pixels = pixels.mean(axis=2)
    if fmt == "jpg":
        bit_depth = 8
    arr = to_uint(pixels, bit_depth)
    if fmt == "png":
        if bit_depth == 16 and arr.ndim == 3:
            ok, buf = cv2.imencode(".png", arr[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, png_compress_level])
            if not ok:
                raise OSError("PNG encoding failed")
            return _png_add_chunks(buf.tobytes(), icc_profile, exif)
        im = Image.fromarray(arr)  # uint16 2-D becomes mode I;16
        out = io.BytesIO()
        kwargs: dict[str, object] = {"compress_level": png_compress_level}
        if icc_profile:
            kwargs["icc_profile"] = icc_profile
        if exif:
            kwargs["exif"] = exif
        im.save(out, format="PNG", **kwargs)
        return out.getvalue()
    if fmt == "tif":
        import tifffile

        extratags = [(34675, "B", len(icc_profile), icc_profile, True)] if icc_profile else []
        out = io.BytesIO()
        tifffile.imwrite(
            out,
            arr,
            photometric="minisblack" if arr.ndim == 2 else "rgb",
            compression="zlib",
            extratags=extratags,
        )
        return out.getvalue()
    if fmt == "jpg":
        im = Image.fromarray(arr).convert("L" if arr.ndim == 2 else "RGB")
        out = io.BytesIO()
        kwargs = {"quality": quality, "optimize": True}
        if icc_profile:
            kwargs["icc_profile"] = icc_profile
        if exif:
            kwargs["exif"] = exif
        im.save(out, format="JPEG", **kwargs)
        return out.getvalue()
    raise ValueError(f"unknown output format {fmt!r}")


def _png_add_chunks(png: bytes, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks after IHDR (OpenCV writes neither)."""
    chunks = b""
    if icc_profile:
        chunks += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc_profile))
    if exif:
        payload = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        chunks += _png_chunk(b"eXIf", payload)
    if not chunks:
        return png
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def thumbnail(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale for previews (compare sheets, contact sheets) with area averaging."""
    h, w = pixels.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)

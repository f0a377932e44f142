"""Real-world images as MNIST-like digits (numpy and Pillow, no torch): any file Pillow reads, any mode,
transparency composited, normalised the way MNIST was made (polarity, crop, fit in 20x20, centre of mass).

    from ignite_lenet.mnist.digits import load_digit, load_image
    digit, inverted = load_digit("photo.jpg")    # (28, 28) uint8, light ink on dark
    x, inverted = load_image("photo.jpg")        # (1, 32, 32) float32: training's exact resize and scaling
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ignite_lenet.mnist.resize import to_model_input
from ignite_lenet.spec import IMAGE_SIZE, SOURCE_SIZE

# Real-world images -> MNIST-like 28x28 (LeCun et al.: fit in 20x20 keeping the aspect ratio, anti-aliased,
# centred by centre of mass in 28x28).
DIGIT_BOX = 20


MNIST_CENTRE = 14.0  # the mean centre of mass of MNIST digits (row and column), in pixel indices


MIN_CONTRAST = 0.15  # ink must differ from the background by 15% of the full range


NOISE_FLOOR = 0.2  # after stretching the ink to [0, 1], fainter pixels are background (paper grain, JPEG noise)


MIN_INK_FRACTION = 0.01  # the ink's longest side must span 1% of the image's longest side (not a speck of dust)


MIN_SIDE = 8  # smaller images cannot hold a legible digit


MAX_IMAGE_PIXELS = 40_000_000  # decompression-bomb bound (Pillow warns at 89M and fails at 179M)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}


WORKING_SIDE = 1024  # larger images are box-reduced to about this before the analysis (far beyond 20x20)


class NoDigitFound(ValueError):
    """An image with no ink to classify (blank, uniform, only specks)."""


class ImageTooLarge(ValueError):
    """An image with more pixels than allowed (a decompression bomb, or far larger than a digit needs)."""


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D float array, bit for bit (the middle value, or the mean of the two middle values),
    without its generality: a tenth of the time on a digit's border, which a server computes for every request."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    return float(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2)


def _fit(crop: np.ndarray, box: int) -> np.ndarray:
    """Scale ``crop`` (float, ink bright) to fit ``box`` x ``box`` keeping its aspect ratio, anti-aliased."""
    from PIL import Image

    height, width = crop.shape
    scale = box / max(height, width)
    new = (max(1, min(box, round(width * scale))), max(1, min(box, round(height * scale))))
    fitted = np.asarray(Image.fromarray(crop.astype(np.float32), "F").resize(new, Image.BILINEAR))
    return np.clip(fitted, 0.0, None)


def normalize_digit(gray: np.ndarray, invert: bool | None = None) -> tuple[np.ndarray, bool]:
    """An MNIST-like digit ``(28, 28)`` uint8 (light on dark) from a grayscale image in [0, 1], and whether it
    was inverted.

    ``invert=None`` detects the polarity from the border (a light border is a light page: invert). A 28x28
    image is taken as MNIST-like already (only the polarity is fixed, so MNIST's own pixels come back exactly).
    Any other is normalised as MNIST was made: the background subtracted, cropped to the ink, scaled to fit
    20x20 keeping the aspect ratio, placed in 28x28 with its centre of mass at the centre. Raises
    ``NoDigitFound`` for blank, uniform or speck-only images and ``ValueError`` for non-finite pixels.
    """
    # A server runs this for every image: on a 28x28 digit numpy's per-call overhead is all there is, so the
    # extremes are computed once (they also tell whether every pixel is finite: NaN and infinities reach them)
    # and the inverted image's peak is 1 - the lowest pixel (1 - x rounds monotonically: the same bits).
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale image, got shape {gray.shape}")
    low, high = (float(gray.min()), float(gray.max())) if gray.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("the image has non-finite pixel values (NaN or infinity)")
    height, width = gray.shape
    if min(height, width) < MIN_SIDE:
        raise NoDigitFound(f"no digit found: a {width}x{height} image is too small to hold one (at least "
                           f"{MIN_SIDE}x{MIN_SIDE})")
    border = _border(gray)
    if invert is None:  # a border lighter than the middle of the image's own range: a light page
        invert = bool(_median(border) > (low + high) / 2)
    if invert:
        gray = 1.0 - gray
        border = 1.0 - border  # the inverted image's border, value for value
    background = _median(border)
    peak = 1.0 - low if invert else high
    if peak - background < MIN_CONTRAST:
        raise NoDigitFound("no digit found: the image is blank or uniform")
    if (height, width) == (SOURCE_SIZE, SOURCE_SIZE):  # clip(gray, 0, 1), without np.clip's Python layers
        return np.rint(np.minimum(np.maximum(gray, 0.0), 1.0) * 255).astype(np.uint8), invert
    ink = np.clip((gray - background) / (peak - background), 0.0, 1.0)
    ink[ink < NOISE_FLOOR] = 0.0
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    if extent < max(2, MIN_INK_FRACTION * max(height, width)):
        raise NoDigitFound(f"no digit found: only specks ({extent} px) on a {width}x{height} image")
    fitted = _fit(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], DIGIT_BOX)
    fitted /= fitted.max()  # a thin stroke shrunk from a large page keeps MNIST's full-intensity core
    mass = fitted.sum()
    fh, fw = fitted.shape
    centre_y = (fitted.sum(axis=1) * np.arange(fh)).sum() / mass
    centre_x = (fitted.sum(axis=0) * np.arange(fw)).sum() / mass
    top = min(max(round(MNIST_CENTRE - centre_y), 0), SOURCE_SIZE - fh)
    left = min(max(round(MNIST_CENTRE - centre_x), 0), SOURCE_SIZE - fw)
    digit = np.zeros((SOURCE_SIZE, SOURCE_SIZE))
    digit[top : top + fh, left : left + fw] = fitted
    return np.rint(digit * 255).astype(np.uint8), invert


def _box_reduce(array: np.ndarray, factor: int) -> np.ndarray:
    height, width = (array.shape[0] // factor) * factor, (array.shape[1] // factor) * factor
    return array[:height, :width].reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


# The formats ``Image.open`` may try, nothing else: each reads its size from a header before any pixel is decoded,
# so the pixel limits hold before the work. (Pillow would otherwise try ~40 plugins on untrusted bytes; its ICO
# plugin, for one, reports the directory's claimed size and decodes the embedded PNG at its real one.)
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
# A progressive JPEG is decoded scan by scan over the whole image, and a scan can be 14 bytes: 10,000 of them in a
# 164 KB file of 2000x2000 pixels cost libjpeg 22 s, within every pixel limit. Pillow's own progressive files have
# 6 (gray) or 10 (color) scans, mozjpeg's about as many; more than this is refused before decoding.
MAX_JPEG_SCANS = 32  # ~75 ms for a 4-megapixel image at most (--max-image-pixels's default)


def open_image(source: str | Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None):  # noqa: ANN201 - a PIL image
    """An image file opened for decoding, its header read and checked, no pixel decoded yet (Pillow is lazy).

    Only ``IMAGE_FORMATS`` are tried. Raises ``ImageTooLarge`` above ``max_pixels`` (and for what Pillow calls a
    decompression bomb), ``ValueError`` for anything else unreadable; messages start with ``name`` (default: the
    path). ``read_gray`` decodes it; the server opens every image of a request first to count its pixels.
    """
    import warnings

    from PIL import Image

    label = source if name is None else name  # what the messages call the image
    _check_png_size(source, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"{label}: refused as a decompression bomb ({e})") from None
    except MemoryError:
        raise ImageTooLarge(f"{label}: too large to decode in the memory available") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"{label}: not a readable image (not one of {', '.join(IMAGE_FORMATS)})") from None
    except Exception as e:  # untrusted bytes: Pillow's parsers fail in many ways (OSError, SyntaxError, EOFError,
        # ValueError, struct.error, IndexError, ...), and each means the same to the caller: not a readable image
        raise ValueError(f"{label}: not a readable image ({_describe(e, source, label)})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(f"{label}: {width}x{height} pixels is above the limit of {max_pixels:,} "
                            f"(a decompression bomb, or far larger than a digit needs)")
    scans = _jpeg_scans(image)
    if scans > MAX_JPEG_SCANS:
        image.close()
        raise ImageTooLarge(f"{label}: a JPEG of {scans:,} scans is above the limit of {MAX_JPEG_SCANS} (each scan "
                            f"is decoded over the whole image: a CPU bomb)")
    return image


def _check_png_size(source: str | Path | BinaryIO, label: object) -> None:
    """``ImageTooLarge`` for a PNG file larger than its pixels can need: twice their raw size (its rows unfiltered,
    uncompressed) plus ``PNG_SLACK`` for its other chunks. Pillow reads a PNG chunk by chunk in Python, ~0.17 us per
    byte of tiny chunks, so 4 MiB of empty chunks around 28x28 pixels cost 0.5-0.7 s to open and load; checked from
    the header and the file's size, before Pillow reads a chunk."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return _check_png_size(f, label)
    position = source.tell()
    try:
        header = source.read(26)
        size = source.seek(0, 2) - position
    finally:
        source.seek(position)
    if len(header) < 26 or not header.startswith(b"\x89PNG\r\n\x1a\n") or header[12:16] != b"IHDR":
        return  # not a PNG (or a broken one: Pillow says so)
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    bits = header[24] * PNG_CHANNELS.get(header[25], 4)
    need = 2 * height * (1 + (width * bits + 7) // 8) + PNG_SLACK
    if size > need:
        raise ImageTooLarge(f"{label}: a PNG of {size:,} bytes for {width}x{height} pixels is above the limit of "
                            f"{need:,} (its other chunks cost time to read: a CPU bomb)")


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each PNG colour type
PNG_SLACK = 64 * 1024  # bytes for the chunks besides the pixels: a colour profile, text, EXIF


def _jpeg_scans(image: Any) -> int:
    """How many scans a JPEG file holds at most (its start-of-scan markers: entropy-coded data never holds one, as
    it stuffs every 0xFF; a marker's bytes inside a comment count too, which only over-counts); 0 for others."""
    if image.format != "JPEG":
        return 0
    fp = image.fp
    position = fp.tell()
    try:
        fp.seek(0)
        return fp.read().count(b"\xff\xda")
    finally:
        fp.seek(position)


def _describe(error: Exception, source: object, label: object) -> str:
    detail = " ".join(str(error).replace(repr(source), str(label)).split())[:120]  # not "<_io.BytesIO object at ...>"
    return f"{type(error).__name__}: {detail}"


def read_gray(path: str | Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None) -> np.ndarray:
    """An image file (a path, or a binary file object such as ``io.BytesIO(body)``) as grayscale float ``(H, W)``
    in [0, 1], transparency composited onto its background.

    Any Pillow mode (1-bit, palette, 8/16-bit gray, RGB, CMYK, 32-bit integer, float), the first frame of an
    animation, of the formats ``open_image`` accepts. Transparent pixels become the background the ink stands out
    from (white behind dark ink, black behind light ink). Images above ``max_pixels`` are refused before decoding
    (``ImageTooLarge``); images over ``WORKING_SIDE`` are box-reduced. Raises ``ValueError`` (``NoDigitFound``
    when fully transparent) whose message starts with ``name`` (default: the path).
    """
    return decode_gray(open_image(path, max_pixels, name), path if name is None else name)


def decode_gray(image, label: object) -> np.ndarray:  # noqa: ANN001 - a PIL image from open_image
    """``read_gray``'s decoding of an image ``open_image`` returned (and closes); messages start with ``label``."""
    fp = image.fp
    try:
        with image:
            gray, alpha = _channels(image)
    except MemoryError:
        raise ImageTooLarge(f"{label}: too large to decode in the memory available") from None
    except Exception as e:  # a truncated or corrupt body past a valid header
        raise ValueError(f"{label}: not a readable image ({_describe(e, fp, label)})") from None
    if not np.isfinite(gray).all():
        raise ValueError(f"{label}: the image has non-finite pixel values (NaN or infinity)")
    if alpha is not None and alpha.min() < 1.0:
        if alpha.max() <= 0.0:
            raise NoDigitFound(f"{label}: no digit found: the image is fully transparent")
        gray = alpha * gray + (1.0 - alpha) * _canvas(gray, alpha)
    factor = math.ceil(max(gray.shape) / WORKING_SIDE)
    return _box_reduce(gray, factor) if factor > 1 else gray


def _canvas(gray: np.ndarray, alpha: np.ndarray) -> float:
    """The background transparent pixels stand for: 1.0 (white) behind dark ink, 0.0 behind light ink.

    Anti-aliased edges were blended with the canvas the artist saw: when the opaque pixels next to transparent
    ones are lighter than the inner ones, the canvas was light. Ink of one colour (anti-aliased in its alpha
    channel only) shows no such difference; then the ink's own level decides.
    """
    opaque = alpha > 0.5
    clear = np.pad(~opaque, 1, constant_values=False)
    touches = clear[:-2, 1:-1] | clear[2:, 1:-1] | clear[1:-1, :-2] | clear[1:-1, 2:]
    edge, inner = opaque & touches, opaque & ~touches
    if edge.any() and inner.any():
        difference = float(gray[edge].mean() - gray[inner].mean())
        if abs(difference) > 0.05:
            return 1.0 if difference > 0 else 0.0
    ink_level = float((gray * alpha).sum() / alpha.sum())
    return 1.0 if ink_level < 0.5 else 0.0


_UNIT_BYTES = np.arange(256, dtype=np.float32) / 255  # each 8-bit value in [0, 1], as float32 division makes it


def _channels(image) -> tuple[np.ndarray, np.ndarray | None]:  # noqa: ANN001 - a PIL image
    """Grayscale float32 in [0, 1] and alpha in [0, 1] (or ``None``) of any Pillow mode."""
    mode = image.mode
    if mode in ("1", "L"):  # the usual digit: bytes -> floats by a table (np.asarray(image) / 255, same bits)
        image = image if mode == "L" else image.convert("L")
        width, height = image.size
        return _UNIT_BYTES[np.frombuffer(image.tobytes(), np.uint8)].reshape(height, width), None
    if mode.startswith("I") or mode == "F":  # 16/32-bit integers, floats
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            return (values / 65535).astype(np.float32), None
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not math.isfinite(low) or not math.isfinite(high):
            return values.astype(np.float32), None  # reported by the caller
        full = 1.0 if mode == "F" and low >= 0 and high <= 1 else 255.0 if low >= 0 and high <= 255 else (
            65535.0 if low >= 0 and high <= 65535 else None)
        if full is None:  # an unusual range: stretch it
            return ((values - low) / (high - low if high > low else 1.0)).astype(np.float32), None
        return (values / full).astype(np.float32), None
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info)
    if has_alpha or mode == "P":
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), np.float32) / 255
        return np.asarray(rgba.convert("L"), np.float32) / 255, (alpha if has_alpha else None)
    if mode == "LAB":
        return np.asarray(image.getchannel(0), np.float32) / 255, None
    try:
        return np.asarray(image.convert("L"), np.float32) / 255, None
    except ValueError:
        return np.asarray(image.convert("RGB").convert("L"), np.float32) / 255, None


def load_digit(path: str | Path, invert: bool | None = None) -> tuple[np.ndarray, bool]:
    """One image file as an MNIST-like digit ``(28, 28)`` uint8, and whether it was inverted.

    ``read_gray``, then ``normalize_digit`` (polarity, crop, fit in 20x20, centre of mass). Raises
    ``ValueError`` naming the file (``NoDigitFound`` when there is no ink).
    """
    gray = read_gray(path)
    try:
        return normalize_digit(gray, invert)
    except ValueError as e:
        raise type(e)(f"{path}: {e}") from None


def load_image(
    path: str | Path, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE), invert: bool | None = None
) -> tuple[np.ndarray, bool]:
    """One image file as model input ``(1, H, W)`` float32 in [0, 1], and whether it was inverted.

    ``load_digit``, then training's exact resize and scaling.
    """
    digit, inverted = load_digit(path, invert)
    return to_model_input(digit[None], size)[0], inverted

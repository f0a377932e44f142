"""The exact 28->32 resize of training, for serving and the raw-input ONNX model alike (numpy, no torch).

    from ignite_lenet.mnist.resize import to_model_input
    x = to_model_input(images)     # (N, 28, 28) uint8 -> (N, 1, 32, 32) float32 in [0, 1], as in training

It is Pillow's bilinear resampling (``Image.resize((32, 32), Image.BILINEAR)``, the notebook's
``transforms.Resize((32, 32))``, torchvision's uint8 antialiased resize) computed in the same fixed-point
arithmetic: a horizontal then a vertical pass (for 28->32), each a sum of integer coefficients times pixels,
rounded and clamped to uint8. Here each pass is one matrix product over a whole batch, exact in float32 (see
``fixed_point_weights``).
"""

from __future__ import annotations

import functools

import numpy as np

from ignite_lenet.spec import IMAGE_SIZE

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit images (libImaging/Resample.c)


_CHUNK = 2048  # images per matrix product: keeps the intermediates in cache


@functools.lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's normalised bilinear weights ``(out_size, in_size)`` float64 (antialiased when reducing).

    Computed once per pair of sizes (a Python loop over the output pixels) and returned read-only: a server
    resizes every request's digit with the same 28 -> 32 weights.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)  # a wider triangle when reducing: the antialiasing
    support = filter_scale  # the triangle filter's support is 1
    weights = np.zeros((out_size, in_size))
    for out in range(out_size):
        centre = (out + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)  # int() truncates, as C's cast does
        hi = min(int(centre + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((taps - centre + 0.5) / filter_scale))
        total = w.sum()
        weights[out, lo:hi] = w / total if total != 0 else w
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=64)
def fixed_point_weights(in_size: int, out_size: int) -> tuple[np.ndarray, int]:
    """Pillow's integer coefficients for 8-bit images and their number of fraction bits: ``(K, bits)``.

    Computed once per pair of sizes and returned read-only (``resize_weights``).

    A pass computes ``clip((K @ x + 2 ** (bits - 1)) >> bits, 0, 255)``. Pillow uses 22 bits; a power of two
    common to all coefficients is factored out, which changes no result and makes the sums small: for
    28 -> 32 the coefficients are sixteenths (``bits == 4``), so products and sums stay below 2**24 and a
    float32 matrix product computes them exactly.
    """
    scaled = resize_weights(in_size, out_size) * (1 << PRECISION_BITS)
    coefficients = np.where(scaled < 0, np.ceil(scaled - 0.5), np.floor(scaled + 0.5)).astype(np.int64)
    bits = PRECISION_BITS
    nonzero = coefficients[coefficients != 0]
    while bits > 1 and nonzero.size and not (nonzero & 1).any():
        nonzero >>= 1
        bits -= 1
    coefficients >>= PRECISION_BITS - bits
    coefficients.setflags(write=False)
    return coefficients, bits


def _exact_dtype(coefficients: np.ndarray, bits: int) -> type:
    """float32 when every partial sum of a pass is an integer below 2**24 (exact), else float64 (below 2**53)."""
    worst = 255 * int(np.abs(coefficients).sum(axis=1).max()) + (1 << (bits - 1))
    return np.float32 if worst < (1 << 24) else np.float64


@functools.lru_cache(maxsize=64)
def _pass_plan(in_size: int, out_size: int) -> tuple[np.ndarray, int, type]:
    """A pass's transposed coefficients ``(in_size, out_size)`` in the float type that holds it exactly, its
    fraction bits, and that type (read-only, computed once per pair of sizes)."""
    coefficients, bits = fixed_point_weights(in_size, out_size)
    dtype = _exact_dtype(coefficients, bits)
    transposed = np.ascontiguousarray(coefficients.T, dtype=dtype)
    transposed.setflags(write=False)
    return transposed, bits, dtype


def _pass_uint8(x: np.ndarray, transposed: np.ndarray, bits: int) -> np.ndarray:
    """One fixed-point pass along the last axis of float-held uint8 values, rounded and clamped in place."""
    y = x @ (transposed if transposed.dtype == x.dtype else transposed.astype(x.dtype))
    y += 1 << (bits - 1)
    y *= 1.0 / (1 << bits)  # a power of two: exact, and floor() then is the arithmetic shift
    np.floor(y, out=y)
    return np.clip(y, 0, 255, out=y)


def resize(images: np.ndarray, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    """Resize ``(N, H, W)`` images bilinearly (antialiased) to ``size``.

    uint8 images give uint8, bit-identical to Pillow's ``Image.resize(size[::-1], Image.BILINEAR)`` and to
    torchvision's ``resize(..., antialias=True)`` on uint8 tensors when enlarging (28 -> 32: tested on all of
    MNIST and on random images); when reducing, Pillow sometimes runs the vertical pass first and a pixel may
    differ by one grey level. Float images give float32 through the same weights without the rounding.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {images.shape}")
    (height, width), (out_h, out_w) = images.shape[1:], size
    if images.dtype != np.uint8:
        x = images.astype(np.float32)
        horizontal = resize_weights(width, out_w).astype(np.float32)
        vertical = resize_weights(height, out_h).astype(np.float32)
        return np.matmul(vertical, x @ horizontal.T)
    kh, bits_h, dtype_h = _pass_plan(width, out_w)
    kv, bits_v, dtype_v = _pass_plan(height, out_h)
    dtype = np.float64 if np.float64 in (dtype_h, dtype_v) else np.float32
    order = [axis for axis, needed in (("x", width != out_w), ("y", height != out_h)) if needed]  # horizontal first
    out = np.empty((len(images), out_h, out_w), np.uint8)
    for start in range(0, len(images), _CHUNK):
        x = images[start : start + _CHUNK].astype(dtype)
        for axis in order:
            x = _pass_uint8(x, kh, bits_h) if axis == "x" else _pass_uint8(x.swapaxes(1, 2), kv, bits_v).swapaxes(1, 2)
        out[start : start + _CHUNK] = x
    return out


def to_model_input(images: np.ndarray, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    """Model input ``(N, 1, H, W)`` float32 from ``(N, h, w)`` or ``(N, 1, h, w)`` images.

    uint8 images are resized in uint8 (``resize``), then divided by 255 in float32, bit-identical to the
    notebook's ``Resize((32, 32))`` + ``ToTensor()``; float images are taken to be in [0, 1] already.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1, H, W), got {images.shape}")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0-255) or float (0-1), got dtype {images.dtype}")
    if tuple(images.shape[1:]) != tuple(size):
        images = resize(images, size)
    if images.dtype == np.uint8:
        out = np.empty((len(images), 1, *size), np.float32)
        for start in range(0, len(images), _CHUNK * 4):  # the same float32 division torch's div_(255) does
            np.divide(images[start : start + _CHUNK * 4], np.float32(255), out=out[start : start + _CHUNK * 4, 0])
        return out
    return images.astype(np.float32)[:, None]

"""Reading and checking digit images, shared by datasets, training and serving.

Only NumPy and Pillow: the serving environment imports this module too.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

IMAGE_SHAPE = (28, 28)
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


class ImageError(ValueError):
    """Images or labels are malformed; the message names the problem."""


def as_uint8_images(arr, *, what: str = "images") -> np.ndarray:
    """Return ``arr`` as a (n, 28, 28) uint8 array, or raise :class:`ImageError`.

    Accepted: shape (n, 28, 28) or (n, 784); integer pixels 0-255, or floats that are either
    all in [0, 1] (scaled by 255) or integral values in 0-255.
    """
    a = np.asarray(arr)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise ImageError(f"{what}: dtype {a.dtype} is not numeric")
    if a.ndim == 2 and a.shape[1] == N_PIXELS:
        a = a.reshape(-1, *IMAGE_SHAPE)
    elif a.ndim == 2 and a.shape == IMAGE_SHAPE:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != IMAGE_SHAPE:
        raise ImageError(f"{what}: shape {tuple(np.shape(arr))} is not (n, 28, 28) or (n, 784)")
    if a.shape[0] == 0:
        raise ImageError(f"{what}: empty (0 images)")
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            bad = int((~finite).sum())
            raise ImageError(f"{what}: {bad} pixel values are NaN or infinite")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            a = np.rint(a * 255.0)
        elif lo >= 0.0 and hi <= 255.0 and np.all(a == np.rint(a)):
            pass
        else:
            raise ImageError(
                f"{what}: float pixels must be in [0, 1] or whole numbers in [0, 255]; "
                f"found range [{lo:g}, {hi:g}]"
            )
        return a.astype(np.uint8)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        raise ImageError(f"{what}: pixel values must be in [0, 255]; found range [{lo}, {hi}]")
    return a.astype(np.uint8)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1] as 0-255 uint8, rounded; values outside [0, 1] clipped (no checks: for
    arrays this project made, e.g. a shift's output or a parsed payload)."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def as_labels(arr, n: int, *, what: str = "labels") -> np.ndarray:
    """Return ``arr`` as (n,) uint8 labels 0-9, or raise :class:`ImageError`."""
    y = np.asarray(arr)
    if y.ndim != 1:
        y = y.reshape(-1) if y.size == n else y
    if y.ndim != 1 or y.shape[0] != n:
        raise ImageError(f"{what}: expected {n} labels (one per image), got shape {np.shape(arr)}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ImageError(f"{what}: NaN or infinite labels")
        if not np.all(y == np.rint(y)):
            raise ImageError(f"{what}: labels must be whole numbers 0-9")
    elif y.dtype.kind not in "biu":
        raise ImageError(f"{what}: dtype {y.dtype} is not an integer label type")
    bad = (y < 0) | (y > 9)
    if bad.any():
        vals = sorted({int(v) for v in y[bad][:5]})
        raise ImageError(f"{what}: {int(bad.sum())} labels outside 0-9 (e.g. {vals})")
    return y.astype(np.uint8)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The largest encoded PNG accepted: a 28x28 digit is under 1 KB; RGBA with metadata a few KB.
MAX_PNG_BYTES = 65_536


def png_size(data: bytes, *, what: str = "PNG") -> tuple[int, int]:
    """(width, height) from a PNG's header, read without decoding anything; ImageError if the bytes
    are not a PNG (signature, then the IHDR chunk first, as the PNG specification requires)."""
    if len(data) < 24 or data[:8] != PNG_SIGNATURE:
        raise ImageError(f"{what}: not a PNG (PNG is the only image format accepted)")
    if data[12:16] != b"IHDR":
        raise ImageError(f"{what}: malformed PNG (the first chunk is not IHDR)")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_png(data: bytes, *, what: str = "PNG") -> np.ndarray:
    """Decode one PNG to a 28x28 uint8 grayscale array.

    Everything that can be checked before decoding is: the size in bytes, the PNG signature and the
    dimensions in its header (a 6000x6000 PNG of 187 KB would take 565 MB decoded). Only Pillow's
    PNG decoder is used. Images of another size are refused rather than silently resized: a resize
    changes stroke width, which the model and the drift monitor both notice.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{what}: empty image data")
    if len(data) > MAX_PNG_BYTES:
        raise ImageError(f"{what}: {len(data):,} bytes; a 28x28 PNG is at most {MAX_PNG_BYTES:,}")
    width, height = png_size(data, what=what)
    if (width, height) != IMAGE_SHAPE[::-1]:
        raise ImageError(f"{what}: image is {width}x{height} pixels, expected 28x28")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(bg, im.convert("RGBA"))
            gray = im.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{what}: not a readable image ({exc})") from exc
    arr = np.asarray(gray, dtype=np.uint8)
    if arr.shape != IMAGE_SHAPE:
        raise ImageError(f"{what}: image is {arr.shape[1]}x{arr.shape[0]} pixels, expected 28x28")
    return arr


def encode_png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def image_hashes(images: np.ndarray) -> list[str]:
    """A short content hash per image (for leakage and duplicate checks)."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=12).hexdigest() for row in flat]

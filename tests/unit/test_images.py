import numpy as np
import pytest

from mnistcl.images import ImageError, as_labels, as_uint8_images, decode_png, encode_png

pytestmark = pytest.mark.unit


def test_accepts_documented_layouts():
    a = np.arange(784 * 2, dtype=np.int64).reshape(2, 784) % 256
    assert as_uint8_images(a).shape == (2, 28, 28)
    f = np.full((3, 28, 28), 0.5, dtype=np.float32)
    out = as_uint8_images(f)
    assert out.dtype == np.uint8 and int(out[0, 0, 0]) == 128
    assert as_uint8_images(np.full((1, 28, 28), 200.0)).max() == 200


@pytest.mark.parametrize(
    "arr, needle",
    [
        (np.zeros((2, 27, 28)), "shape"),
        (np.zeros((0, 28, 28)), "empty"),
        (np.full((1, 28, 28), np.nan), "NaN"),
        (np.full((1, 28, 28), 300), r"\[0, 255\]"),
        (np.full((1, 28, 28), -1.5), "float pixels"),
        (np.array([["a"] * 784]), "not numeric"),
    ],
)
def test_rejects_bad_images(arr, needle):
    with pytest.raises(ImageError, match=needle):
        as_uint8_images(arr)


@pytest.mark.parametrize("labels, needle", [([1, 10], "outside 0-9"), ([1], "expected 2"),
                                             ([1.5, 2], "whole numbers"), ([np.nan, 1], "NaN")])
def test_rejects_bad_labels(labels, needle):
    with pytest.raises(ImageError, match=needle):
        as_labels(np.array(labels), 2)


def test_png_roundtrip_and_errors():
    img = (np.arange(784).reshape(28, 28) % 256).astype(np.uint8)
    assert np.array_equal(decode_png(encode_png(img)), img)
    with pytest.raises(ImageError, match="not a PNG"):
        decode_png(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ImageError, match="not a readable image"):
        decode_png(encode_png(img)[:40])  # a 28x28 header, then nothing
    with pytest.raises(ImageError, match="empty"):
        decode_png(b"")
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (32, 32)).save(buf, format="PNG")
    with pytest.raises(ImageError, match="32x32"):
        decode_png(buf.getvalue())


def test_images_are_checked_before_they_are_decoded(monkeypatch):
    """Size in bytes, signature and header dimensions are read before Pillow decodes anything:
    a 30000x30000 header is refused without one pixel allocated, other formats are refused."""
    import io
    import struct
    import zlib

    from PIL import Image

    import mnistcl.images as images

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    assert images.png_size(bomb) == (30000, 30000)
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(ImageError, match="30000x30000 pixels, expected 28x28"):
        decode_png(bomb)
    with pytest.raises(ImageError, match="at most"):
        decode_png(b"\x89PNG" + b"\0" * images.MAX_PNG_BYTES)
    assert opened == []
    monkeypatch.undo()
    for fmt in ("JPEG", "GIF", "BMP"):
        buf = io.BytesIO()
        Image.new("L", (28, 28)).save(buf, format=fmt)
        with pytest.raises(ImageError, match="not a PNG"):
            decode_png(buf.getvalue())

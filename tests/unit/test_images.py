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
    with pytest.raises(ImageError, match="not a readable image"):
        decode_png(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ImageError, match="empty"):
        decode_png(b"")
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (32, 32)).save(buf, format="PNG")
    with pytest.raises(ImageError, match="32x32"):
        decode_png(buf.getvalue())

"""Payload parsing and metric batching of the model server (pure functions, main environment)."""

import base64

import numpy as np
import pytest

from mnistcl.images import encode_png
from serving.model import MetricsBuffer
from serving.payload import PayloadError, parse

pytestmark = pytest.mark.unit


def test_scales_and_shapes():
    img = (np.arange(784) % 256).reshape(28, 28)
    a, kind = parse({"data": {"ndarray": img.tolist()}}, max_images=4)
    assert kind == "data" and a.shape == (1, 28, 28) and np.isclose(a.max(), 1.0)
    b, _ = parse({"data": {"ndarray": (img.reshape(1, 784) / 255).tolist()}}, max_images=4)
    np.testing.assert_allclose(a, b, atol=1e-6)
    dark = np.full((1, 28, 28), 1.0)  # all ones: ambiguous, the tag decides
    c, _ = parse({"data": {"ndarray": dark.tolist()}, "meta": {"tags": {"scale": "0-255"}}}, max_images=4)
    assert np.isclose(c.max(), 1 / 255)
    png = base64.b64encode(encode_png(img.astype(np.uint8))).decode()
    d, kind = parse({"strData": f"{png}, {png}"}, max_images=4)
    assert kind == "strData" and d.shape == (2, 28, 28)
    np.testing.assert_allclose(d[0], a[0], atol=1e-6)


@pytest.mark.parametrize("req, needle", [
    ([1, 2], "JSON object"),
    ({}, "empty request"),
    ({"data": {}, "binData": "x"}, "exactly one"),
    ({"data": {"ndarray": [[0] * 784] * 5}}, "limit is 4"),
    ({"data": {"tensor": {"shape": [2, 784], "values": [0] * 10}}}, "do not fit"),
    ({"data": {"ndarray": [[0] * 784]}, "meta": {"tags": {"scale": "0-100"}}}, "scale"),
    ({"jsonData": {"png": [1]}}, "not a string"),
])
def test_bad_payloads(req, needle):
    with pytest.raises(PayloadError, match=needle):
        parse(req, max_images=4)


def test_metrics_buffer_sums_counters_and_counts_observations():
    buf = MetricsBuffer()
    buf.add("predict", [{"type": "COUNTER", "key": "c", "value": 1, "tags": {"a": "1"}},
                        {"type": "TIMER", "key": "t", "value": 3.0, "tags": {}}])
    buf.add("predict", [{"type": "COUNTER", "key": "c", "value": 2, "tags": {"a": "1"}},
                        {"type": "COUNTER", "key": "c", "value": 5, "tags": {"a": "2"}},
                        {"type": "OBSERVATIONS", "key": "t", "value": np.array([4.0, 30.0]), "tags": {}}])
    buf.add("feedback", [{"type": "COUNTER", "key": "c", "value": 7, "tags": {"a": "1"}}])
    out = buf.take(bins=[0.0, 0.005, 0.01, 1.0])  # seconds, as Seldon's bins
    assert [(m["key"], m["value"], m["tags"]) for m in out["predict"] if m["type"] == "COUNTER"] == \
        [("c", 3, {"a": "1"}), ("c", 5, {"a": "2"})]
    (hist,) = [m for m in out["predict"] if m["type"] == "HISTOGRAM"]
    assert hist["key"] == "t" and hist["value"][0] == [2, 0, 1] and hist["value"][1] == pytest.approx(0.037)
    assert out["feedback"] == [{"type": "COUNTER", "key": "c", "value": 7, "tags": {"a": "1"}}]
    assert buf.take(bins=[0.0, 1.0]) == {}  # taken once


# ---------------------------------------------------------------- property-based fuzzing
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX = 4
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 10**30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40)
keys = st.sampled_from(["data", "binData", "strData", "jsonData", "meta", "ndarray", "tensor", "shape", "values",
                        "png", "tags", "scale", "names"])


def _accepted(images: np.ndarray) -> None:
    """What parse() returns whenever it accepts: float32 (n, 28, 28) in [0, 1], 1 <= n <= MAX."""
    assert images.dtype == np.float32 and images.ndim == 3 and images.shape[1:] == (28, 28)
    assert 1 <= len(images) <= MAX and np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def _parse_or_refuse(request) -> None:
    try:
        images, _ = parse(request, max_images=MAX)
    except PayloadError as exc:
        assert str(exc)  # a refusal always names its problem
        return
    _accepted(images)


@FUZZ
@given(st.dictionaries(keys, json_values, max_size=4) | json_values)
def test_fuzz_any_json_is_parsed_or_refused_by_name(request):
    """Any JSON value at all: accepted as digits, or PayloadError; never another exception."""
    _parse_or_refuse(request)


@FUZZ
@given(st.dictionaries(st.sampled_from(["ndarray", "tensor"]), json_values | st.fixed_dictionaries(
    {"shape": st.lists(st.integers(-3, 1000) | st.floats() | st.booleans(), max_size=5), "values": json_values})),
    st.dictionaries(st.just("tags"), st.dictionaries(st.just("scale"), json_values)) | json_values)
def test_fuzz_data_fields(data, meta):
    _parse_or_refuse({"data": data, "meta": meta})


@FUZZ
@given(st.sampled_from(["binData", "strData", "jsonData"]), st.binary(max_size=300), st.booleans())
def test_fuzz_image_bytes(kind, raw, with_png_header):
    """Arbitrary bytes (some behind a PNG signature and IHDR of 28x28) as each image field."""
    if with_png_header:
        raw = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x1c\x00\x00\x00\x1c" + raw
    text = base64.b64encode(raw).decode()
    value = {"png": [text]} if kind == "jsonData" else text
    _parse_or_refuse({kind: value})


@FUZZ
@given(st.integers(1, MAX), st.sampled_from(["ndarray", "flat", "tensor", "png"]), st.data())
def test_fuzz_valid_digits_round_trip(n, form, data):
    """Valid digits in every form come back exactly (pixel / 255)."""
    imgs = np.asarray(data.draw(st.lists(st.integers(0, 255), min_size=n * 784, max_size=n * 784)),
                      np.uint8).reshape(n, 28, 28)
    if imgs.max() <= 1:  # an all-dark image is ambiguous without the scale tag
        imgs[0, 0, 0] = 255
    request = {
        "ndarray": {"data": {"ndarray": imgs.tolist()}},
        "flat": {"data": {"ndarray": imgs.reshape(n, 784).tolist()}},
        "tensor": {"data": {"tensor": {"shape": [n, 28, 28], "values": imgs.reshape(-1).tolist()}}},
        "png": {"jsonData": {"png": [base64.b64encode(encode_png(i)).decode() for i in imgs]}},
    }[form]
    images, _ = parse(request, max_images=MAX)
    np.testing.assert_allclose(images, imgs / 255.0, atol=1e-6)


pixel_lists = st.lists(st.integers(-2, 258) | st.booleans() | st.floats(0, 255) | st.text(max_size=2), max_size=5)


@FUZZ
@given(pixel_lists | st.lists(pixel_lists | st.integers(0, 255) | st.lists(pixel_lists, max_size=2), max_size=4),
       st.sampled_from([{}, {"tags": {"scale": "0-255"}}, {"tags": {"scale": "0-1"}}]))
def test_pixel_rows_fast_path_is_numpy_general_path(raw, meta):
    """The uint8 shortcut for whole-number rows gives exactly what NumPy's general path gives,
    and falls back (None) for everything else: same array, or the same refusal."""
    from serving import payload

    fast = payload._pixel_rows(raw)
    if fast is not None:
        np.testing.assert_array_equal(fast, np.asarray(raw, dtype=np.float64))
    rows = {"data": {"ndarray": raw}, "meta": meta}
    got, want = _outcome(rows), _outcome(rows, general=True)
    assert type(got) is type(want)
    if isinstance(got, np.ndarray):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    else:
        assert got == want


def _outcome(request, general=False):
    from serving import payload

    keep = payload._pixel_rows
    if general:
        payload._pixel_rows = lambda raw: None
    try:
        return parse(request, max_images=MAX)[0]
    except PayloadError as exc:
        return str(exc)
    finally:
        payload._pixel_rows = keep


@FUZZ
@given(st.integers(1, MAX), st.sampled_from(["rows", "images", "flat"]), st.sampled_from([1, 255, 256, 300]),
       st.sampled_from([{}, {"tags": {"scale": "0-255"}}, {"tags": {"scale": "0-1"}}]), st.data())
def test_pixel_rows_whole_digits_same_as_numpy(n, form, top, meta, data):
    """Whole images (784 values, so the scale and the bounds are reached): all 0/1, values over
    255 or with a 0-1 tag included; the same array of the same type, or the same refusal."""
    values = data.draw(st.lists(st.integers(0, top), min_size=n * 784, max_size=n * 784))
    shaped = np.asarray(values).reshape(n, 784)
    raw = {"rows": shaped.tolist(), "images": shaped.reshape(n, 28, 28).tolist(), "flat": values[:784]}[form]
    request = {"data": {"ndarray": raw}, "meta": meta}
    got, want = _outcome(request), _outcome(request, general=True)
    assert type(got) is type(want)
    if isinstance(got, np.ndarray):
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    else:
        assert got == want


def test_pixel_rows_taken_for_digits_as_clients_send_them():
    from serving import payload

    imgs = np.random.default_rng(0).integers(0, 256, (3, 784)).astype(np.uint8)
    assert payload._pixel_rows(imgs.tolist()).dtype == np.uint8
    assert payload._pixel_rows(imgs[0].tolist()).shape == (784,)
    assert payload._pixel_rows(imgs.reshape(3, 28, 28).tolist()).shape == (3, 28, 28)
    for ragged in ([[1, 2], [3, 4, 5], [6]], [[[1, 2], [3, 4]], [[5, 6, 7], [8]]], [[[1, 2]], [3, 4]], [[1, [2]]]):
        assert payload._pixel_rows(ragged) is None, ragged
        with pytest.raises(PayloadError, match="not a numeric array"):
            parse({"data": {"ndarray": ragged}}, max_images=MAX)
    assert payload._pixel_rows((imgs / 255).tolist()) is None
    with pytest.raises(PayloadError, match=r"values must be in \[0, 255\]"):
        parse({"data": {"ndarray": [[300] + [0] * 783]}}, max_images=MAX)

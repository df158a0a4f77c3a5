"""Payload parsing and metric batching of the model server (pure functions, main environment)."""

import base64

import numpy as np
import pytest

from mnistcl.images import encode_png
from serving.model import _merge_counters
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


def test_merge_counters_sums_and_keeps_observations():
    items = [{"type": "COUNTER", "key": "c", "value": 1, "tags": {"a": "1"}},
             {"type": "COUNTER", "key": "c", "value": 2, "tags": {"a": "1"}},
             {"type": "COUNTER", "key": "c", "value": 5, "tags": {"a": "2"}},
             {"type": "TIMER", "key": "t", "value": 3.0, "tags": {}},
             {"type": "TIMER", "key": "t", "value": 4.0, "tags": {}}]
    out = _merge_counters(items)
    assert [(m["key"], m["value"]) for m in out] == [("c", 3), ("c", 5), ("t", 3.0), ("t", 4.0)]

"""Augmented copies of new digits for fine-tuning (retraining/augment.py)."""

import numpy as np
import pytest

from retraining.augment import augment

pytestmark = pytest.mark.unit


def test_copies_are_small_moves_of_each_digit(mnist_small):
    x, _ = mnist_small["test"]
    x = x[:50]
    a = augment(x, 3, np.random.default_rng(0))
    assert a.shape == (150, 28, 28) and a.dtype == np.uint8
    # copy-major: copy k of digit i is a[k * n + i]; it is still that digit, not another one
    flat = lambda v: v.reshape(len(v), -1).astype(np.float64)  # noqa: E731
    orig, copies = flat(x), flat(a).reshape(3, 50, -1)
    for k in range(3):
        same = [np.corrcoef(orig[i], copies[k, i])[0, 1] for i in range(50)]
        other = [np.corrcoef(orig[i], copies[k, (i + 1) % 50])[0, 1] for i in range(50)]
        assert np.median(same) > 0.6 > np.median(other) + 0.2
        assert not np.array_equal(copies[k], orig)  # moved, not copied
    # ink stays on the canvas: the total brightness changes by the zoom, not by clipping a digit off
    ratio = flat(a).sum(1) / np.tile(orig.sum(1), 3)
    assert 0.75 < ratio.min() and ratio.max() < 1.3


def test_deterministic_per_seed_and_refuses_other_shapes(mnist_small):
    x = mnist_small["test"][0][:10]
    assert np.array_equal(augment(x, 2, np.random.default_rng(5)), augment(x, 2, np.random.default_rng(5)))
    assert not np.array_equal(augment(x, 2, np.random.default_rng(5)), augment(x, 2, np.random.default_rng(6)))
    assert augment(x, 0, np.random.default_rng(0)).shape == (0, 28, 28)
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        augment(x.reshape(10, 784), 1, np.random.default_rng(0))

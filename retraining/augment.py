"""Augmented copies of a new cohort's few labelled digits for fine-tuning.

A retraining learns a new handwriting from a few hundred labelled digits. Each copy is the digit
moved by a small random affine transform (rotation, scale, shift) that keeps its label: the
model sees the cohort's strokes in more positions than the batch holds. Deterministic per seed.

  augment(x, copies=2, rng=np.random.default_rng(0))  ->  (copies * n, 28, 28) uint8
  augment_labelled(x, y, 2, rng)                      ->  the same with their labels
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Small enough to keep every digit's identity (a 6 never becomes a 9; a 1 stays upright-ish).
MAX_DEGREES, MAX_SHIFT_PX, SCALE_RANGE = 8.0, 1.5, (0.92, 1.08)


def augment(x: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """``copies`` transformed copies of every image in ``x`` (uint8, (n, 28, 28)), copy-major."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"augment takes images of shape (n, 28, 28), got {x.shape}")
    if copies <= 0 or not len(x):
        return x[:0].copy()
    n = len(x) * copies
    angle = np.deg2rad(rng.uniform(-MAX_DEGREES, MAX_DEGREES, n))
    zoom = rng.uniform(*SCALE_RANGE, n)
    shift = rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX, (n, 2))
    centre = np.array([13.5, 13.5])
    src = np.tile(x.astype(np.float32), (copies, 1, 1))
    out = np.empty_like(src)
    for i in range(n):
        c, s = np.cos(angle[i]) / zoom[i], np.sin(angle[i]) / zoom[i]
        matrix = np.array([[c, -s], [s, c]])  # output -> input coordinates
        offset = centre - matrix @ (centre + shift[i])
        out[i] = ndimage.affine_transform(src[i], matrix, offset=offset, order=1, mode="constant", cval=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def augment_labelled(x: np.ndarray, y: np.ndarray, copies: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The transformed copies of ``x`` with their labels (copy-major, as :func:`augment` orders them)."""
    return augment(x, copies, rng), np.tile(np.asarray(y), copies)

"""Handwriting shifts applied to digit images: the drift a new cohort of users brings.

Each shift takes images (n, 28, 28) in [0, 1] (float) and a severity, and returns new images in
[0, 1]; randomness comes from the generator passed in, so a cohort is reproducible. Used by the
drift benchmark, the monitoring tests and the traffic simulator.

  rotate      degrees (each image turned by +/- severity, sign random)
  thicken     pixels of grey dilation (1-3)           thin      pixels of grey erosion
  noise       standard deviation of Gaussian noise     invert    share of images inverted (0-1)
  blur        Gaussian sigma in pixels                 contrast  factor < 1 (low contrast)
  scale       zoom factor about the centre             offset    pixels of shift (random direction)
  slant       horizontal shear factor                  elastic   displacement strength (alpha)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Images = np.ndarray


def _each(x: Images, fn) -> Images:
    return np.stack([fn(i, img) for i, img in enumerate(x)]) if len(x) else x.copy()


def rotate(x: Images, severity: float, rng: np.random.Generator) -> Images:
    signs = rng.choice([-1.0, 1.0], size=len(x))
    return _each(x, lambda i, img: ndimage.rotate(img, signs[i] * severity, reshape=False, order=1))


def thicken(x: Images, severity: float, rng: np.random.Generator) -> Images:
    k = 1 + 2 * int(round(severity)) if severity >= 1 else 2
    return ndimage.grey_dilation(x, size=(1, k, k)) if severity > 0 else x.copy()


def thin(x: Images, severity: float, rng: np.random.Generator) -> Images:
    k = 1 + int(round(severity))
    return ndimage.grey_erosion(x, size=(1, k, k)) if severity > 0 else x.copy()


def noise(x: Images, severity: float, rng: np.random.Generator) -> Images:
    return x + rng.normal(0.0, severity, size=x.shape).astype(np.float32)


def invert(x: Images, severity: float, rng: np.random.Generator) -> Images:
    out = x.copy()
    flip = rng.random(len(x)) < severity
    out[flip] = 1.0 - out[flip]
    return out


def blur(x: Images, severity: float, rng: np.random.Generator) -> Images:
    return ndimage.gaussian_filter(x, sigma=(0, severity, severity)) if severity > 0 else x.copy()


def contrast(x: Images, severity: float, rng: np.random.Generator) -> Images:
    return x * float(severity)


def scale(x: Images, severity: float, rng: np.random.Generator) -> Images:
    c = 13.5
    inv = 1.0 / severity
    return ndimage.affine_transform(x, [1.0, inv, inv], offset=[0.0, c - inv * c, c - inv * c], order=1)


def offset(x: Images, severity: float, rng: np.random.Generator) -> Images:
    angles = rng.uniform(0, 2 * np.pi, size=len(x))
    return _each(x, lambda i, img: ndimage.shift(img, (severity * np.sin(angles[i]), severity * np.cos(angles[i])),
                                                   order=1))


def slant(x: Images, severity: float, rng: np.random.Generator) -> Images:
    # output (r, c) reads input (r, c + s * (r - 13.5)): a shear that leans the digit.
    matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, severity, 1.0]])
    return ndimage.affine_transform(x, matrix, offset=[0.0, 0.0, -severity * 13.5], order=1)


def elastic(x: Images, severity: float, rng: np.random.Generator, sigma: float = 4.0) -> Images:
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)

    def one(i, img):
        dr = ndimage.gaussian_filter(rng.uniform(-1, 1, (28, 28)), sigma) * severity
        dc = ndimage.gaussian_filter(rng.uniform(-1, 1, (28, 28)), sigma) * severity
        return ndimage.map_coordinates(img, [rows + dr, cols + dc], order=1)

    return _each(x, one)


SHIFTS = {f.__name__: f for f in (rotate, thicken, thin, noise, invert, blur, contrast, scale, offset, slant, elastic)}


def apply(x: Images, shifts: dict[str, float] | list[tuple[str, float]], rng: np.random.Generator) -> Images:
    """Apply shifts in order; ``x`` may be uint8 0-255 or float 0-1. Returns float32 in [0, 1]."""
    out = np.asarray(x, dtype=np.float32)
    if np.asarray(x).dtype == np.uint8:
        out = out / 255.0
    items = shifts.items() if isinstance(shifts, dict) else shifts
    for name, severity in items:
        if name not in SHIFTS:
            raise ValueError(f"unknown shift {name!r}; known: {', '.join(sorted(SHIFTS))}")
        out = SHIFTS[name](out, float(severity), rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)

"""A label-free estimate of served accuracy, from the model's own probabilities.

Feedback arrives late and only for some requests; the monitor needs to know how the model is
doing now. Each estimator is fitted on labelled validation data of the model (its gate slices,
when it is validated) and then applied to the probabilities of an unlabelled window:

  confidence   mean of the temperature-scaled top probability: if the model were calibrated,
               its expected accuracy (the idea of NannyML's CBPE, for one multiclass score)
  atc          average thresholded confidence (Garg et al. 2022, "Leveraging unlabeled data to
               predict out-of-distribution performance"): the share of the window whose
               temperature-scaled top probability clears the threshold at which the validation
               data's share equals its accuracy
  atc-entropy  the same with negative entropy as the score

Refit on recent traffic (``recalibrated``): once the model has served enough labelled images
(feedback on earlier windows), the estimator is refitted on them: the newest handwriting the
model meets, not only its validation data. The window being estimated is never among them.

bench/estimate.py compares them on the scenario's cohorts; configs/monitoring.yaml picks one.
Plain NumPy and SciPy, no framework: the probabilities come from the prediction log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize

METHODS = ("confidence", "atc", "atc-entropy")
_EPS = 1e-7


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0))


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of log-probabilities divided by the temperature (1: unchanged)."""
    z = _log(probs) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(probs: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The temperature that minimises the (weighted) negative log-likelihood (Guo et al. 2017)."""
    lp, y = _log(probs), np.asarray(y, np.int64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)

    def nll(log_t: float) -> float:
        z = lp / np.exp(log_t)
        z -= z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return float(-(w * logp[np.arange(len(y)), y]).sum() / w.sum())

    res = optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def score(probs: np.ndarray, kind: str) -> np.ndarray:
    if kind == "entropy":
        p = np.clip(probs, _EPS, 1.0)
        return (p * np.log(p)).sum(1)  # negative entropy: higher is more confident
    return probs.max(1)


@dataclass
class Estimator:
    method: str
    temperature: float
    threshold: float | None = None  # ATC only
    fitted_on: int = 0               # validation images
    validation_accuracy: float | None = None
    source: str = "validation"      # validation (the gate's slices) or recent (labelled traffic)

    def estimate(self, probs: np.ndarray) -> float:
        """Estimated accuracy of a window from its (n, 10) probabilities."""
        if len(probs) == 0:
            return float("nan")
        p = scaled(probs, self.temperature)
        if self.method == "confidence":
            return float(p.max(1).mean())
        s = score(p, "entropy" if self.method == "atc-entropy" else "max")
        return float((s > self.threshold).mean())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Estimator:
        return cls(**{k: d[k] for k in ("method", "temperature", "threshold", "fitted_on", "validation_accuracy",
                                         "source") if k in d})


def fit(probs: np.ndarray, y: np.ndarray, method: str = "atc", weights: np.ndarray | None = None) -> Estimator:
    """Fit an estimator on labelled validation outputs (``weights``: per-image, e.g. the traffic mix)."""
    if method not in METHODS:
        raise ValueError(f"unknown estimate method {method!r}; known: {', '.join(METHODS)}")
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    if len(y) < 10:
        raise ValueError(f"an accuracy estimator needs labelled validation images; got {len(y)}")
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    t = fit_temperature(probs, y, w)
    p = scaled(probs, t)
    acc = float((w * (p.argmax(1) == y)).sum() / w.sum())
    est = Estimator(method=method, temperature=t, fitted_on=int(len(y)), validation_accuracy=acc)
    if method != "confidence":
        s = score(p, "entropy" if method == "atc-entropy" else "max")
        # The threshold where the weighted share of scores above it equals the accuracy.
        order = np.argsort(s)
        cum = np.cumsum(w[order]) / w.sum()  # share at or below each sorted score
        k = int(np.searchsorted(cum, 1.0 - acc))
        k = min(max(k, 0), len(s) - 1)
        est.threshold = float(s[order][k])
    return est


def recalibrated(est: Estimator, probs: np.ndarray, y: np.ndarray, min_images: int = 200) -> Estimator:
    """``est`` refitted on recent labelled traffic the same model served, when there are at least
    ``min_images`` of it; otherwise ``est`` unchanged."""
    if len(y) < max(min_images, 10):
        return est
    new = fit(probs, y, est.method)
    new.source = "recent"
    return new

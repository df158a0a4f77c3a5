"""The gate's measurements of one model on the evaluation slices (validation/gate.py decides).

Through ONNX Runtime, so every framework is measured alike: accuracy overall and per class, the
per-image outcomes the decision pairs, size, complexity, speed (single-image p50/p99 latency and
batch throughput, several models interleaved in one process), robustness under mild shifts,
calibration (ECE), and the label-free estimators fitted on the slices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnistcl.images import to_uint8
from mnistcl.onnx_utils import OnnxModel, macs_per_image, param_count
from mnistcl.shifts import apply
from monitoring.estimate import METHODS, fit


@dataclass
class Measured:
    """One model on the gate's slices: the JSON metrics, and per image what the decision pairs."""
    metrics: dict
    correct: dict[str, np.ndarray] = field(default_factory=dict)  # slice -> prediction right, per image
    probs: dict[str, np.ndarray] = field(default_factory=dict)    # slice -> (n, 10) probabilities


def accuracy_report(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    pred = probs.argmax(1)
    per_class = {str(c): float((pred[y == c] == c).mean()) if (y == c).any() else None for c in range(10)}
    return {"accuracy": float((pred == y).mean()), "per_class": per_class, "n": int(len(y))}


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


ROBUSTNESS_SHIFTS = {"rotation_12deg": {"rotate": 12}, "noise_0.15": {"noise": 0.15},
                     "thicker_strokes": {"thicken": 0.5}}


def robustness_shifts(x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Mild, label-preserving shifts (mnistcl.shifts): small rotation, pixel noise, thicker strokes."""
    return {name: to_uint8(apply(x, shift, np.random.default_rng(seed)))
            for name, shift in ROBUSTNESS_SHIFTS.items()}


def speed(models: dict[str, OnnxModel], runs: int = 200, batch: int = 256) -> dict[str, dict[str, float]]:
    """Single-image latency (p50, p99) and batch throughput, models interleaved run by run."""
    rng = np.random.default_rng(0)
    one = rng.random((1, 28, 28), dtype=np.float32)
    many = rng.random((batch, 28, 28), dtype=np.float32)
    lat: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():  # warm-up
        for _ in range(10):
            m.session.run(None, {m.input: one})
        m.session.run(None, {m.input: many})
    for _ in range(runs):
        for k, m in models.items():
            t = time.perf_counter()
            m.session.run(None, {m.input: one})
            lat[k].append((time.perf_counter() - t) * 1e3)
    thr: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(5):
        for k, m in models.items():
            t = time.perf_counter()
            m.session.run(None, {m.input: many})
            thr[k].append(batch / (time.perf_counter() - t))
    return {k: {"p50_ms": float(np.percentile(lat[k], 50)), "p99_ms": float(np.percentile(lat[k], 99)),
                "throughput_per_s": float(np.median(thr[k])), "batch": batch} for k in models}


def measure(model: OnnxModel, slices: dict[str, tuple[np.ndarray, np.ndarray]], *, robustness_images: int) -> Measured:
    """Accuracy per slice and class, per-image outcomes, robustness, calibration, size, complexity."""
    out: dict[str, Any] = {"accuracy": {}, "per_class": {}, "slices": {}}
    m = Measured(out)
    for name, (x, y) in slices.items():
        probs = model.predict(x)
        rep = accuracy_report(probs, y)
        m.correct[name] = probs.argmax(1) == y
        m.probs[name] = probs
        out["accuracy"][name] = rep["accuracy"]
        out["per_class"][name] = rep["per_class"]
        out["slices"][name] = {"n": rep["n"]}
        if name == "mnist-test":
            out["calibration"] = {"ece": expected_calibration_error(probs, y),
                                  "mean_confidence": float(probs.max(1).mean())}
    newest = list(slices)[-1]
    out["accuracy"]["newest"] = out["accuracy"][newest]
    out["newest_slice"] = newest
    x, y = slices["mnist-test"]
    n = min(robustness_images, len(x))
    out["robustness"] = {k: float((model.predict(v).argmax(1) == y[:n]).mean())
                         for k, v in robustness_shifts(x[:n]).items()}
    out["robustness"]["min"] = min(out["robustness"].values())
    macs = macs_per_image(model.path)
    out["size"] = {"params": param_count(model.path), "onnx_bytes": model.path.stat().st_size}
    out["complexity"] = {"macs": macs, "flops": 2 * macs}
    return m


def fit_estimators(m: Measured, slices: dict[str, tuple[np.ndarray, np.ndarray]], weights: dict[str, float]) -> dict:
    """The label-free accuracy estimators (monitoring/estimate.py) fitted on this model's outputs
    on the slices, each image weighted by its slice's share of the objective: the monitor applies
    them to unlabelled windows once this model serves."""
    names = [s for s in slices if s in m.probs and len(slices[s][1])]
    probs = np.concatenate([m.probs[s] for s in names])
    y = np.concatenate([slices[s][1] for s in names])
    w = np.concatenate([np.full(len(slices[s][1]), max(weights.get(s, 0.0), 1e-3) / len(slices[s][1]))
                        for s in names])
    return {k: fit(probs, y, k, weights=w).to_json() for k in METHODS}

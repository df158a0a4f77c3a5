"""The drift report a person reads: one self-contained HTML page (no script, nothing fetched),
written in milliseconds. ``drift.report_engine: mnistcl`` (the default; configs/monitoring.yaml).

It shows what the decision was made on and what the traffic looks like:
- the verdict: how many features drifted against the share that makes a window drift, the test,
  its threshold, the reference it was compared with (the nearest one) and both window sizes;
- digits from the window, as they were served (an evenly spaced sample of up to 64);
- every feature, most drifted first: the statistic (the same number Evidently's Report computes,
  tests/monitoring/test_drift.py), drifted or not, mean and standard deviation in both windows,
  and a histogram of the reference against the window on common bins.

Evidently's own DataDriftPreset report stays one setting away (``report_engine: evidently``):
importing Evidently and running and rendering its report takes 5-6 s, which was most of a
drifted window's check (bench/results/drift.json, ``monitor_check``).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from mnistcl.images import encode_png, to_uint8
from monitoring.drift import P_VALUE_TESTS, finite, severity

SAMPLE = 64  # digits shown from each window
BINS = 24
_W, _H = 220, 44  # one histogram, pixels


def write_report(path: Path, reference: pd.DataFrame, current: pd.DataFrame, result, *, reference_name: str = "",
                 images: np.ndarray | None = None) -> Path:
    """``result``: the monitoring.drift.DriftResult of ``current`` against ``reference``."""
    verdict = "drifted" if result.drifted else "did not drift"
    head = (f"<h1>Drift check: the window {verdict}</h1>"
            f"<p><b>{len(result.drifted_columns)} of {len(result.scores)}</b> features drifted "
            f"(share {result.share:.2f}; the window drifts at {result.drift_share:g}). Test: "
            f"{html.escape(result.method)}, a feature drifts at {_rule(result)}. Reference: "
            f"{html.escape(reference_name or 'the training data')}, {result.n_reference:,} images; "
            f"window: {result.n_current:,} images.</p>")
    digits = (f"<figure><img alt='digits from the window' src='data:image/png;base64,{_grid(images)}'>"
              f"<figcaption>{min(SAMPLE, len(images))} digits from the window, evenly spaced</figcaption></figure>"
              if images is not None and len(images) else "")
    rows = []
    for col in sorted(result.scores, key=lambda c: -severity(result.method, result.scores[c])):
        ref, cur = finite(reference[col]), finite(current[col])
        drifted = col in result.drifted_columns
        rows.append(f"<tr class='{'d' if drifted else ''}'><td>{html.escape(col)}</td>"
                    f"<td>{result.scores[col]:.4g}</td><td>{'drifted' if drifted else '-'}</td>"
                    f"<td>{_stats(ref)}</td><td>{_stats(cur)}</td><td>{_histograms(ref, cur)}</td></tr>")
    table = ("<table><tr><th>feature</th><th>statistic</th><th></th><th>reference mean (sd)</th>"
             "<th>window mean (sd)</th><th>distribution: <span class='r'>reference</span>, "
             "<span class='c'>window</span></th></tr>" + "".join(rows) + "</table>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Drift check</title><style>{_CSS}"
                    f"</style></head><body>{head}<div class='digits'>{digits}</div>{table}</body></html>")
    return path


_CSS = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{padding:2px 8px;"
        "border-bottom:1px solid #ddd;text-align:left}tr.d td{background:#fff1e6}.r{color:#667}.c{color:#e8590c}"
        ".digits{display:flex;gap:2em}img{image-rendering:pixelated;width:448px}")


def _rule(result) -> str:
    if result.method in P_VALUE_TESTS:
        return f"a p-value of {result.threshold:g} or less"
    return f"{result.threshold:g} or more"


def _stats(x: np.ndarray) -> str:
    return f"{x.mean():.3g} ({x.std():.2g})" if len(x) else "-"


def _histograms(ref: np.ndarray, cur: np.ndarray) -> str:
    both = np.concatenate([ref, cur])
    if not len(both):
        return ""
    lo, hi = np.percentile(both, [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    shapes = []
    for x, cls in ((ref, "r"), (cur, "c")):
        if not len(x):
            continue
        h = np.histogram(np.clip(x, lo, hi), edges)[0] / len(x)
        shapes.append((h, cls))
    top = max(h.max() for h, _ in shapes) or 1.0
    out = []
    for h, cls in shapes:
        pts = " ".join(f"{i * _W / BINS:.1f},{_H - v / top * (_H - 2):.1f} {(i + 1) * _W / BINS:.1f},"
                       f"{_H - v / top * (_H - 2):.1f}" for i, v in enumerate(h))
        style = "fill:#c5c9d3;stroke:none" if cls == "r" else "fill:none;stroke:#e8590c;stroke-width:1.5"
        out.append(f"<polyline points='0,{_H} {pts} {_W},{_H}' style='{style}'/>")
    return f"<svg width='{_W}' height='{_H}' viewBox='0 0 {_W} {_H}'>{''.join(out)}</svg>"


def _grid(images: np.ndarray, cols: int = 16) -> str:
    """Up to SAMPLE digits, evenly spaced through the window, as one PNG (base64)."""
    x = np.asarray(images).reshape(-1, 28, 28)
    x = x[np.linspace(0, len(x) - 1, min(SAMPLE, len(x))).astype(int)]
    if x.dtype != np.uint8:
        x = to_uint8(x)
    rows = -(-len(x) // cols)
    grid = np.zeros((rows * 28, cols * 28), np.uint8)
    for i, img in enumerate(x):
        r, c = divmod(i, cols)
        grid[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28] = img
    return base64.b64encode(encode_png(grid)).decode()

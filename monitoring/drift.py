"""Data drift on compact image features, through Evidently. The only module that imports Evidently.

``check_drift(reference, current)`` compares two feature frames (monitoring.features) column by
column with Evidently's DataDriftPreset and returns a typed DriftResult; the HTML report is saved
when a path is given. The dataset counts as drifted when at least ``drift_share`` of the columns
drift. The default test is the normed Wasserstein distance (distance / reference std) with a
threshold of 0.2: on windows of hundreds of images, p-value tests (K-S) flag differences far too
small to matter (bench/drift.py measures false alarms on clean MNIST windows).
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DriftConfig:
    method: str = "wasserstein"
    threshold: float = 0.2
    drift_share: float = 0.3

    @classmethod
    def from_dict(cls, d: dict | None) -> DriftConfig:
        d = dict(d or {})
        unknown = set(d) - {"method", "threshold", "drift_share"}
        if unknown:
            raise ValueError(f"drift: unknown settings {sorted(unknown)} (known: method, threshold, drift_share)")
        return cls(**d)


@dataclass
class DriftResult:
    drifted: bool
    share: float                      # share of columns that drifted
    drifted_columns: list[str]
    scores: dict[str, float]          # per column, the test's statistic (higher = more drift)
    method: str
    threshold: float
    drift_share: float
    n_reference: int
    n_current: int
    seconds: float
    report_html: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        """One number for dashboards and Prometheus: the share of drifted columns."""
        return self.share


_COLUMN = re.compile(r"ValueDrift\(column=([^,)]+)")


def check_drift(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig | None = None,
                report_html: Path | None = None) -> DriftResult:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    cfg = config or DriftConfig()
    if len(current) == 0 or len(reference) == 0:
        raise ValueError("drift check needs rows in both the reference and the current window")
    if list(reference.columns) != list(current.columns):
        raise ValueError("reference and current windows have different feature columns")
    t0 = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # A feature that is constant in the reference (e.g. a blank border) makes the normed
        # distance divide by zero; Evidently handles it, NumPy would still warn.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataDriftPreset(method=cfg.method, threshold=cfg.threshold,
                                           drift_share=cfg.drift_share)]).run(current, reference)
    scores: dict[str, float] = {}
    for m in snapshot.dict()["metrics"]:
        hit = _COLUMN.match(m.get("metric_name", ""))
        if hit:
            scores[hit.group(1)] = float(m["value"])
    drifted = sorted(c for c, v in scores.items() if _is_drift(v, cfg))
    share = len(drifted) / max(len(scores), 1)
    path = None
    if report_html is not None:
        report_html.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(report_html))
        path = str(report_html)
    return DriftResult(drifted=share >= cfg.drift_share and bool(drifted), share=share, drifted_columns=drifted,
                       scores=scores, method=cfg.method, threshold=cfg.threshold, drift_share=cfg.drift_share,
                       n_reference=len(reference), n_current=len(current), seconds=time.perf_counter() - t0,
                       report_html=path)


def _is_drift(value: float, cfg: DriftConfig) -> bool:
    # Distances (wasserstein, jensenshannon, psi, kl_div, hellinger, ...) drift above the
    # threshold; p-value tests (ks, chisquare, t_test, ...) drift below it.
    p_value_tests = {"ks", "chisquare", "z", "t_test", "anderson", "fisher_exact", "cramer_von_mises",
                     "g_test", "mannw", "epps_singleton", "empirical_mmd"}
    return value < cfg.threshold if cfg.method in p_value_tests else value >= cfg.threshold

"""Data drift on compact image features, through Evidently. The only module that imports Evidently.

``check_drift(reference, current)`` compares two feature frames (monitoring.features) column by
column and returns a typed DriftResult; the dataset counts as drifted when at least ``drift_share``
of the columns drift. ``drift_report`` writes Evidently's DataDriftPreset report as HTML.

The decision is Evidently's own statistic computed straight on the columns for the tests it is
asked most (normed Wasserstein and K-S: the same SciPy call on the same cleaned column, so the
same number; tests/monitoring/test_drift.py compares them with Evidently's), 0.03 s for 5,000
images against Evidently's 1.4 s (bench/results/drift.json). Any other method goes through
Evidently's Report.

The default test is the normed Wasserstein distance (distance / reference std) with a threshold of 0.2: on windows of hundreds of images, p-value tests (K-S) flag differences far too
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
from scipy import stats


@dataclass(frozen=True)
class DriftConfig:
    method: str = "wasserstein"
    threshold: float = 0.2
    drift_share: float = 0.3
    report: str = "drifted"  # the HTML report: for a drifted window, always, or never
    report_engine: str = "mnistcl"  # mnistcl (monitoring/drift_html.py) or evidently

    @classmethod
    def from_dict(cls, d: dict | None) -> DriftConfig:
        d = dict(d or {})
        unknown = set(d) - {"method", "threshold", "drift_share", "report", "report_engine"}
        if unknown:
            raise ValueError(f"drift: unknown settings {sorted(unknown)} (known: method, threshold, drift_share, "
                             "report, report_engine)")
        if d.get("report", "drifted") not in REPORTS:
            raise ValueError(f"drift.report: {d['report']!r} is not one of {', '.join(REPORTS)}")
        if d.get("report_engine", "mnistcl") not in REPORT_ENGINES:
            raise ValueError(f"drift.report_engine: {d['report_engine']!r} is not one of {', '.join(REPORT_ENGINES)}")
        return cls(**d)


REPORTS = ("drifted", "always", "never")
#: Who writes the HTML report: this project's page (monitoring/drift_html.py: milliseconds, with
#: digits from the window) or Evidently's DataDriftPreset report (5-6 s with its import).
REPORT_ENGINES = ("mnistcl", "evidently")
#: Evidently's tests whose statistic is a p-value: a column drifts at or below the threshold.
P_VALUE_TESTS = frozenset({"ks", "chisquare", "z", "t_test", "anderson", "fisher_exact", "cramer_von_mises",
                           "g_test", "mannw", "epps_singleton", "empirical_mmd"})


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


def finite(column: pd.Series) -> np.ndarray:
    # as Evidently cleans a column before its test: infinities are missing, missing values dropped
    v = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return v[np.isfinite(v)]


def _wasserstein_norm(ref: np.ndarray, cur: np.ndarray) -> float:
    # evidently.legacy.calculations.stattests.wasserstein_distance_norm
    return float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))


def _ks(ref: np.ndarray, cur: np.ndarray) -> float:
    # evidently.legacy.calculations.stattests.ks_stattest: the two-sided p-value
    return float(stats.ks_2samp(ref, cur)[1])


DIRECT = {"wasserstein": _wasserstein_norm, "ks": _ks}


def _check_windows(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    if len(current) == 0 or len(reference) == 0:
        raise ValueError("drift check needs rows in both the reference and the current window")
    if list(reference.columns) != list(current.columns):
        raise ValueError("reference and current windows have different feature columns")


def check_drift(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig | None = None,
                report_html: Path | None = None) -> DriftResult:
    """The decision; with ``report_html``, also Evidently's report written there (whatever
    ``config.report`` says: the caller asked for it)."""
    cfg = config or DriftConfig()
    _check_windows(reference, current)
    t0 = time.perf_counter()
    test, snapshot = DIRECT.get(cfg.method), None
    if test is None:
        snapshot = _run_report(reference, current, cfg)
        scores = _evidently_scores(snapshot)
    else:
        scores = {}
        for c in reference.columns:
            ref, cur = finite(reference[c]), finite(current[c])
            if not len(ref) or not len(cur):
                raise ValueError(f"drift check: feature {c!r} has no finite value in the "
                                 f"{'reference' if not len(ref) else 'current'} window")
            scores[str(c)] = test(ref, cur)
    drifted = sorted(c for c, v in scores.items() if _is_drift(v, cfg))
    share = len(drifted) / max(len(scores), 1)
    seconds = time.perf_counter() - t0
    path = None
    if report_html is not None:  # the Report already run for the decision, if it was
        path = str(_save(snapshot or _run_report(reference, current, cfg), report_html))
    return DriftResult(drifted=share >= cfg.drift_share and bool(drifted), share=share, drifted_columns=drifted,
                       scores=scores, method=cfg.method, threshold=cfg.threshold, drift_share=cfg.drift_share,
                       n_reference=len(reference), n_current=len(current), seconds=seconds, report_html=path)


def _run_report(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig):
    from evidently import Report
    from evidently.presets import DataDriftPreset

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # A feature that is constant in the reference (e.g. a blank border) makes the normed
        # distance divide by zero; Evidently handles it, NumPy would still warn.
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report([DataDriftPreset(method=cfg.method, threshold=cfg.threshold,
                                       drift_share=cfg.drift_share)]).run(current, reference)


def _evidently_scores(snapshot) -> dict[str, float]:
    scores: dict[str, float] = {}
    for m in snapshot.dict()["metrics"]:
        hit = _COLUMN.match(m.get("metric_name", ""))
        if hit:
            scores[hit.group(1)] = float(m["value"])
    return scores


def evidently_scores(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig | None = None
                     ) -> dict[str, float]:
    """Each column's statistic as Evidently's own Report computes it (the tests compare)."""
    _check_windows(reference, current)
    return _evidently_scores(_run_report(reference, current, config or DriftConfig()))


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig | None,
                 path: Path) -> Path:
    """Evidently's DataDriftPreset report on the two windows, as HTML at ``path``."""
    _check_windows(reference, current)
    return _save(_run_report(reference, current, config or DriftConfig()), path)


def _save(snapshot, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path


def severity(method: str, score: float) -> float:
    """A column's score as "more drift is larger", whichever way the test reads (a p-value drifts
    low); a missing score (NaN) ranks last. For sorting reports."""
    if score != score:
        return float("-inf")
    return -score if method in P_VALUE_TESTS else score


def _is_drift(value: float, cfg: DriftConfig) -> bool:
    # Distances (wasserstein, jensenshannon, psi, kl_div, hellinger, ...) drift above the
    # threshold; p-value tests (ks, chisquare, t_test, ...) drift at or below it, as in Evidently.
    return value <= cfg.threshold if cfg.method in P_VALUE_TESTS else value >= cfg.threshold

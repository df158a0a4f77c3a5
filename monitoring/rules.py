"""Monitoring configuration (configs/monitoring.yaml) and the rules evaluated on a window.

Input rules look at per-image features (monitoring.features) or at rejected requests; each has
a sensitivity, the largest share of offending inputs tolerated. Prediction rules look at the
model's confidence and at accuracy against feedback labels. Everything is data: a user adds an
input rule in YAML, and a mistake in it is reported with the rule's name before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mnistcl.settings import read_yaml
from monitoring.drift import DriftConfig
from monitoring.estimate import METHODS as ESTIMATE_METHODS
from monitoring.features import STATS

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "monitoring.yaml"
ACTIONS = ("email", "retrain")
STRATEGIES = ("finetune-replay", "full", "automl")


class MonitoringConfigError(ValueError):
    """The monitoring configuration is invalid; the message names the rule and the field."""


@dataclass(frozen=True)
class InputRule:
    name: str
    description: str
    max_share: float
    action: str = "email"
    feature: str | None = None
    below: float | None = None
    above: float | None = None
    outside: tuple[float, float] | None = None
    source: str = "features"  # or "rejected"

    def offending(self, feats: pd.DataFrame) -> np.ndarray:
        v = feats[self.feature].to_numpy()
        if self.below is not None:
            return v < self.below
        if self.above is not None:
            return v > self.above
        lo, hi = self.outside
        return (v < lo) | (v > hi)


@dataclass(frozen=True)
class TriggerConfig:
    breaches: int = 2
    of_last: int = 3
    cooldown_hours: float = 6.0
    strategy: str = "finetune-replay"
    overwhelming_drift: float | None = None  # a window with this share of features drifted triggers alone


@dataclass(frozen=True)
class MonitoringConfig:
    window_images: int = 500
    min_images: int = 100
    input_rules: tuple[InputRule, ...] = ()
    confidence_below: float = 0.5
    low_confidence_max_share: float = 0.10
    min_accuracy: float = 0.95
    min_labels: int = 50
    # The label-free accuracy estimate (monitoring/estimate.py); None: no rule on it.
    min_estimated_accuracy: float | None = 0.92
    estimate_method: str = "atc"
    estimate_action: str = "retrain"
    recalibrate_images: int = 300  # refit the estimator on this many recent labelled images the champion served
    recalibrate_min: int = 150     # ... once it has served at least this many (0 images: never)
    drift: DriftConfig = field(default_factory=DriftConfig)
    reference_images: int = 5000
    reference_batches: int = 3
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    source: str = ""


def _num(d: dict, key: str, where: str, *, lo: float | None = None, hi: float | None = None) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise MonitoringConfigError(f"{where}: {key} must be a number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise MonitoringConfigError(f"{where}: {key} = {v} is outside [{lo}, {hi}]")
    return float(v)


def _opt(d: dict, key: str, default: float, where: str, *, lo: float | None = None, hi: float | None = None) -> float:
    """``d[key]`` checked like :func:`_num`, or ``default`` when the key is absent."""
    return _num({key: d.get(key, default)}, key, where, lo=lo, hi=hi)


def parse_input_rule(d: dict) -> InputRule:
    if not isinstance(d, dict) or not d.get("name"):
        raise MonitoringConfigError(f"input rule {d!r}: every rule needs a name")
    where = f"input rule {d['name']!r}"
    known = {"name", "description", "feature", "below", "above", "outside", "max_share", "action", "source"}
    unknown = set(d) - known
    if unknown:
        raise MonitoringConfigError(f"{where}: unknown fields {sorted(unknown)} (known: {', '.join(sorted(known))})")
    max_share = _num(d, "max_share", where, lo=0, hi=1)
    action = d.get("action", "email")
    if action not in ACTIONS:
        raise MonitoringConfigError(f"{where}: action must be one of {', '.join(ACTIONS)}, not {action!r}")
    common = {"name": str(d["name"]), "description": str(d.get("description", d["name"])), "max_share": max_share,
              "action": action}
    if d.get("source", "features") == "rejected":
        return InputRule(**common, source="rejected")
    if d.get("source", "features") != "features":
        raise MonitoringConfigError(f"{where}: source must be features or rejected, not {d['source']!r}")
    if d.get("feature") not in STATS:
        raise MonitoringConfigError(f"{where}: feature must be one of {', '.join(STATS)}, not {d.get('feature')!r}")
    bounds = [k for k in ("below", "above", "outside") if k in d]
    if len(bounds) != 1:
        raise MonitoringConfigError(f"{where}: give exactly one of below, above, outside (got {bounds or 'none'})")
    if bounds[0] == "outside":
        o = d["outside"]
        if not (isinstance(o, list) and len(o) == 2 and all(isinstance(v, int | float) for v in o) and o[0] < o[1]):
            raise MonitoringConfigError(f"{where}: outside must be [low, high] with low < high, not {o!r}")
        return InputRule(**common, feature=d["feature"], outside=(float(o[0]), float(o[1])))
    return InputRule(**common, feature=d["feature"], **{bounds[0]: _num(d, bounds[0], where)})


def load_config(path: Path | str | None = None) -> MonitoringConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    raw = read_yaml(path, "monitoring config", MonitoringConfigError)
    known = {"window", "input_rules", "prediction_rules", "drift", "reference_images", "reference_batches", "trigger"}
    if not isinstance(raw, dict) or set(raw) - known:
        raise MonitoringConfigError(f"monitoring config {path}: unknown sections "
                                    f"{sorted(set(raw) - known) if isinstance(raw, dict) else raw!r}")
    win = raw.get("window") or {}
    rules = [parse_input_rule(r) for r in raw.get("input_rules") or []]
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise MonitoringConfigError(f"monitoring config {path}: duplicate input rule names {names}")
    pred = raw.get("prediction_rules") or {}
    low = pred.get("low_confidence") or {}
    acc = pred.get("feedback_accuracy") or {}
    est = pred.get("estimated_accuracy") or {}
    unknown = set(pred) - {"low_confidence", "feedback_accuracy", "estimated_accuracy"}
    if unknown:
        raise MonitoringConfigError(f"prediction_rules: unknown rules {sorted(unknown)} "
                                    "(known: low_confidence, feedback_accuracy, estimated_accuracy)")
    if est.get("method", "atc") not in ESTIMATE_METHODS:
        raise MonitoringConfigError(f"estimated_accuracy: method must be one of {', '.join(ESTIMATE_METHODS)}, "
                                    f"not {est.get('method')!r}")
    if est.get("action", "retrain") not in ACTIONS:
        raise MonitoringConfigError(f"estimated_accuracy: action must be one of {', '.join(ACTIONS)}, "
                                    f"not {est.get('action')!r}")
    trig = raw.get("trigger") or {}
    trigger = TriggerConfig(
        breaches=int(_opt(trig, "breaches", 2, "trigger", lo=1)),
        of_last=int(_opt(trig, "of_last", 3, "trigger", lo=1)),
        cooldown_hours=_opt(trig, "cooldown_hours", 6, "trigger", lo=0),
        strategy=str(trig.get("strategy", "finetune-replay")),
        overwhelming_drift=(None if trig.get("overwhelming_drift") is None
                            else _opt(trig, "overwhelming_drift", 1.0, "trigger", lo=0, hi=1)))
    if trigger.breaches > trigger.of_last:
        raise MonitoringConfigError(f"trigger: breaches ({trigger.breaches}) cannot exceed of_last ({trigger.of_last})")
    if trigger.strategy not in STRATEGIES:
        raise MonitoringConfigError(f"trigger: strategy must be one of {', '.join(STRATEGIES)}, not {trigger.strategy!r}")
    try:
        drift = DriftConfig.from_dict(raw.get("drift"))
    except (TypeError, ValueError) as exc:
        raise MonitoringConfigError(str(exc)) from None
    if trigger.overwhelming_drift is not None and trigger.overwhelming_drift <= drift.drift_share:
        raise MonitoringConfigError(f"trigger: overwhelming_drift ({trigger.overwhelming_drift:g}) must be above "
                                    f"drift.drift_share ({drift.drift_share:g}): a window that drifts that much "
                                    "has drifted; below it, any breach would retrain at once")
    return MonitoringConfig(
        window_images=int(_opt(win, "images", 500, "window", lo=10)),
        min_images=int(_opt(win, "min_images", 100, "window", lo=1)),
        input_rules=tuple(rules),
        confidence_below=_opt(low, "confidence_below", 0.5, "low_confidence", lo=0, hi=1),
        low_confidence_max_share=_opt(low, "max_share", 0.1, "low_confidence", lo=0, hi=1),
        min_accuracy=_opt(acc, "min_accuracy", 0.95, "feedback_accuracy", lo=0, hi=1),
        min_labels=int(_opt(acc, "min_labels", 50, "feedback_accuracy", lo=1)),
        min_estimated_accuracy=(None if est.get("min_accuracy", 0.92) is None
                                else _opt(est, "min_accuracy", 0.92, "estimated_accuracy", lo=0, hi=1)),
        estimate_method=str(est.get("method", "atc")), estimate_action=str(est.get("action", "retrain")),
        recalibrate_images=int(_opt(est, "recalibrate_images", 300, "estimated_accuracy", lo=0)),
        recalibrate_min=int(_opt(est, "recalibrate_min", 150, "estimated_accuracy", lo=10)),
        drift=drift, reference_images=int(_opt(raw, "reference_images", 5000, "monitoring config", lo=100)),
        reference_batches=int(_opt(raw, "reference_batches", 3, "monitoring config", lo=0)),
        trigger=trigger, source=str(path))


@dataclass
class RuleResult:
    name: str
    kind: str            # input | prediction
    share: float         # share of the window that offends (accuracy for feedback_accuracy)
    limit: float
    breached: bool
    action: str
    description: str
    n: int              # how many inputs (or labels) the share is over


def evaluate_input_rules(cfg: MonitoringConfig, feats: pd.DataFrame, n_rejected: int) -> list[RuleResult]:
    out = []
    n = len(feats)
    for r in cfg.input_rules:
        if r.source == "rejected":
            total = n_rejected + n
            share = n_rejected / total if total else 0.0
            out.append(RuleResult(r.name, "input", share, r.max_share, share > r.max_share, r.action, r.description, total))
        else:
            share = float(r.offending(feats).mean()) if n else 0.0
            out.append(RuleResult(r.name, "input", share, r.max_share, share > r.max_share, r.action, r.description, n))
    return out


def evaluate_prediction_rules(cfg: MonitoringConfig, confidence: np.ndarray, digits: np.ndarray,
                              feedback: np.ndarray, estimated: float | None = None) -> list[RuleResult]:
    """``feedback`` holds the true label or -1 where none arrived yet; ``estimated`` is the
    label-free accuracy estimate of the window (None when the model has no fitted estimator)."""
    low = float((confidence < cfg.confidence_below).mean()) if len(confidence) else 0.0
    out = [RuleResult("low_confidence", "prediction", low, cfg.low_confidence_max_share,
                      low > cfg.low_confidence_max_share, "retrain",
                      f"predictions with confidence below {cfg.confidence_below}", len(confidence))]
    labelled = feedback >= 0
    if labelled.sum() >= cfg.min_labels:
        acc = float((digits[labelled] == feedback[labelled]).mean())
        out.append(RuleResult("feedback_accuracy", "prediction", acc, cfg.min_accuracy, acc < cfg.min_accuracy,
                              "retrain", "accuracy against feedback labels", int(labelled.sum())))
    if estimated is not None and cfg.min_estimated_accuracy is not None:
        out.append(RuleResult("estimated_accuracy", "prediction", estimated, cfg.min_estimated_accuracy,
                              estimated < cfg.min_estimated_accuracy, cfg.estimate_action,
                              f"label-free accuracy estimate ({cfg.estimate_method})", len(confidence)))
    return out

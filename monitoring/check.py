"""One monitoring check: the next window of logged production inputs against the rules.

  window   the next ``window.images`` images logged since the previous check (never half a request)
  input    input rules on per-image features and rejected requests  -> email on a breach
  predict  low-confidence share, accuracy against feedback labels     -> a breach
  drift    Evidently on 20 features against the champion's training data -> a breach, HTML report
  decide   retrain when N of the last M windows breached, not while a retraining runs, not within
           the cooldown -> events ``mnistcl.drift.detected`` / ``mnistcl.confidence.low`` /
           ``mnistcl.accuracy.low`` (which the Prefect ``retrain`` deployment is triggered by)
           and an email

Every check writes check.json and check.md (and drift.html) to <home>/monitoring/checks/<time>/,
and the latest numbers to <home>/monitoring/metrics.prom (Prometheus textfile format).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mnistcl.events import announce
from monitoring import alerts
from monitoring.drift import DriftResult, check_drift
from monitoring.features import features
from monitoring.rules import (
    MonitoringConfig,
    RuleResult,
    evaluate_input_rules,
    evaluate_prediction_rules,
    load_config,
)
from monitoring.state import Decision, MonitorState, RetrainLock, decide

DRIFT_DETECTED = "mnistcl.drift.detected"
CONFIDENCE_LOW = "mnistcl.confidence.low"
ACCURACY_LOW = "mnistcl.accuracy.low"
REFERENCE_SEED = 7


@dataclass
class CheckResult:
    status: str                       # checked | waiting
    n_images: int
    window_start: float | None = None
    window_end: float | None = None
    input_rules: list[RuleResult] = field(default_factory=list)
    prediction_rules: list[RuleResult] = field(default_factory=list)
    drift: DriftResult | None = None
    breach: bool = False
    reasons: list[str] = field(default_factory=list)
    decision: Decision | None = None
    events: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    folder: str | None = None
    reference_dataset: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        if self.drift is not None:
            d["drift"] = {**asdict(self.drift), "score": self.drift.score}
        return d


def reference_features(settings, cfg: MonitoringConfig) -> tuple[pd.DataFrame, str]:
    """Features of a fixed sample of the champion's training data (cached per dataset version)."""
    from mnistcl.promote import stores
    from mnistcl.registry import RegistryError

    ds_store, reg = stores(settings)
    try:
        dataset = reg.get(reg.resolve("champion")).dataset
    except RegistryError:
        dataset = ds_store.resolve(None)
    cache = settings.monitoring_dir / "reference" / f"{dataset}-{cfg.reference_images}.csv"
    if cache.exists():
        return pd.read_csv(cache), dataset
    data = ds_store.load(dataset)
    rng = np.random.default_rng(REFERENCE_SEED)
    idx = rng.choice(len(data.train_x), size=min(cfg.reference_images, len(data.train_x)), replace=False)
    ref = features(data.train_x[np.sort(idx)])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    ref.to_csv(tmp, index=False)
    tmp.replace(cache)
    return ref, dataset


def evaluate_window(cfg: MonitoringConfig, images: np.ndarray, confidence: np.ndarray, digits: np.ndarray,
                    feedback: np.ndarray, n_rejected: int, reference: pd.DataFrame,
                    report_html: Path | None = None) -> tuple[list[RuleResult], list[RuleResult], DriftResult, list[str]]:
    """The rules and the drift check on one window (no state, no side effects beyond the report)."""
    feats = features(images)
    inp = evaluate_input_rules(cfg, feats, n_rejected)
    pred = evaluate_prediction_rules(cfg, confidence, digits, feedback)
    drift = check_drift(reference, feats, cfg.drift, report_html=report_html)
    reasons = []
    if drift.drifted:
        reasons.append(f"drift: {len(drift.drifted_columns)} of {len(drift.scores)} features drifted "
                       f"({', '.join(drift.drifted_columns[:6])})")
    for r in pred + [r for r in inp if r.action == "retrain"]:
        if r.breached:
            reasons.append(f"{r.name}: {r.share:.3f} against a limit of {r.limit}")
    return inp, pred, drift, reasons


def run_check(settings, cfg: MonitoringConfig | None = None, *, notify: bool = True) -> CheckResult:
    from mnistcl.predlog import PredictionLog

    cfg = cfg or load_config(settings.monitoring_config or None)
    state = MonitorState(settings.monitoring_dir)
    cursor = state.read()["cursor"]
    plog = PredictionLog(settings.predictions_db_path)
    rows = plog.window(after=cursor, limit=cfg.window_images)
    if len(rows) < cfg.min_images:
        return CheckResult(status="waiting", n_images=len(rows),
                           reasons=[f"{len(rows)} new images since the last check; waiting for {cfg.min_images}"])
    start, end = rows[0][0], rows[-1][0]
    images = np.stack([np.frombuffer(bytes(r[4]), np.uint8).reshape(28, 28) for r in rows])
    digits = np.array([r[1] for r in rows])
    conf = np.array([r[2] for r in rows], dtype=np.float64)
    fb = np.array([r[3] for r in rows])
    n_rejected = plog.rejected_between(cursor, end)
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y%m%dT%H%M%S") + f"-{int(end * 1000) % 1000:03d}"
    folder = settings.monitoring_dir / "checks" / stamp
    reference, dataset = reference_features(settings, cfg)
    inp, pred, drift, reasons = evaluate_window(cfg, images, conf, digits, fb, n_rejected, reference,
                                                report_html=folder / "drift.html")
    res = CheckResult(status="checked", n_images=len(rows), window_start=start, window_end=end, input_rules=inp,
                      prediction_rules=pred, drift=drift, breach=bool(reasons), reasons=reasons,
                      folder=str(folder), reference_dataset=dataset)
    lock = RetrainLock(settings.monitoring_dir)
    with state.update() as st:
        st["cursor"] = end
        st["windows"].append({"end": end, "breach": res.breach, "reasons": reasons, "drift_share": drift.share})
        now = time.time()
        last = max([t for t in (st.get("last_retrain_started"), st.get("last_trigger")) if t] or [0]) or None
        res.decision = decide([w["breach"] for w in st["windows"]], cfg.trigger, now=now,
                              last_retrain_started=last, retrain_running=lock.running())
        if res.decision.retrain:
            st["last_trigger"] = now
    if notify:
        _notify(settings, cfg, res)
    _write(res, folder, settings.monitoring_dir / "metrics.prom")
    return res


def _notify(settings, cfg: MonitoringConfig, res: CheckResult) -> None:
    when = datetime.fromtimestamp(res.window_end, UTC).isoformat(timespec="seconds")
    input_breaches = [r for r in res.input_rules if r.breached]
    if input_breaches:
        lines = [f"- {r.name} ({r.description}): {r.share:.1%} of {r.n} inputs, sensitivity {r.limit:.1%}"
                 for r in input_breaches]
        res.alerts.append(alerts.send(
            f"input data rules breached: {', '.join(r.name for r in input_breaches)}",
            f"Window of {res.n_images} production images ending {when}.\n\n" + "\n".join(lines)
            + f"\n\nCheck: {res.folder}\n", settings))
    if res.decision and res.decision.retrain:
        payload = {"reasons": res.reasons, "window_end": res.window_end, "n_images": res.n_images,
                   "drift_share": res.drift.share if res.drift else None, "check": res.folder,
                   "strategy": cfg.trigger.strategy}
        names = []
        if res.drift and res.drift.drifted:
            names.append(DRIFT_DETECTED)
        if any(r.breached and r.name == "low_confidence" for r in res.prediction_rules):
            names.append(CONFIDENCE_LOW)
        if any(r.breached and r.name == "feedback_accuracy" for r in res.prediction_rules):
            names.append(ACCURACY_LOW)
        # One retraining is enough: announce the first cause; the others ride in the payload.
        name = (names or [DRIFT_DETECTED])[0]
        res.events.append(announce(name, "mnistcl.monitor", {**payload, "causes": names},
                                   events_log=settings.events_log, prefect_api=settings.prefect_api))
        res.alerts.append(alerts.send(
            f"retraining triggered: {name}",
            f"{res.decision.reason}.\n\n" + "\n".join(f"- {r}" for r in res.reasons)
            + f"\n\nEvent {name} sent ({res.events[-1]['delivered']}); strategy {cfg.trigger.strategy}.\n"
            f"Drift report: {res.drift.report_html if res.drift else '-'}\n", settings,
            attachments=[Path(res.drift.report_html)] if res.drift and res.drift.report_html else None))


def _write(res: CheckResult, folder: Path, prom: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "check.json").write_text(json.dumps(res.to_json(), indent=1, default=float))
    (folder / "check.md").write_text(to_markdown(res))
    low = next((r.share for r in res.prediction_rules if r.name == "low_confidence"), 0.0)
    lines = ["# HELP mnistcl_drift_share Share of features that drifted in the last monitoring window.",
             "# TYPE mnistcl_drift_share gauge", f"mnistcl_drift_share {res.drift.share if res.drift else 0.0}",
             "# HELP mnistcl_window_low_confidence_share Share of low-confidence predictions in the last window.",
             "# TYPE mnistcl_window_low_confidence_share gauge", f"mnistcl_window_low_confidence_share {low}",
             "# HELP mnistcl_window_breach 1 when the last monitoring window breached a rule.",
             "# TYPE mnistcl_window_breach gauge", f"mnistcl_window_breach {int(res.breach)}",
             "# HELP mnistcl_monitor_last_check_timestamp_seconds When the last window ended.",
             "# TYPE mnistcl_monitor_last_check_timestamp_seconds gauge",
             f"mnistcl_monitor_last_check_timestamp_seconds {res.window_end}"]
    for r in res.input_rules:
        lines.append(f'mnistcl_input_rule_share{{rule="{r.name}"}} {r.share}')
    tmp = prom.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(prom)


def to_markdown(res: CheckResult) -> str:
    when = datetime.fromtimestamp(res.window_end or 0, UTC).isoformat(timespec="seconds")
    out = [f"# Monitoring check: {res.n_images} images ending {when}", "",
           f"**{'BREACH' if res.breach else 'ok'}**" + (f": {'; '.join(res.reasons)}" if res.reasons else ""), ""]
    if res.decision:
        out += [f"Decision: {'retrain' if res.decision.retrain else 'no retraining'} ({res.decision.reason}).", ""]
    out += ["| rule | kind | share | limit | breached |", "|---|---|---|---|---|"]
    for r in res.input_rules + res.prediction_rules:
        out.append(f"| {r.name} | {r.kind} | {r.share:.4f} | {r.limit} | {'yes' if r.breached else 'no'} |")
    if res.drift:
        d = res.drift
        out += ["", f"Drift ({d.method}, threshold {d.threshold}, window drifts at {d.drift_share:.0%} of features): "
                f"{d.share:.0%} drifted, {d.seconds:.1f} s; reference {res.reference_dataset} ({d.n_reference} images). "
                f"[Evidently report](drift.html)", "", "| feature | score | drifted |", "|---|---|---|"]
        for c, v in sorted(d.scores.items(), key=lambda kv: -kv[1]):
            out.append(f"| {c} | {v:.3f} | {'yes' if c in d.drifted_columns else ''} |")
    for a in res.alerts:
        out.append(f"\nAlert: {a['subject']} ({a['via']}{': ' + a['path'] if a.get('path') else ''})")
    for e in res.events:
        out.append(f"\nEvent: {e['event']} ({e['delivered']})")
    return "\n".join(out) + "\n"

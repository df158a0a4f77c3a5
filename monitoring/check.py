"""One monitoring check: the next window of logged production inputs against the rules.

  window   the next ``window.images`` images logged since the previous check (never half a request)
  input    input rules on per-image features and rejected requests  -> email on a breach
  predict  low-confidence share, accuracy against feedback labels     -> a breach
  drift    Evidently's tests on 20 features against the champion's training data: MNIST and its last
           labelled production batches; drift only when the window is unlike all of them
           -> a breach, HTML report
  estimate the window's accuracy from the champion's calibrated confidences (monitoring.estimate),
           before any feedback arrives                                  -> a rule on it
  decide   retrain when N of the last M windows breached, not while a retraining runs, not within
           the cooldown -> events ``mnistcl.drift.detected`` / ``mnistcl.confidence.low`` /
           ``mnistcl.accuracy.low`` (which the Prefect ``retrain`` deployment is triggered by)
           and an email

Every check writes check.json and check.md (and drift.html, the drift report against the nearest
reference with digits from the window, for a drifted window or as ``drift.report`` says) to the shared
storage under ``reports/checks/<time>/`` (a working copy stays in <home>/monitoring/checks/<time>/,
scratch on a pod); emails and Prefect artifacts link there (presigned HTTPS on S3) and carry the
content (the drift report attached, the check as markdown). The latest numbers go to <home>/monitoring/metrics.prom (Prometheus textfile format) and, when
``pushgateway_url`` is set, to that Prometheus Pushgateway (job ``mnistcl_monitor``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from mnistcl.datasets import DatasetError
from mnistcl.events import ACCURACY_LOW, CONFIDENCE_LOW, DRIFT_DETECTED, announce
from mnistcl.predlog import PredictionLog
from mnistcl.registry import RegistryError
from mnistcl.stores import stores
from monitoring import alerts
from monitoring.drift import DriftResult, check_drift, drift_report, severity
from monitoring.drift_html import write_report
from monitoring.estimate import Estimator, recalibrated
from monitoring.features import features
from monitoring.rules import (
    MonitoringConfig,
    RuleResult,
    evaluate_input_rules,
    evaluate_prediction_rules,
    load_config,
)
from monitoring.state import Decision, cooldown_from, decide, monitor_state, retrain_lease

REFERENCE_SEED = 7
REPORTS_PREFIX = "reports/checks"  # in the shared storage: one folder per check, named by its window's end
MIN_BATCH_IMAGES = 200  # a production batch smaller than this is too noisy to serve as a drift reference


@dataclass
class CheckResult:
    status: str                       # checked | waiting | skipped (another check took the window)
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
    estimate: dict | None = None      # label-free accuracy estimate of the window (monitoring.estimate)
    metrics_push: str | None = None   # the Pushgateway's answer ("ok" or the error), when one is set
    stored: str | None = None         # where the reports lie in the shared storage (reports/checks/<time>)
    links: dict[str, str] = field(default_factory=dict)  # report file -> an address a person can open

    def to_json(self) -> dict:
        d = asdict(self)
        if self.drift is not None:
            d["drift"] = {**asdict(self.drift), "score": self.drift.score}
        return d


@dataclass
class Reference:
    """One drift reference: features of a sample of one part of the champion's training data."""
    name: str              # the dataset version that holds the images
    frame: pd.DataFrame


def _cached_features(settings, key: str, images) -> pd.DataFrame:
    """Features of ``images()`` (a callable, only called on a miss), cached as CSV under ``key``."""
    cache = settings.monitoring_dir / "reference" / f"{key}.csv"
    if cache.exists():
        return pd.read_csv(cache)
    ref = features(images())
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    ref.to_csv(tmp, index=False)
    tmp.replace(cache)
    return ref


def _sample(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.sort(np.random.default_rng(REFERENCE_SEED).choice(len(x), size=n, replace=False))]


def reference_features(settings, cfg: MonitoringConfig) -> tuple[list[Reference], str]:
    """The drift references for the champion's dataset version: a fixed sample of its root (MNIST),
    then its last ``cfg.reference_batches`` labelled production batches, newest first (each one
    ``MIN_BATCH_IMAGES`` training images or more). Features are cached per version."""
    ds_store, reg = stores(settings)
    try:
        dataset = reg.get(reg.resolve("champion")).dataset
    except RegistryError:
        dataset = ds_store.resolve(None)
    lineage = ds_store.manifest(dataset).lineage
    n = cfg.reference_images
    batches = (v for v in reversed(lineage[1:])  # lazy: stop reading manifests once enough are found
               if sum(ds_store.manifest(v).counts.get("train", [])) >= MIN_BATCH_IMAGES)
    return [Reference(v, _cached_features(settings, f"{v}-train-{n}",
                                          lambda v=v: _sample(ds_store.load_own(v)["train"][0], n)))
            for v in [lineage[0], *islice(batches, cfg.reference_batches)]], dataset


def nearest_drift(references: list[Reference], current: pd.DataFrame, cfg: MonitoringConfig,
                  folder: Path | None = None, images: np.ndarray | None = None) -> DriftResult:
    """Drift of ``current`` against the references in order, stopping at the first it does not
    drift from: what the champion has learned is not drift. Returns the result against the
    nearest reference (fewest drifted features), with every comparison in ``extra``. With a
    ``folder``, the drift report against that nearest reference is written there as drift.html
    when ``cfg.drift.report`` asks for it (by default only for a drifted window), by this project
    (monitoring/drift_html.py, with digits from ``images``: milliseconds) or by Evidently
    (``cfg.drift.report_engine``: seconds)."""
    best, nearest, compared = None, None, {}
    for ref in references:
        d = check_drift(ref.frame, current, cfg.drift)
        d.extra["reference"] = ref.name
        compared[ref.name] = round(d.share, 4)
        if best is None or d.share < best.share:
            best, nearest = d, ref
        if not d.drifted:
            break
    best.extra["compared"] = compared
    policy = cfg.drift.report
    if folder is not None and (policy == "always" or (policy == "drifted" and best.drifted)):
        out = folder / "drift.html"
        if cfg.drift.report_engine == "evidently":
            drift_report(nearest.frame, current, cfg.drift, out)
        else:
            write_report(out, nearest.frame, current, best, reference_name=nearest.name, images=images)
        best.report_html = str(out)
    return best


def fitted_estimator(reg, version: str, method: str) -> Estimator | None:
    """The label-free accuracy estimator the gate fitted for ``version`` on its validation data
    (None for a model registered before the gate fitted one)."""
    mv = reg.get(version)
    fitted = ((mv.validation or {}).get("metrics") or {}).get("estimators") or {}
    return Estimator.from_json(fitted[method]) if method in fitted else None


def window_estimate(settings, cfg: MonitoringConfig, plog, probs: np.ndarray, versions: np.ndarray,
                    labels: np.ndarray, feats: pd.DataFrame, start: float) -> dict | None:
    """The window's accuracy estimated without its labels: each image through the estimator of
    the model version that answered it (a hot swap can split a window). The champion's estimator
    is refitted on its latest labelled traffic when this window does not drift from that traffic;
    a window of novel handwriting keeps the fit on the champion's validation data."""
    _, reg = stores(settings)
    try:
        champion = reg.resolve("champion")
        ests = {v: fitted_estimator(reg, v, cfg.estimate_method) for v in np.unique(versions)}
        champ_est = ests.get(champion) or fitted_estimator(reg, champion, cfg.estimate_method)
    except RegistryError:
        return None
    if champ_est is None:
        return None
    like_recent = None
    if cfg.recalibrate_images:
        rx, rp, ry = plog.recent_labelled(champion, before=start, limit=cfg.recalibrate_images)
        if len(ry) >= cfg.recalibrate_min:
            like_recent = not check_drift(features(rx), feats, cfg.drift).drifted
            if like_recent:
                champ_est = recalibrated(champ_est, rp, ry, cfg.recalibrate_min)
    ests[champion] = champ_est
    total = sum((ests[v] or champ_est).estimate(probs[versions == v]) * int((versions == v).sum())
                for v in np.unique(versions))
    labelled = labels >= 0
    return {"accuracy": float(total / len(versions)), "method": cfg.estimate_method, "model": champion,
            "models": sorted(str(v) for v in np.unique(versions)),
            "fitted_on": f"{champ_est.fitted_on} {'recent labelled' if champ_est.source == 'recent' else 'validation'} images",
            "like_recent_traffic": like_recent, "labelled": int(labelled.sum()),
            "labelled_accuracy": None}


def evaluate_window(cfg: MonitoringConfig, images: np.ndarray, confidence: np.ndarray, digits: np.ndarray,
                    feedback: np.ndarray, n_rejected: int, references: list[Reference],
                    folder: Path | None = None, estimated: float | None = None, feats: pd.DataFrame | None = None,
                    ) -> tuple[list[RuleResult], list[RuleResult], DriftResult, list[str]]:
    """The rules and the drift check on one window (no state, no side effects beyond the report);
    ``feats``: the window's features when the caller has them already."""
    feats = features(images) if feats is None else feats
    inp = evaluate_input_rules(cfg, feats, n_rejected)
    pred = evaluate_prediction_rules(cfg, confidence, digits, feedback, estimated)
    drift = nearest_drift(references, feats, cfg, folder, images)
    reasons = []
    if drift.drifted:
        reasons.append(f"drift: {len(drift.drifted_columns)} of {len(drift.scores)} features drifted "
                       f"({', '.join(drift.drifted_columns[:6])})")
    for r in pred + inp:
        if r.breached and r.action == "retrain":
            reasons.append(f"{r.name}: {r.share:.3f} against a limit of {r.limit}")
    return inp, pred, drift, reasons


def run_check(settings, cfg: MonitoringConfig | None = None, *, notify: bool = True) -> CheckResult:

    cfg = cfg or load_config(settings.monitoring_config or None)
    plog = PredictionLog(settings.predictions_db_path)
    state, lock = monitor_state(settings, plog), retrain_lease(settings)
    st0 = state.read()
    cursor, cursor_at = int(st0["cursor"]), float(st0.get("cursor_at") or 0.0)
    rows = plog.window(after=cursor, limit=cfg.window_images)
    if len(rows) < cfg.min_images:
        return CheckResult(status="waiting", n_images=len(rows),
                           reasons=[f"{len(rows)} new images since the last check; waiting for {cfg.min_images}"])
    start, end = rows[0][0], max(r[0] for r in rows)  # times: pods' clocks need not follow the numbers
    images = np.stack([np.frombuffer(bytes(r[4]), np.uint8).reshape(28, 28) for r in rows])
    digits = np.array([r[1] for r in rows])
    conf = np.array([r[2] for r in rows], dtype=np.float64)
    fb = np.array([r[3] for r in rows])
    n_rejected = plog.rejected_between(cursor_at, end)  # rejected payloads have no number: by time
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y%m%dT%H%M%S") + f"-{int(end * 1000) % 1000:03d}"
    folder = settings.monitoring_dir / "checks" / stamp
    references, dataset = reference_features(settings, cfg)
    feats = features(images)
    probs = np.array([json.loads(r[5]) for r in rows], dtype=np.float64)
    estimate = window_estimate(settings, cfg, plog, probs, np.array([r[6] for r in rows]), fb, feats, start)
    if estimate and estimate["labelled"]:
        labelled = fb >= 0
        estimate["labelled_accuracy"] = float((digits[labelled] == fb[labelled]).mean())
    inp, pred, drift, reasons = evaluate_window(cfg, images, conf, digits, fb, n_rejected, references, folder,
                                                estimate["accuracy"] if estimate else None, feats)
    res = CheckResult(status="checked", n_images=len(rows), window_start=start, window_end=end, input_rules=inp,
                      prediction_rules=pred, drift=drift, breach=bool(reasons), reasons=reasons,
                      folder=str(folder), reference_dataset=dataset, estimate=estimate)
    cut = data_cut_time(settings, dataset)
    running = lock.running()

    def record(st: dict) -> Decision | None:
        if int(st["cursor"]) != cursor:  # another check took this window first: it counts once
            return None
        st["cursor"], st["cursor_at"] = int(rows[-1][7]), end
        st["windows"].append({"end": end, "breach": res.breach, "reasons": reasons, "drift_share": drift.share,
                              "champion_data": dataset})
        now = time.time()
        decision = decide(live_breaches(st["windows"], dataset, cut), cfg.trigger, now=now,
                          last_retrain_started=cooldown_from(st, running=running), retrain_running=running,
                          drift_share=drift.share)
        if decision.retrain:
            st["last_trigger"] = now
            st["windows"][-1]["triggered"] = True
        return decision

    res.decision = state.update(record)
    if res.decision is None:
        return CheckResult(status="skipped", n_images=len(rows), window_start=start, window_end=end,
                           reasons=["another check recorded this window first"])
    storage, prefix = stores(settings)[0].storage, f"{REPORTS_PREFIX}/{stamp}"
    res.stored = storage.describe(prefix)
    names = ["check.md", "check.json"] + sorted(p.name for p in folder.glob("*.html"))
    res.links = {n: storage.link(f"{prefix}/{n}") for n in names}
    storage.put_folder(prefix, folder)  # the drift reports, before an email links to them
    if notify:
        _notify(settings, cfg, res)
    text = prometheus_text(res)
    _write_textfile(text, settings.monitoring_dir / "metrics.prom")
    if settings.pushgateway_url:
        res.metrics_push = push_metrics(settings.pushgateway_url, text, namespace=settings.k8s_namespace)
    _write(res, folder)
    for n in ("check.md", "check.json"):
        storage.put(f"{prefix}/{n}", (folder / n).read_bytes())
    return res


def live_breaches(windows: list[dict], champion_data: str, data_cut: float | None = None) -> list[bool]:
    """The breach history that may still trigger a retraining: windows after the last one that
    triggered (its breaches are spent), judged against the current champion's data or ending
    after that data was cut (``data_cut``, the time its dataset version was made).

    A new champion clears only the breaches its training data covers: one promoted from an older
    challenger (trained before the breaching windows) has not learned them, and waiting for a
    clean slate would cost a whole window of the new handwriting (measured in the scenario)."""
    last = max((i for i, w in enumerate(windows) if w.get("triggered")), default=-1)
    return [w["breach"] for w in windows[last + 1:]
            if w.get("champion_data", champion_data) == champion_data
            or (data_cut is not None and w.get("end", 0.0) > data_cut)]


def data_cut_time(settings, dataset: str) -> float | None:
    """When dataset version ``dataset`` was made (epoch seconds), or None when unknown."""
    ds_store, _ = stores(settings)
    try:
        return datetime.fromisoformat(ds_store.manifest(dataset).created).timestamp()
    except (DatasetError, ValueError):  # a missing or corrupt manifest: the old rule alone
        return None


def _notify(settings, cfg: MonitoringConfig, res: CheckResult) -> None:
    when = datetime.fromtimestamp(res.window_end, UTC).isoformat(timespec="seconds")
    input_breaches = [r for r in res.input_rules + res.prediction_rules if r.breached and r.action == "email"]
    if input_breaches:
        lines = [f"- {r.name} ({r.description}): {r.share:.1%} of {r.n} inputs, sensitivity {r.limit:.1%}"
                 for r in input_breaches]
        res.alerts.append(alerts.send(
            f"monitoring rules breached: {', '.join(r.name for r in input_breaches)}",
            f"Window of {res.n_images} production images ending {when}.\n\n" + "\n".join(lines)
            + f"\n\nCheck: {_where(res, 'check.md')}\n", settings))
    if res.decision and res.decision.retrain:
        payload = {"reasons": res.reasons, "window_end": res.window_end, "n_images": res.n_images,
                   "drift_share": res.drift.share if res.drift else None, "check": res.folder,
                   "strategy": cfg.trigger.strategy}
        names = []
        if res.drift and res.drift.drifted:
            names.append(DRIFT_DETECTED)
        if any(r.breached and r.name == "low_confidence" for r in res.prediction_rules):
            names.append(CONFIDENCE_LOW)
        if any(r.breached and r.name in ("feedback_accuracy", "estimated_accuracy") and r.action == "retrain"
               for r in res.prediction_rules):
            names.append(ACCURACY_LOW)
        # One retraining is enough: announce the first cause; the others ride in the payload.
        name = (names or [DRIFT_DETECTED])[0]
        res.events.append(announce(name, "mnistcl.monitor", {**payload, "causes": names},
                                   events_log=settings.events_log, prefect_api=settings.prefect_api))
        res.alerts.append(alerts.send(
            f"retraining triggered: {name}",
            f"{res.decision.reason}.\n\n" + "\n".join(f"- {r}" for r in res.reasons)
            + f"\n\nEvent {name} sent ({res.events[-1]['delivered']}); strategy {cfg.trigger.strategy}.\n"
            f"Check: {_where(res, 'check.md')}\n"
            f"Drift report (attached): {_where(res, Path(res.drift.report_html).name) if res.drift and res.drift.report_html else '-'}\n",
            settings,
            attachments=[Path(res.drift.report_html)] if res.drift and res.drift.report_html else None))


def _where(res: CheckResult, name: str) -> str:
    """A report file as an email names it: the link a person can open, and the stored object."""
    link = res.links.get(name)
    stored = f"{res.stored}/{name}" if res.stored else name
    return f"{link} ({stored})" if link and link != stored else stored


def _write(res: CheckResult, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "check.json").write_text(json.dumps(res.to_json(), indent=1, default=float))
    (folder / "check.md").write_text(to_markdown(res))


def prometheus_text(res: CheckResult) -> str:
    """The window's gauges in Prometheus text format (the textfile and the Pushgateway body)."""
    low = next((r.share for r in res.prediction_rules if r.name == "low_confidence"), 0.0)
    lines = ["# HELP mnistcl_drift_share Share of features that drifted in the last monitoring window.",
             "# TYPE mnistcl_drift_share gauge", f"mnistcl_drift_share {res.drift.share if res.drift else 0.0}",
             "# HELP mnistcl_window_low_confidence_share Share of low-confidence predictions in the last window.",
             "# TYPE mnistcl_window_low_confidence_share gauge", f"mnistcl_window_low_confidence_share {low}",
             "# HELP mnistcl_window_breach 1 when the last monitoring window breached a rule.",
             "# TYPE mnistcl_window_breach gauge", f"mnistcl_window_breach {int(res.breach)}",
             "# HELP mnistcl_monitor_last_check_timestamp_seconds When the last window ended.",
             "# TYPE mnistcl_monitor_last_check_timestamp_seconds gauge",
             f"mnistcl_monitor_last_check_timestamp_seconds {res.window_end}",
             "# HELP mnistcl_window_estimated_accuracy Label-free accuracy estimate of the last window.",
             "# TYPE mnistcl_window_estimated_accuracy gauge",
             *([f"mnistcl_window_estimated_accuracy {res.estimate['accuracy']}"] if res.estimate else []),
             "# HELP mnistcl_input_rule_share Share of the last window's inputs that an input rule matched.",
             "# TYPE mnistcl_input_rule_share gauge"]
    for r in res.input_rules:
        lines.append(f'mnistcl_input_rule_share{{rule="{r.name}"}} {r.share}')
    return "\n".join(lines) + "\n"


def _write_textfile(text: str, prom: Path) -> None:
    prom.parent.mkdir(parents=True, exist_ok=True)
    tmp = prom.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(prom)


PUSH_JOB = "mnistcl_monitor"


def push_metrics(url: str, text: str, timeout: float = 10.0, *, namespace: str = "") -> str:
    """Replace the ``mnistcl_monitor`` group on a Pushgateway with ``text``. On a cluster the monitor
    runs as a short Job that Prometheus cannot scrape; the Pushgateway keeps its last numbers. With
    ``namespace``, the group (and so every pushed series, the Pushgateway being scraped with
    honorLabels) carries that ``namespace`` label instead of the Pushgateway's own.
    Returns "ok" or the error: an unreachable Pushgateway never fails the check (the textfile, the
    events and the emails do not depend on it)."""
    import httpx

    try:
        group = f"/metrics/job/{PUSH_JOB}" + (f"/namespace/{namespace}" if namespace else "")
        r = httpx.put(f"{url}{group}", content=text.encode(), timeout=timeout,
                      headers={"Content-Type": "text/plain; version=0.0.4"})
    except httpx.HTTPError as exc:
        return f"Pushgateway {url} unreachable: {exc}"
    if r.status_code >= 300:
        return f"Pushgateway {url} refused the metrics: HTTP {r.status_code} {r.text.strip()[:300]}"
    return "ok"


def to_markdown(res: CheckResult) -> str:
    when = datetime.fromtimestamp(res.window_end or 0, UTC).isoformat(timespec="seconds")
    out = [f"# Monitoring check: {res.n_images} images ending {when}", "",
           f"**{'BREACH' if res.breach else 'ok'}**" + (f": {'; '.join(res.reasons)}" if res.reasons else ""), ""]
    if res.stored:
        out += [f"Stored: {res.stored}", ""]
    if res.metrics_push and res.metrics_push != "ok":
        out += [f"Metrics not pushed: {res.metrics_push}", ""]
    if res.decision:
        out += [f"Decision: {'retrain' if res.decision.retrain else 'no retraining'} ({res.decision.reason}).", ""]
    if res.estimate:
        e = res.estimate
        out += [f"Estimated accuracy (label-free, {e['method']} of {e['model']}, fitted on {e['fitted_on']}): "
                f"{e['accuracy']:.3f}" + (f"; on the {e['labelled']} images labelled so far: {e['labelled_accuracy']:.3f}"
                                          if e["labelled"] else "") + ".", ""]
    out += ["| rule | kind | share | limit | breached |", "|---|---|---|---|---|"]
    for r in res.input_rules + res.prediction_rules:
        out.append(f"| {r.name} | {r.kind} | {r.share:.4f} | {r.limit} | {'yes' if r.breached else 'no'} |")
    if res.drift:
        d = res.drift
        out += ["", f"Drift ({d.method}, threshold {d.threshold}, window drifts at {d.drift_share:.0%} of features): "
                f"{d.share:.0%} drifted, {d.seconds:.1f} s, against the nearest reference: "
                f"{d.extra.get('reference', '-')} ({d.n_reference} images) of the champion's data {res.reference_dataset}"
                f" (compared: {', '.join(f'{k} {v:.0%}' for k, v in d.extra.get('compared', {}).items())}). "
                + (f"[Drift report]({res.links.get('drift.html', 'drift.html')})" if d.report_html else
                   "No drift report for this window (drift.report in the monitoring configuration)."),
                "", "| feature | score | drifted |", "|---|---|---|"]
        for c, v in sorted(d.scores.items(), key=lambda kv: -severity(d.method, kv[1])):
            out.append(f"| {c} | {v:.3f} | {'yes' if c in d.drifted_columns else ''} |")
    for a in res.alerts:
        out.append(f"\nAlert: {a['subject']} ({a['via']}{': ' + a['path'] if a.get('path') else ''})")
    for e in res.events:
        out.append(f"\nEvent: {e['event']} ({e['delivered']})")
    return "\n".join(out) + "\n"
